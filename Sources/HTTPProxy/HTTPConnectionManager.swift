import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOHTTPTypesHTTP2

/// Envoy's HTTP connection manager for one downstream connection: the chain's configuration, who the
/// downstream is, and what the proxy around it offers (the configuration in force, upstream pools,
/// the observer of finished requests). ``serve(on:negotiatedProtocol:)`` puts the codec and the stream
/// handlers on the connection.
public struct HTTPConnectionManager: Sendable {
    public var config: HTTPConnectionManagerConfig
    public var downstream: DownstreamConnectionInfo
    /// The configuration in force (route tables by name, clusters by name), read again only when it changed.
    public var routing: any HTTPRoutingSource
    /// The upstream pools of the connection's event loop.
    public var pools: UpstreamPools
    public var observer: (any HTTPStreamObserver)?

    public init(config: HTTPConnectionManagerConfig, downstream: DownstreamConnectionInfo,
                routing: any HTTPRoutingSource, pools: UpstreamPools,
                observer: (any HTTPStreamObserver)? = nil) {
        self.config = config
        self.downstream = downstream
        self.routing = routing
        self.pools = pools
        self.observer = observer
    }

    /// HTTP/2's connection preface: what a prior-knowledge client sends first.
    static let http2Preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    /// Serves HTTP on `channel` (TLS, if any, already terminated). The codec is the configured one; with
    /// AUTO, `h2` by ALPN or HTTP/2's preface in the first bytes choose HTTP/2, anything else HTTP/1.1.
    /// Call on the channel's event loop, before the connection's first bytes are read or replayed.
    public func serve(on channel: Channel, negotiatedProtocol: String?) throws {
        let pipeline = channel.pipeline.syncOperations
        let connection = HTTPConnection(manager: self)
        switch config.codec {
        case .http1: try connection.configureHTTP1(pipeline)
        case .http2: try connection.configureHTTP2(pipeline)
        case .auto:
            switch negotiatedProtocol {
            case "h2"?: try connection.configureHTTP2(pipeline)
            case "http/1.1"?, "http/1.0"?: try connection.configureHTTP1(pipeline)
            default: try pipeline.addHandler(HTTPCodecDetector(connection: connection))
            }
        }
    }
}

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
                                         limits: RequestLimits(maxHeaderBytes: config.maxRequestHeadersBytes, maxHeaderCount: config.maxHeadersCount))
        var handlers: [any ChannelHandler] = []
        if let idle = config.connectionIdleTimeout {
            // Envoy's idle_timeout: a connection without a request for this long is closed.
            handlers.append(IdleStateHandler(allTimeout: TimeAmount(idle)))
        }
        try pipeline.addHandlers(handlers + [
            // Bytes past an upgrade request go on to the tunnel when the decoder leaves (WebSocket).
            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)),
            HTTPResponseEncoder(),
            // Pipelined requests one at a time; on drain (ChannelShouldQuiesceEvent), closes once idle.
            adapter,
            HTTPStreamHandler(connection: self, checksHeaderLimits: false, requestProtocol: { adapter.requestProtocol }),
        ], position: after.map { .after($0) } ?? .last)
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

/// Codec AUTO on plaintext: reads until the first bytes are HTTP/2's preface or cannot be, then puts the
/// chosen codec in its place and hands it the bytes.
final class HTTPCodecDetector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let connection: HTTPConnection
    private var buffered: ByteBuffer?

    init(connection: HTTPConnection) { self.connection = connection }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if var previous = buffered {
            previous.writeBuffer(&bytes)
            bytes = previous
        }
        let preface = HTTPConnectionManager.http2Preface
        let seen = bytes.readableBytesView.prefix(preface.count)
        guard seen.elementsEqual(preface.prefix(seen.count)) else { return decide(http2: false, bytes: bytes, context: context) }
        guard seen.count == preface.count else {
            buffered = bytes
            return
        }
        decide(http2: true, bytes: bytes, context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        buffered = nil
        context.fireChannelInactive()
    }

    private func decide(http2: Bool, bytes: ByteBuffer, context: ChannelHandlerContext) {
        buffered = nil
        do {
            let pipeline = context.pipeline.syncOperations
            if http2 {
                try connection.configureHTTP2(pipeline, after: self)
            } else {
                try connection.configureHTTP1(pipeline, after: self)
            }
        } catch {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(wrapInboundOut(bytes))
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }
}
