import NIOCore

/// The bytes of an upgraded HTTP/1.1 connection (WebSocket), once the upstream answered 101: what one
/// side reads, the other writes. A side reads only while the other can write; a half-close passes
/// through, and either side closing closes both.
final class UpgradeTunnel: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var context: ChannelHandlerContext?
    /// The other channel's end; both are on one event loop.
    private var partner: UpgradeTunnel?
    private var readPending = false

    /// Two ends joined: one for the downstream channel, one for the upstream.
    static func pair() -> (downstream: UpgradeTunnel, upstream: UpgradeTunnel) {
        let downstream = UpgradeTunnel(), upstream = UpgradeTunnel()
        downstream.partner = upstream
        upstream.partner = downstream
        return (downstream, upstream)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.context?.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.context?.flush()
    }

    func read(context: ChannelHandlerContext) {
        if partner?.context?.channel.isWritable ?? true {
            context.read()
        } else {
            readPending = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, let partner, partner.readPending, let other = partner.context {
            partner.readPending = false
            other.read()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            partner?.context?.close(mode: .output, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let other = partner
        partner = nil
        other?.partner = nil
        other?.context?.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
