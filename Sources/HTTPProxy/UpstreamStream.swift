import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// The downstream side of one request, told what the upstream answers.
protocol UpstreamResponseReceiver: AnyObject {
    func upstreamResponse(_ part: HTTPResponsePart)
    /// The parts read so far can be flushed downstream.
    func upstreamReadComplete()
    /// The upstream connection or stream ended before the response did.
    func upstreamFailed()
    /// The upstream can take more of the request body (or not, for now).
    func upstreamWritabilityChanged(_ writable: Bool)
}

/// Where one request goes upstream: an HTTP/1.1 connection (one request at a time) or one HTTP/2 stream.
/// Request parts are written to ``channel``; response parts come back to the receiver through the
/// ``UpstreamResponseForwarder`` at its end.
final class UpstreamStream {
    let channel: Channel
    let forwarder: UpstreamResponseForwarder
    /// Gives an HTTP/1.1 connection back to its pool once the exchange is over.
    private let release: ((UpstreamStream) -> Void)?
    /// Requests this connection has carried, and how many it may (the cluster's max_requests_per_connection).
    private var requests = 0
    private let maxRequests: Int?
    /// Closes the connection once it has been idle in its pool for the cluster's idle_timeout. One timer
    /// serves many exchanges: when it fires early (the connection was used since), it waits again for
    /// the rest, rather than being cancelled and scheduled anew around every request.
    private var idleClose: Scheduled<Void>?
    /// Since when the connection waits in its pool; nil while it carries a request.
    private var idleSince: NIODeadline?

    init(channel: Channel, forwarder: UpstreamResponseForwarder, maxRequests: Int? = nil, release: ((UpstreamStream) -> Void)?) {
        self.channel = channel
        self.forwarder = forwarder
        self.maxRequests = maxRequests
        self.release = release
    }

    /// A request starts on this stream: its response parts go to `receiver`.
    func attach(_ receiver: UpstreamResponseReceiver) {
        idleSince = nil
        requests += 1
        forwarder.receiver = receiver
    }

    /// The connection went back to its pool: closed if it stays unused for `timeout`.
    func closeWhenIdle(for timeout: TimeAmount) {
        let loop = channel.eventLoop
        idleSince = loop.now
        if idleClose == nil { scheduleIdleClose(in: timeout, total: timeout) }
    }

    private func scheduleIdleClose(in delay: TimeAmount, total: TimeAmount) {
        idleClose = channel.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            idleClose = nil
            // In use: the next return to the pool arms it again.
            guard let idleSince else { return }
            let idle = channel.eventLoop.now - idleSince
            if idle >= total {
                channel.close(promise: nil)
            } else {
                scheduleIdleClose(in: total - idle, total: total)
            }
        }
    }

    /// The connection closed: its idle timer goes with it.
    func closed() {
        idleClose?.cancel()
        idleClose = nil
    }

    /// The exchange is over. A connection that can carry another request goes back to its pool; one
    /// that cannot (its response asked to close, either side ended early, or it carried its maximum) is
    /// closed.
    func finish(reusable: Bool) {
        forwarder.receiver = nil
        forwarder.resumeReading()
        if reusable, requests < maxRequests ?? .max, let release, channel.isActive {
            release(self)
        } else {
            channel.close(promise: nil)
        }
    }
}

/// The last handler of an upstream connection or stream: hands response parts to whoever waits for
/// them, and holds reads while the downstream cannot take more.
final class UpstreamResponseForwarder: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPResponsePart
    typealias OutboundIn = HTTPRequestPart
    typealias OutboundOut = HTTPRequestPart

    /// Strong, not weak (a weak reference moves its object's reference counting to a slow path): the
    /// exchange's end (``UpstreamStream/finish(reusable:)``, or this connection's failure) clears it.
    var receiver: UpstreamResponseReceiver?
    private var context: ChannelHandlerContext?
    private var readsHeld = false
    private var readPending = false
    /// Set when the response asked to close the connection (HTTP/1.1 `connection: close`, HTTP/1.0).
    private(set) var closesAfterResponse = false

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if case .head(let head) = part, let connection = head.headerFields[.connection], ForwardedHeaders.asksToClose(connection) {
            closesAfterResponse = true
        }
        receiver?.upstreamResponse(part)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        receiver?.upstreamReadComplete()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        let receiver = self.receiver
        self.receiver = nil
        receiver?.upstreamFailed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let receiver = self.receiver
        self.receiver = nil
        receiver?.upstreamFailed()
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        receiver?.upstreamWritabilityChanged(context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if readsHeld { readPending = true } else { context.read() }
    }

    /// Stops reading the response while the downstream is not writable.
    func holdReading() { readsHeld = true }

    func resumeReading() {
        readsHeld = false
        if readPending, let context {
            readPending = false
            context.read()
        }
    }

    func prepareForNextExchange() { closesAfterResponse = false }
}
