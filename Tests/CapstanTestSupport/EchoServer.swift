// Glibc's socket types are also reached through CMNL's headers; which module a whole-module build
// credits them to varies, so import both.
import CMNL
import NIOCore
import NIOPosix
import Netfilter
#if canImport(Glibc)
import Glibc
#endif

/// A TCP server inside a sandbox namespace that first sends `peer=ADDRESS local=ADDRESS:PORT\n` (the
/// client address it sees, and the address it was reached at) and then echoes everything back; it
/// closes when the client has half-closed and everything is echoed.
///
/// Its listening socket is made inside the namespace; SwiftNIO serves it from any thread.
public final class EchoServer: @unchecked Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let channel: Channel

    public init(in namespace: NetworkNamespace, port: UInt16) throws {
        let descriptor = try namespace.run { () throws -> Int32 in
            let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw SandboxError("socket: \(errno)") }
            var off: Int32 = 0, on: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &off, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
            guard Netfilter.SocketAddress(IPAddress("::")!, port).withSockAddr({ bind(fd, $0, $1) }) == 0 else {
                close(fd)
                throw SandboxError("bind [::]:\(port): \(errno)")
            }
            return fd
        }
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        channel = try ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(EchoHandler())
                }
            }
            .withBoundSocket(descriptor)
            .wait()
    }

    deinit {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }
}

private final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelActive(context: ChannelHandlerContext) {
        func text(_ address: String?) -> String {
            let address = address ?? "?"
            return address.hasPrefix("::ffff:") ? String(address.dropFirst(7)) : address
        }
        let peer = text(context.channel.remoteAddress?.ipAddress)
        let local = "\(text(context.channel.localAddress?.ipAddress)):\(context.channel.localAddress?.port ?? 0)"
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: "peer=\(peer) local=\(local)\n")), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            // Closing the output of a channel whose input is shut closes it fully, dropping queued
            // writes; an empty write completes after them, so close then.
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
