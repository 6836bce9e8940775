import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOHTTPTypesHTTP2

/// One downstream connection served by a connection manager: what its streams share on the connection's
/// event loop. It keeps the configuration in force as last read, so a request reads it again only when it
/// changed.
final class HTTPConnection: @unchecked Sendable {
    // @unchecked: used on the connection's event loop only (HTTP/2's stream initializer is `@Sendable`).
    let manager: HTTPConnectionManager
    /// The ALPN upstream TLS offers per HTTP version (`istio.alpn`), found once.
    let upstreamALPN: (http1: [String]?, http2: [String]?)
    private var snapshot: (generation: Int, routing: any HTTPRoutingSnapshot)?

    init(manager: HTTPConnectionManager) {
        self.manager = manager
        upstreamALPN = (manager.config.upstreamALPN(for: .http1), manager.config.upstreamALPN(for: .http2))
    }

    var config: HTTPConnectionManagerConfig { manager.config }
    var downstream: DownstreamConnectionInfo { manager.downstream }
    var pools: UpstreamPools { manager.pools }
    var observer: (any HTTPStreamObserver)? { manager.observer }

    /// The configuration in force for the request starting now.
    func routing() -> any HTTPRoutingSnapshot {
        let generation = manager.routing.routingGeneration
        if let snapshot, snapshot.generation == generation { return snapshot.routing }
        let routing = manager.routing.routingSnapshot()
        snapshot = (generation, routing)
        return routing
    }

    func configureHTTP1(_ pipeline: ChannelPipeline.SynchronousOperations, after: (any ChannelHandler)? = nil) throws {
        let adapter = HTTP1ServerAdapter(secure: downstream.isTLS,
                                         limits: RequestLimits(maxHeaderBytes: config.maxRequestHeadersBytes, maxHeaderCount: config.maxHeadersCount),
                                         idleTimeout: config.connectionIdleTimeout.map { TimeAmount($0) })
        // request_headers_timeout: watchers before and after the decoder, when set.
        let headersTimeout = config.requestHeadersTimeout.map { limit in
            RequestHeadersTimeout(limit: TimeAmount(limit), serverName: config.serverName) { [observer] in observer?.requestHeadersTimedOut() }
        }
        var handlers: [any ChannelHandler] = []
        if let headersTimeout { handlers.append(headersTimeout.byteWatcher) }
        // Bytes past an upgrade request go on to the tunnel when the decoder leaves (WebSocket).
        handlers.append(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        if let headersTimeout { handlers.append(headersTimeout.headWatcher) }
        handlers.append(HTTPResponseEncoder())
        // Pipelined requests one at a time; closes once idle on drain (ChannelShouldQuiesceEvent) or
        // after idle_timeout without a request.
        handlers.append(adapter)
        handlers.append(HTTPStreamHandler(connection: self, checksHeaderLimits: false, requestProtocol: { adapter.requestProtocol }))
        try pipeline.addHandlers(handlers, position: after.map { .after($0) } ?? .last)
    }

    func configureHTTP2(_ pipeline: ChannelPipeline.SynchronousOperations, after: (any ChannelHandler)? = nil) throws {
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: config.maxConcurrentStreams),
            HTTP2Setting(parameter: .maxHeaderListSize, value: config.maxRequestHeadersBytes),
            HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20),
        ]
        connection.targetWindowSize = 1 << 20
        var stream = NIOHTTP2Handler.StreamConfiguration()
        stream.targetWindowSize = 1 << 20
        // GOAWAY on drain (ChannelShouldQuiesceEvent) and after idle_timeout without streams; the proxy's
        // drain deadline, not this handler, bounds the grace time.
        let management = NIOHTTP2ServerConnectionManagementHandler(
            eventLoop: pipeline.eventLoop,
            configuration: .init(maxIdleTime: config.connectionIdleTimeout.map { TimeAmount($0) }, maxAge: nil, maxGraceTime: nil, keepalive: nil))
        let handler = NIOHTTP2Handler(mode: .server, eventLoop: pipeline.eventLoop, connectionConfiguration: connection,
                                      streamConfiguration: stream, streamDelegate: management.http2StreamDelegate) { channel in
            channel.eventLoop.makeCompletedFuture {
                // A stream takes its connection's autoRead, which may still be off while early bytes are replayed.
                try channel.syncOptions?.setOption(.autoRead, value: true)
                try channel.pipeline.syncOperations.addHandlers(
                    HTTP2FramePayloadToHTTPServerCodec(), HTTPStreamHandler(connection: self, checksHeaderLimits: true, requestProtocol: { "HTTP/2" }))
            }
        }
        try pipeline.addHandler(handler, position: after.map { .after($0) } ?? .last)
        try pipeline.addHandler(management, position: .after(handler))
    }
}
