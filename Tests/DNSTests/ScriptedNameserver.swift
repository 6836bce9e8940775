import DNS
import NIOCore
import NIOPosix

/// A nameserver on a loopback address that answers each query (UDP and TCP, same port) with what a test's
/// script says: a response to send, or nil to stay silent.
final class ScriptedNameserver: Sendable {
    typealias Script = @Sendable (_ query: DNSMessage, _ overTCP: Bool) -> DNSMessage?

    let udp: any Channel
    let tcp: any Channel
    let host: String
    let port: Int

    init(host: String = "127.0.0.1", port: Int = 0, script: @escaping Script) async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        udp = try await DatagramBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(UDPHandler(script: script)) }
            }
            .bind(host: host, port: port).get()
        let bound = udp.localAddress!.port!
        tcp = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(DNSTCPFrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(TCPHandler(script: script))
                }
            }
            .bind(host: host, port: bound).get()
        self.host = host
        self.port = bound
    }

    func close() async {
        try? await udp.close()
        try? await tcp.close()
    }

    static func reply(_ query: DNSMessage, code: DNSResponseCode = .noError, truncated: Bool = false,
                      answers: [DNSResourceRecord] = []) -> DNSMessage {
        var header = query.header
        header.isResponse = true
        header.recursionAvailable = true
        header.isTruncated = truncated
        header.responseCode = code
        return DNSMessage(header: header, questions: query.questions, answers: answers)
    }

    private final class UDPHandler: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        typealias OutboundOut = AddressedEnvelope<ByteBuffer>
        let script: Script
        init(script: @escaping Script) { self.script = script }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = Self.unwrapInboundIn(data)
            guard let query = try? DNSMessage(decoding: Array(envelope.data.readableBytesView)),
                  let response = script(query, false), let bytes = try? response.encoded() else { return }
            context.writeAndFlush(Self.wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress,
                                                                        data: ByteBuffer(bytes: bytes))), promise: nil)
        }
    }

    private final class TCPHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let script: Script
        init(script: @escaping Script) { self.script = script }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let payload = Self.unwrapInboundIn(data)
            guard let query = try? DNSMessage(decoding: Array(payload.readableBytesView)),
                  let response = script(query, true), let bytes = try? response.encoded() else { return }
            var framed = ByteBuffer()
            framed.writeDNSTCPFrame(ByteBuffer(bytes: bytes))
            context.writeAndFlush(Self.wrapOutboundOut(framed), promise: nil)
        }
    }
}
