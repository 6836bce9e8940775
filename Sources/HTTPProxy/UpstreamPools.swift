import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOHTTPTypesHTTP2

/// The upstream connections of one event loop, by cluster and endpoint: HTTP/1.1 connections kept alive
/// between requests, and one HTTP/2 connection per endpoint carrying many streams. Never shared across
/// event loops, so a request stays on its downstream's loop and nothing here takes a lock.
public final class UpstreamPools: @unchecked Sendable {
    // @unchecked: every member is touched on `eventLoop` only (checked in debug builds).

    private struct Key: Hashable {
        var cluster: ObjectIdentifier
        var endpoint: UpstreamEndpoint
        var alpn: [String]?
    }

    private final class EndpointPool {
        var idle: [UpstreamStream] = []
        var http2: NIOHTTP2Handler.StreamMultiplexer?
        var http2Channel: Channel?
        var http2Connecting: EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer>?

        /// The most recently used idle connection still open, ready for its next exchange.
        func takeIdle() -> UpstreamStream? {
            while let stream = idle.popLast() {
                if stream.channel.isActive {
                    stream.forwarder.prepareForNextExchange()
                    return stream
                }
            }
            return nil
        }
    }

    public let eventLoop: any EventLoop
    /// At most this many idle HTTP/1.1 connections are kept per endpoint.
    private let maxIdlePerEndpoint: Int
    private var endpoints: [Key: EndpointPool] = [:]
    /// Clusters seen, so that pools of a cluster replaced by an update are dropped.
    private var clusterNames: [String: ObjectIdentifier] = [:]

    public init(eventLoop: any EventLoop, maxIdlePerEndpoint: Int = 64) {
        self.eventLoop = eventLoop
        self.maxIdlePerEndpoint = maxIdlePerEndpoint
    }

    /// The pool of `endpoint` of `cluster` for connections offering `alpn`.
    private func pool(of endpoint: UpstreamEndpoint, in cluster: any UpstreamCluster, alpn: [String]?) -> EndpointPool {
        eventLoop.preconditionInEventLoop()
        let identity = ObjectIdentifier(cluster)
        if let previous = clusterNames[cluster.name], previous != identity { dropCluster(previous) }
        clusterNames[cluster.name] = identity
        let key = Key(cluster: identity, endpoint: endpoint.pooled, alpn: alpn)
        if let pool = endpoints[key] { return pool }
        let made = EndpointPool()
        endpoints[key] = made
        return made
    }

    /// A kept-alive HTTP/1.1 connection to `endpoint`, if one is idle: the request goes on at once.
    func idleStream(to endpoint: UpstreamEndpoint, of cluster: any UpstreamCluster, version: UpstreamVersion,
                    alpn: [String]? = nil) -> UpstreamStream? {
        guard version == .http1 else { return nil }
        return pool(of: endpoint, in: cluster, alpn: alpn).takeIdle()
    }

    /// A stream to `endpoint` of `cluster` speaking `version`: an idle HTTP/1.1 connection, a new one, or
    /// a new stream on the endpoint's HTTP/2 connection.
    func stream(to endpoint: UpstreamEndpoint, of cluster: any UpstreamCluster, version: UpstreamVersion,
                alpn: [String]? = nil) -> EventLoopFuture<UpstreamStream> {
        let pool = pool(of: endpoint, in: cluster, alpn: alpn)
        switch version {
        case .http1:
            if let stream = pool.takeIdle() { return eventLoop.makeSucceededFuture(stream) }
            return connectHTTP1(to: endpoint, of: cluster, alpn: alpn, pool: pool)
        case .http2:
            let multiplexer: EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer>
            if let open = pool.http2 {
                multiplexer = eventLoop.makeSucceededFuture(open)
            } else if let connecting = pool.http2Connecting {
                multiplexer = connecting
            } else {
                multiplexer = connectHTTP2(to: endpoint, of: cluster, alpn: alpn, pool: pool)
            }
            return multiplexer.assumeIsolated().flatMap { multiplexer in
                multiplexer.createStreamChannel { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandlers(HTTP2FramePayloadToHTTPClientCodec(), UpstreamResponseForwarder())
                    }
                }
            }.flatMapThrowing { channel in
                let forwarder = try channel.pipeline.syncOperations.handler(type: UpstreamResponseForwarder.self)
                return UpstreamStream(channel: channel, forwarder: forwarder, release: nil)
            }.nonisolated()
        }
    }

    private func connectHTTP1(to endpoint: UpstreamEndpoint, of cluster: any UpstreamCluster, alpn: [String]?, pool: EndpointPool) -> EventLoopFuture<UpstreamStream> {
        cluster.connect(to: endpoint, version: .http1, alpn: alpn, on: eventLoop) { channel in
            let forwarder = UpstreamResponseForwarder()
            let pipeline = channel.pipeline.syncOperations
            // Bytes past a 101 go on to the tunnel when the decoder leaves (WebSocket).
            // No outbound header validation: swift-http-types' fields are valid by construction.
            try pipeline.addHTTPClientHandlers(leftOverBytesStrategy: .forwardBytes, enableOutboundHeaderValidation: false)
            try pipeline.addHandlers(HTTP1ToHTTPClientCodec(), forwarder)
            let idleTimeout = cluster.upstreamIdleTimeout
            let stream = UpstreamStream(channel: channel, forwarder: forwarder, maxRequests: cluster.maxRequestsPerConnection) { [weak self, weak pool] stream in
                guard let self, let pool, pool.idle.count < self.maxIdlePerEndpoint else {
                    stream.channel.close(promise: nil)
                    return
                }
                pool.idle.append(stream)
                if let idleTimeout { stream.closeWhenIdle(for: idleTimeout) }
            }
            // An idle connection that the upstream closes leaves the pool.
            channel.closeFuture.assumeIsolated().whenComplete { [weak pool, weak stream] _ in
                stream?.closed()
                pool?.idle.removeAll { $0 === stream }
            }
            return stream
        }
    }

    private func connectHTTP2(to endpoint: UpstreamEndpoint, of cluster: any UpstreamCluster, alpn: [String]?,
                              pool: EndpointPool) -> EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer> {
        let connecting = cluster.connect(to: endpoint, version: .http2, alpn: alpn, on: eventLoop) { channel in
            let multiplexer = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                mode: .client, connectionConfiguration: .init(), streamConfiguration: .init()
            ) { stream in
                // Servers do not open streams to a client (no push).
                stream.close()
            }
            pool.http2 = multiplexer
            pool.http2Channel = channel
            pool.http2Connecting = nil
            channel.closeFuture.assumeIsolated().whenComplete { [weak pool] _ in
                pool?.http2 = nil
                pool?.http2Channel = nil
            }
            return multiplexer
        }
        connecting.assumeIsolated().whenFailure { [weak pool] _ in pool?.http2Connecting = nil }
        pool.http2Connecting = connecting
        return connecting
    }

    /// Closes the idle connections of a cluster an update replaced; its streams in flight finish.
    private func dropCluster(_ identity: ObjectIdentifier) {
        for (key, pool) in endpoints where key.cluster == identity {
            for stream in pool.idle { stream.channel.close(promise: nil) }
            // Its streams in flight finish; no new one starts (GOAWAY).
            pool.http2Channel?.close(mode: .output, promise: nil)
            endpoints.removeValue(forKey: key)
        }
    }
}
