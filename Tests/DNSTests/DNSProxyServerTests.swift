import DNS
import NIOCore
import NIOPosix
import Testing

/// The proxy over real sockets on loopback: table answers, forwarding to an upstream (EDNS passed
/// through), truncated upstream answers over UDP, TCP clients.
@Suite struct DNSProxyServerTests {
    static func name(_ text: String) -> DNSName { try! DNSName(text) }

    /// Sends `query` to the proxy over UDP and returns the response.
    static func ask(_ query: DNSMessage, port: Int) async throws -> DNSMessage {
        let bytes = try query.encoded()
        let promise = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: ByteBuffer.self)
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Collector(promise: promise)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { channel.close(promise: nil) }
        try await channel.writeAndFlush(AddressedEnvelope(remoteAddress: try SocketAddress(ipAddress: "127.0.0.1", port: port),
                                                          data: ByteBuffer(bytes: bytes)))
        let response = try await promise.futureResult.get()
        return try DNSMessage(decoding: Array(response.readableBytesView))
    }

    final class Collector: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let promise: EventLoopPromise<ByteBuffer>
        init(promise: EventLoopPromise<ByteBuffer>) { self.promise = promise }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { promise.succeed(Self.unwrapInboundIn(data).data) }
    }

    @Test func answersFromTheTableAndForwardsTheRest() async throws {
        let many = (1...80).map { DNSResourceRecord(name: Self.name("big.outside.example"), ttl: 60, data: .a(.ipv4(0xC000_0200 + UInt32($0)))) }
        let upstream = try await ScriptedNameserver { query, overTCP in
            let question = query.questions[0]
            if question.name == Self.name("big.outside.example") {
                return overTCP ? ScriptedNameserver.reply(query, answers: many) : ScriptedNameserver.reply(query, truncated: true)
            }
            // Echo the client's EDNS size back in a TXT-free way: the answer's TTL carries it.
            let size = UInt32(query.optRecord?.recordClass.rawValue ?? 0)
            return ScriptedNameserver.reply(query, answers: [DNSResourceRecord(name: question.name, ttl: size, data: .a(HostAddress("192.0.2.10")!))])
        }
        let resolver = StubResolver(configuration: ResolverConfiguration(nameservers: [HostAddress("127.0.0.1")!], port: upstream.port,
                                                                         timeout: .milliseconds(500)))
        let proxy = DNSProxyServer(resolver: resolver)
        let port = try await proxy.start(host: "127.0.0.1", port: 0)
        defer { Task { await proxy.stop(); await upstream.close() } }

        // Before the first table: SERVFAIL.
        #expect(try await Self.ask(.query(id: 1, name: Self.name("payments"), type: .a), port: port).header.responseCode == .serverFailure)

        proxy.update(DNSNameTableTests.table)
        let mesh = try await Self.ask(.query(id: 2, name: Self.name("payments"), type: .a), port: port)
        #expect(mesh.answers.map(\.data) == [.a(HostAddress("198.51.100.200")!)])

        let outside = try await Self.ask(.query(id: 3, name: Self.name("www.outside.example"), type: .a, udpPayloadSize: 3333), port: port)
        #expect(outside.header.id == 3)
        #expect(outside.answers.map(\.ttl) == [3333], "the client's EDNS record reaches the upstream")

        // The upstream's UDP answer is truncated; the TCP answer (80 records) does not fit 512 bytes: TC to the client.
        let small = try await Self.ask(.query(id: 4, name: Self.name("big.outside.example"), type: .a, udpPayloadSize: nil), port: port)
        #expect(small.header.isTruncated)
        // With a large EDNS size the whole TCP answer is passed on over UDP.
        let large = try await Self.ask(.query(id: 5, name: Self.name("big.outside.example"), type: .a, udpPayloadSize: 4096), port: port)
        #expect(!large.header.isTruncated)
        #expect(large.answers.count == 80)
    }
}
