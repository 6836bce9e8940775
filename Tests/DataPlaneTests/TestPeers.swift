import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// An upstream on 127.0.0.1 for proxy tests: sends `tag` when the first bytes arrive, then echoes
/// everything. With TLS it requires a client certificate and records each client's SPIFFE ID and
/// certificate serial (read when the client's first bytes arrive).
final class TestEchoServer: Sendable {
    struct Seen: Sendable {
        var connections = 0
        var bytes = 0
        var clientIdentities: [String] = []
        var clientSerials: [[UInt8]] = []
    }

    let port: Int
    private let shared: Shared<Seen>
    private let channel: any Channel

    private init(port: Int, shared: Shared<Seen>, channel: any Channel) {
        self.port = port
        self.shared = shared
        self.channel = channel
    }

    var seen: Seen { shared.value.withLock { $0 } }

    static func start(group: any EventLoopGroup, tag: String, tls: NIOSSLContext? = nil) async throws -> TestEchoServer {
        let shared = Shared(Seen())
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.addHandler(EchoHandler(tag: tag, tls: tls != nil) { update in
                        shared.value.withLock { update(&$0) }
                    })
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return TestEchoServer(port: channel.localAddress!.port!, shared: shared, channel: channel)
    }

    func close() {
        channel.close(promise: nil)
    }

    private final class EchoHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        private let tag: String
        private let tls: Bool
        private let record: @Sendable ((inout Seen) -> Void) -> Void
        private var tagged = false

        init(tag: String, tls: Bool, record: @escaping @Sendable ((inout Seen) -> Void) -> Void) {
            self.tag = tag
            self.tls = tls
            self.record = record
        }

        func channelActive(context: ChannelHandlerContext) {
            record { $0.connections += 1 }
            context.fireChannelActive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            let count = buffer.readableBytes
            if !tagged {
                tagged = true
                let certificate = tls ? (try? context.pipeline.syncOperations.nioSSL_peerCertificate()) ?? nil : nil
                let identity = certificate.flatMap { certificate in
                    certificate._subjectAlternativeNames().first { $0.nameType == .uri }
                        .map { name in name.contents.withUnsafeBufferPointer { String(decoding: $0, as: UTF8.self) } }
                }
                let serial = certificate?.serialNumber
                record { seen in
                    if let identity { seen.clientIdentities.append(identity) }
                    if let serial { seen.clientSerials.append(serial) }
                }
                context.write(wrapOutboundOut(ByteBuffer(string: tag)), promise: nil)
            }
            record { $0.bytes += count }
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            // The client is done (TLS close_notify): as most servers, close.
            if let event = event as? ChannelEvent, event == .inputClosed { context.close(promise: nil) }
            context.fireUserInboundEventTriggered(event)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}

/// A client of the proxy under test: writes text, collects what comes back, notices when it is closed.
final class TestClient: Sendable {
    private struct State {
        var received: [UInt8] = []
        var closed = false
    }

    let channel: any Channel
    private let shared: Shared<State>

    private init(channel: any Channel, shared: Shared<State>) {
        self.channel = channel
        self.shared = shared
    }

    /// Connects to 127.0.0.1:`port`, over TLS when `tls` is given.
    static func connect(group: any EventLoopGroup, port: Int, tls: NIOSSLContext? = nil) async throws -> TestClient {
        let shared = Shared(State())
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: nil)) }
                    try channel.pipeline.syncOperations.addHandler(Collector { update in shared.value.withLock { update(&$0) } })
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return TestClient(channel: channel, shared: shared)
    }

    func send(_ text: String) async throws {
        try await channel.writeAndFlush(ByteBuffer(string: text))
    }

    /// What arrived once `count` bytes are there, the connection closed, or `seconds` passed.
    func read(_ count: Int, within seconds: Double = 5) async -> String {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            let (received, closed) = shared.value.withLock { ($0.received, $0.closed) }
            if received.count >= count || closed { break }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return String(decoding: shared.value.withLock { $0.received }, as: UTF8.self)
    }

    /// Forgets what arrived so far.
    func clear() {
        shared.value.withLock { $0.received = [] }
    }

    /// Whether the connection is closed within `seconds`.
    func closed(within seconds: Double = 5) async -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            if shared.value.withLock({ $0.closed }) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return shared.value.withLock { $0.closed }
    }

    func close() async {
        try? await channel.close()
    }

    private final class Collector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        private let record: @Sendable ((inout State) -> Void) -> Void

        init(record: @escaping @Sendable ((inout State) -> Void) -> Void) {
            self.record = record
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Array(unwrapInboundIn(data).readableBytesView)
            record { $0.received += bytes }
        }

        func channelInactive(context: ChannelHandlerContext) {
            record { $0.closed = true }
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it).
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw PortError() }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    guard bound == 0 else { throw PortError() }
    let named = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    guard named == 0 else { throw PortError() }
    return Int(UInt16(bigEndian: address.sin_port))
}

struct PortError: Error {}

/// A value behind a lock, shared by reference between a test and the channel handlers it made.
final class Shared<Value: Sendable>: Sendable {
    let value: Mutex<Value>

    init(_ value: Value) {
        self.value = Mutex(value)
    }
}
