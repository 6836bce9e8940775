import NIOCore
import NIOHTTP2
import NIOHTTPTypesHTTP2

/// One HTTP/2 connection to an endpoint, shared by the requests to it, as Envoy's HTTP/2 pool keeps it:
/// it closes after the cluster's `idle_timeout` without a stream, and once it has carried
/// `max_requests_per_connection` streams it takes no more (a new connection serves the next request) and
/// closes when its last stream ends. Used on its pool's event loop only.
final class UpstreamHTTP2Connection {
    let channel: Channel
    private let multiplexer: NIOHTTP2Handler.StreamMultiplexer
    private let maxStreams: Int?
    private let idleTimeout: TimeAmount?
    private var opened = 0
    private var active = 0
    /// Takes no new stream; closes when the last one ends.
    private var retiring = false
    /// Since when no stream is open; nil while one is.
    private var idleSince: NIODeadline?
    private var idleTimer: Scheduled<Void>?

    init(channel: Channel, multiplexer: NIOHTTP2Handler.StreamMultiplexer, maxStreams: Int?, idleTimeout: TimeAmount?) {
        self.channel = channel
        self.multiplexer = multiplexer
        self.maxStreams = maxStreams
        self.idleTimeout = idleTimeout
        streamEnded(opened: false)
    }

    /// Whether the next request may open a stream here.
    var acceptsStreams: Bool { !retiring && channel.isActive }

    /// A new stream, with the response forwarder at the end of its pipeline.
    func openStream() -> EventLoopFuture<UpstreamStream> {
        opened += 1
        active += 1
        idleSince = nil
        if let maxStreams, opened >= maxStreams { retiring = true }
        return multiplexer.createStreamChannel { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandlers(HTTP2FramePayloadToHTTPClientCodec(), UpstreamResponseForwarder())
            }
        }.assumeIsolated().flatMapThrowing { [self] stream in
            stream.closeFuture.assumeIsolated().whenComplete { _ in self.streamEnded(opened: true) }
            let forwarder = try stream.pipeline.syncOperations.handler(type: UpstreamResponseForwarder.self)
            return UpstreamStream(channel: stream, forwarder: forwarder, release: nil)
        }.nonisolated().always { [self] result in
            if case .failure = result { channel.eventLoop.assumeIsolated().execute { self.streamEnded(opened: true) } }
        }
    }

    /// The pool lets it go (its cluster was replaced): its streams in flight finish, then it closes.
    func retire() {
        retiring = true
        if active == 0 { channel.close(promise: nil) }
    }

    private func streamEnded(opened: Bool) {
        if opened { active -= 1 }
        guard active == 0 else { return }
        if retiring { return channel.close(promise: nil) }
        guard let idleTimeout else { return }
        idleSince = channel.eventLoop.now
        if idleTimer == nil { scheduleIdleClose(in: idleTimeout, total: idleTimeout) }
    }

    private func scheduleIdleClose(in delay: TimeAmount, total: TimeAmount) {
        idleTimer = channel.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            idleTimer = nil
            guard let idleSince else { return }  // in use: armed again when its streams end
            let idle = channel.eventLoop.now - idleSince
            if idle >= total { channel.close(promise: nil) } else { scheduleIdleClose(in: total - idle, total: total) }
        }
    }

    /// The connection closed: its timer goes with it.
    func closed() {
        idleTimer?.cancel()
        idleTimer = nil
    }
}
