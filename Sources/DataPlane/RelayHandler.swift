import NIOCore
import NIOSSL

/// Joins two channels byte for byte: what one reads, the other writes.
///
/// Backpressure: a side only reads while its partner is writable, so nothing is buffered beyond one
/// read. Half-close: end of input on one side shuts down the other side's output, and the pair closes
/// fully once both directions are done. Both channels live on the same event loop, so the partners
/// call each other directly.
final class RelayHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: RelayHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var inputClosed = false
    /// Reads since the idle check last looked (shared by both sides through the downstream handler).
    private var reads = 0
    private var idleCheck: Scheduled<Void>?
    /// Counts the bytes this side reads (toward the partner).
    private let bytesRead: Counter

    private init(bytesRead: Counter) {
        self.bytesRead = bytesRead
    }

    /// Two handlers that relay to each other: one for the downstream channel, one for the upstream.
    static func pair(downstreamBytes: Counter, upstreamBytes: Counter) -> (downstream: RelayHandler, upstream: RelayHandler) {
        let downstream = RelayHandler(bytesRead: downstreamBytes)
        let upstream = RelayHandler(bytesRead: upstreamBytes)
        downstream.partner = upstream
        upstream.partner = downstream
        return (downstream, upstream)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // The partner may have been asked to read before this side existed, and deferred it: it can
        // read now that there is somewhere to write.
        if context.channel.isWritable { partner?.partnerBecameWritable() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        self.context = nil
        self.partner = nil
    }

    /// Closes the pair when neither side read anything for `timeout` (tcp_proxy's idle timeout). A
    /// timer per connection instead of a handler on every read keeps the byte path short.
    func closeWhenIdle(for timeout: TimeAmount) {
        guard let context else { return }
        idleCheck = context.eventLoop.scheduleTask(in: timeout) { [self] in
            let activity = reads + (partner?.reads ?? 0)
            reads = 0
            partner?.reads = 0
            if activity == 0 {
                context.close(promise: nil)
            } else {
                closeWhenIdle(for: timeout)
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        reads &+= 1
        bytesRead.increment(by: UInt64(buffer.readableBytes))
        partner?.write(buffer)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.close(mode: .all)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputClosed = true
            if partner?.inputClosed == true {
                // Both directions are done: each side closes once what it still has to write is out.
                close(mode: .all)
                partner?.close(mode: .all)
            } else {
                partner?.close(mode: .output)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A TLS peer that ends without close_notify: the end of its input follows, a half-close like any other.
        if case NIOSSLError.uncleanShutdown = error { return }
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if partner?.isWritable ?? false {
            context.read()
        } else {
            pendingRead = true
        }
    }

    // MARK: Called by the partner

    private var isWritable: Bool { context?.channel.isWritable ?? false }

    private func write(_ buffer: ByteBuffer) {
        context?.write(wrapOutboundOut(buffer), promise: nil)
    }

    private func flush() {
        context?.flush()
    }

    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    /// Closes after the writes already queued have gone out (an empty write completes after them).
    private func close(mode: CloseMode) {
        guard let context else { return }
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).whenComplete { _ in
            context.close(mode: mode, promise: nil)
        }
    }
}
