import Atomics
import NIOCore
import NIOPosix
import Synchronization

/// The agent's DNS proxy (pilot-agent's, with `ISTIO_META_DNS_CAPTURE`): UDP and TCP on 127.0.0.1:15053,
/// where `capstan init --redirect-dns` sends the application's DNS. Names of the control plane's table are
/// answered at once; everything else goes to the resolv.conf nameservers through `StubResolver.exchange`,
/// bytes unchanged (EDNS included). Handlers are synchronous; the table is read from an atomic reference,
/// never under a lock.
public final class DNSProxyServer: Sendable {
    private final class TableBox: AtomicReference, Sendable {
        let table: DNSNameTable
        init(_ table: DNSNameTable) { self.table = table }
    }

    private let table = ManagedAtomic<TableBox?>(nil)
    private let resolver: StubResolver
    private let group: any EventLoopGroup
    /// The bound listeners, touched at start and stop only, never per query.
    private let bound = Mutex<[any Channel]>([])

    public init(resolver: StubResolver, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.resolver = resolver
        self.group = group
    }

    /// Puts a new name table in force for the next query.
    public func update(_ nameTable: DNSNameTable) {
        table.store(TableBox(nameTable), ordering: .releasing)
    }

    /// The table in force, if the control plane sent one.
    public var nameTable: DNSNameTable? { table.load(ordering: .acquiring)?.table }

    /// Binds UDP and TCP on `host`:`port` (port 0 picks one, the same for both); returns the port.
    @discardableResult
    public func start(host: String = "127.0.0.1", port: Int = 15053) async throws -> Int {
        // Up to 32 datagrams per read (recvmmsg), answers flushed together at the end of the read (sendmmsg).
        let udp = try await DatagramBootstrap(group: group)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(.datagramVectorReadMessageCount, value: 32)
            .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 32 * 2048))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(UDPHandler(server: self))
                }
            }
            .bind(host: host, port: port).get()
        let chosen = udp.localAddress?.port ?? port
        let tcp: any Channel
        do {
            tcp = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(DNSTCPFrameDecoder()))
                        try channel.pipeline.syncOperations.addHandler(TCPHandler(server: self))
                    }
                }
                .bind(host: host, port: chosen).get()
        } catch {
            try? await udp.close()
            throw error
        }
        bound.withLock { $0 += [udp, tcp] }
        return chosen
    }

    /// Closes the listeners.
    public func stop() async {
        let channels = bound.withLock { list in
            defer { list = [] }
            return list
        }
        for channel in channels { try? await channel.close() }
    }

    fileprivate func decide(_ query: ByteBuffer, overTCP: Bool) -> DNSProxyDecision {
        let current = table.load(ordering: .acquiring)?.table
        return query.withUnsafeReadableBytes { DNSProxyResponder.respond(to: $0, table: current, overTCP: overTCP) }
    }

    fileprivate func forward(_ query: ByteBuffer, overTCP: Bool, limit: Int, on eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer> {
        resolver.exchange(query, overTCP: overTCP, on: eventLoop).map { response in
            guard let cut = response.withUnsafeReadableBytes({ DNSProxyResponder.fit($0, limit: limit) }) else { return response }
            return ByteBuffer(bytes: cut)
        }.flatMapErrorThrowing { _ in
            guard let failure = query.withUnsafeReadableBytes({ DNSProxyResponder.serverFailure(for: $0) }) else {
                throw DNSExchangeError.noNameservers
            }
            return ByteBuffer(bytes: failure)
        }
    }

    private final class UDPHandler: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        typealias OutboundOut = AddressedEnvelope<ByteBuffer>
        let server: DNSProxyServer
        init(server: DNSProxyServer) { self.server = server }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = Self.unwrapInboundIn(data)
            switch server.decide(envelope.data, overTCP: false) {
            case .drop:
                return
            case .answer(let bytes):
                var buffer = context.channel.allocator.buffer(capacity: bytes.count)
                buffer.writeBytes(bytes)
                context.write(Self.wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: buffer)), promise: nil)
            case .forward(let limit):
                let channel = context.channel
                let client = envelope.remoteAddress
                server.forward(envelope.data, overTCP: false, limit: limit, on: context.eventLoop).whenSuccess { response in
                    channel.writeAndFlush(AddressedEnvelope(remoteAddress: client, data: response), promise: nil)
                }
            }
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            context.flush()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            // A UDP socket reports ICMP errors for earlier answers; the listener carries on.
        }
    }

    private final class TCPHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let server: DNSProxyServer
        init(server: DNSProxyServer) { self.server = server }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let query = Self.unwrapInboundIn(data)
            switch server.decide(query, overTCP: true) {
            case .drop:
                context.close(promise: nil)
            case .answer(let bytes):
                var buffer = context.channel.allocator.buffer(capacity: bytes.count + 2)
                buffer.writeInteger(UInt16(bytes.count))
                buffer.writeBytes(bytes)
                context.writeAndFlush(Self.wrapOutboundOut(buffer), promise: nil)
            case .forward(let limit):
                let channel = context.channel
                server.forward(query, overTCP: true, limit: limit, on: context.eventLoop).whenSuccess { response in
                    var framed = channel.allocator.buffer(capacity: response.readableBytes + 2)
                    framed.writeDNSTCPFrame(response)
                    channel.writeAndFlush(framed, promise: nil)
                }
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
