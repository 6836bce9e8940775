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
        var http2: UpstreamHTTP2Connection?
        var http2Connecting: EventLoopFuture<UpstreamHTTP2Connection>?

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
    /// At most this many idle HTTP/1.1 connections are kept per endpoint: Envoy's default circuit breaker
    /// `max_connections`, so that a burst of concurrent requests (HTTP/2 streams fanned out to HTTP/1.1)
    /// does not close and reopen connections at every request; unused ones close at the cluster's idle_timeout.
    private let maxIdlePerEndpoint: Int
    private var endpoints: [Key: EndpointPool] = [:]
    /// Clusters seen, so that pools of a cluster replaced by an update are dropped.
    private var clusterNames: [String: ObjectIdentifier] = [:]

    public init(eventLoop: any EventLoop, maxIdlePerEndpoint: Int = 1024) {
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
            if let open = pool.http2, open.acceptsStreams { return open.openStream() }
            let connection = pool.http2Connecting ?? connectHTTP2(to: endpoint, of: cluster, alpn: alpn, pool: pool)
            let stream = eventLoop.makePromise(of: UpstreamStream.self)
            connection.assumeIsolated().whenComplete { result in
                switch result {
                case .success(let connection):
                    connection.openStream().assumeIsolated().whenComplete { stream.assumeIsolated().completeWith($0) }
                case .failure(let error):
                    stream.fail(error)
                }
            }
            return stream.futureResult
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
            // (The stream is held strongly until then: a weak reference would slow its reference counting.)
            channel.closeFuture.assumeIsolated().whenComplete { [weak pool] _ in
                stream.closed()
                pool?.idle.removeAll { $0 === stream }
            }
            return stream
        }
    }

    private func connectHTTP2(to endpoint: UpstreamEndpoint, of cluster: any UpstreamCluster, alpn: [String]?,
                              pool: EndpointPool) -> EventLoopFuture<UpstreamHTTP2Connection> {
        let connecting = cluster.connect(to: endpoint, version: .http2, alpn: alpn, on: eventLoop) { channel in
            let multiplexer = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                mode: .client, connectionConfiguration: .init(), streamConfiguration: .init()
            ) { stream in
                // Servers do not open streams to a client (no push).
                stream.close()
            }
            let connection = UpstreamHTTP2Connection(channel: channel, multiplexer: multiplexer, maxStreams: cluster.maxRequestsPerConnection,
                                                     idleTimeout: cluster.upstreamIdleTimeout)
            pool.http2 = connection
            pool.http2Connecting = nil
            channel.closeFuture.assumeIsolated().whenComplete { [weak pool] _ in
                connection.closed()
                if pool?.http2 === connection { pool?.http2 = nil }
            }
            return connection
        }
        connecting.assumeIsolated().whenFailure { [weak pool] _ in pool?.http2Connecting = nil }
        pool.http2Connecting = connecting
        return connecting
    }

    /// Closes the idle connections of a cluster an update replaced; its streams in flight finish.
    private func dropCluster(_ identity: ObjectIdentifier) {
        for (key, pool) in endpoints where key.cluster == identity {
            for stream in pool.idle { stream.channel.close(promise: nil) }
            // Its streams in flight finish; no new one starts.
            pool.http2?.retire()
            endpoints.removeValue(forKey: key)
        }
    }
}
