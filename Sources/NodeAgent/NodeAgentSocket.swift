import NIOCore
import NIOPosix
import Netfilter
#if canImport(Glibc)
import Glibc
#endif

/// The node agent's unix socket, where the CNI plugin and `capstan status --node` send requests:
/// one JSON line in, one JSON line out. The socket is 0600 in a 0700 directory: root's only.
public enum NodeAgentSocket {
    public static func bind(path: String, agent: NodeAgent, group: any EventLoopGroup) async throws -> any Channel {
        let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        if !directory.isEmpty { try SystemFile.makeDirectory(directory, mode: 0o700) }
        let channel = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AgentRequestHandler(agent: agent))
                }
            }
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true)
            .get()
        chmod(path, 0o600)
        return channel
    }
}

/// Reads one request line, answers it and closes.
final class AgentRequestHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// A request is a pod attachment: a few hundred bytes. Anything this long is not one.
    private static let maximumRequestSize = 64 * 1024

    private let agent: NodeAgent
    private var received: [UInt8] = []
    private var answered = false

    init(agent: NodeAgent) {
        self.agent = agent
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        var buffer = unwrapInboundIn(data)
        received += buffer.readBytes(length: buffer.readableBytes) ?? []
        if let end = received.firstIndex(of: UInt8(ascii: "\n")) {
            answer(Array(received[..<end]), context: context)
        } else if received.count > Self.maximumRequestSize {
            reply(.failure("request longer than \(Self.maximumRequestSize) bytes"), context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        answered = true
        context.fireChannelInactive()
    }

    private func answer(_ line: [UInt8], context: ChannelHandlerContext) {
        answered = true
        let request: AgentRequest
        do {
            request = try AgentWire.decode(AgentRequest.self, from: line)
        } catch {
            reply(.failure("not a node agent request: \(error)"), context: context)
            return
        }
        let agent = self.agent
        let promise = context.eventLoop.makePromise(of: AgentReply.self)
        promise.completeWithTask { await agent.handle(request) }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        promise.futureResult.whenSuccess { reply in
            let (handler, context) = bound.value
            handler.reply(reply, context: context)
        }
    }

    private func reply(_ reply: AgentReply, context: ChannelHandlerContext) {
        answered = true
        let bytes = AgentWire.encode(reply)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes))).whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
