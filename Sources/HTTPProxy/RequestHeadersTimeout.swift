import NIOCore
import NIOHTTP1

/// Envoy's `request_headers_timeout` on an HTTP/1 connection: from the first byte of a request's head
/// until the head is whole. A head that takes longer (a slow-loris client) is answered `408`
/// `request header timeout`, as Envoy answers it, and the connection closes.
///
/// Two handlers share it: ``ByteWatcher`` before the HTTP/1 decoder sees the bytes that start a head,
/// ``HeadWatcher`` after it sees the head complete and the request end. Both run on the connection's
/// event loop.
final class RequestHeadersTimeout {
    private let limit: TimeAmount
    private let serverName: String
    private let expired: () -> Void
    /// Between requests: the next byte starts a head.
    private var awaitingHead = true
    private var timer: Scheduled<Void>?

    /// `expired` runs when a head took too long (for `downstream_rq_header_timeout`).
    init(limit: TimeAmount, serverName: String, expired: @escaping () -> Void) {
        self.limit = limit
        self.serverName = serverName
        self.expired = expired
    }

    var byteWatcher: ByteWatcher { ByteWatcher(timeout: self) }
    var headWatcher: HeadWatcher { HeadWatcher(timeout: self) }

    /// Before the decoder: bytes arriving between requests start the clock.
    final class ByteWatcher: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        typealias InboundOut = ByteBuffer
        private let timeout: RequestHeadersTimeout

        fileprivate init(timeout: RequestHeadersTimeout) { self.timeout = timeout }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if timeout.awaitingHead, timeout.timer == nil, unwrapInboundIn(data).readableBytes > 0 { timeout.arm(context) }
            context.fireChannelRead(data)
        }

        func channelInactive(context: ChannelHandlerContext) {
            timeout.disarm()
            context.fireChannelInactive()
        }

        func handlerRemoved(context: ChannelHandlerContext) {
            // An upgrade (WebSocket) takes the connection over: no more heads.
            timeout.disarm()
            timeout.awaitingHead = false
        }
    }

    /// After the decoder: a whole head stops the clock; the end of a request waits for the next head.
    final class HeadWatcher: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias InboundOut = HTTPServerRequestPart
        private let timeout: RequestHeadersTimeout

        fileprivate init(timeout: RequestHeadersTimeout) { self.timeout = timeout }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head:
                timeout.awaitingHead = false
                timeout.disarm()
            case .end:
                timeout.awaitingHead = true
            case .body:
                break
            }
            context.fireChannelRead(data)
        }
    }

    private func arm(_ context: ChannelHandlerContext) {
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: limit) { [self] in
            timer = nil
            guard awaitingHead, context.channel.isActive else { return }
            awaitingHead = false
            expired()
            // Written below the decoder and the encoder: no request exists to answer through them.
            let body = "request header timeout"
            let response = "HTTP/1.1 408 Request Timeout\r\ncontent-length: \(body.utf8.count)\r\ncontent-type: text/plain\r\n"
                + "server: \(serverName)\r\nconnection: close\r\n\r\n\(body)"
            context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: response))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }

    private func disarm() {
        timer?.cancel()
        timer = nil
    }
}
