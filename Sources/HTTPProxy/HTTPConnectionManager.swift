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
