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
        /// Its cluster's, where its connections and waiting requests are counted.
        let breakers: CircuitBreakers
        var idle: [UpstreamStream] = []
        /// HTTP/1.1 connections open or being opened, and of those being opened: Envoy lets a pool always
        /// open one, whatever `max_connections` says, so that what waits on it can be served.
        var connections = 0
        var connecting = 0
        /// Requests waiting for an HTTP/1.1 connection (being opened, or busy at `max_connections`), oldest
        /// first: each holds one of the cluster's pending requests.
        var waiting = CircularBuffer<EventLoopPromise<UpstreamStream>>()
        /// Its cluster was replaced: connections that finish an exchange close rather than wait here.
        var retired = false
        var http2: UpstreamHTTP2Connection?
        var http2Connecting: EventLoopFuture<UpstreamHTTP2Connection>?

        init(breakers: CircuitBreakers) { self.breakers = breakers }

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
        let made = EndpointPool(breakers: cluster.circuitBreakers)
        endpoints[key] = made
        return made
    }

    /// A kept-alive HTTP/1.1 connection to `endpoint`, if one is idle: the request goes on at once.
    func idleStream(to endpoint: UpstreamEndpoint, of cluster: any UpstreamCluster, version: UpstreamVersion,
                    alpn: [String]? = nil) -> UpstreamStream? {
        guard version == .http1 else { return nil }
        return pool(of: endpoint, in: cluster, alpn: alpn).takeIdle()
    }

    /// A stream to `endpoint` of `cluster` speaking `version`: an idle HTTP/1.1 connection, one opened
    /// or freed for it, or a new stream on the endpoint's HTTP/2 connection. A request that has to wait
    /// for a connection is one of the cluster's pending requests: beyond `max_pending_requests` it fails
    /// at once with ``UpstreamUnavailable/overflow``.
    func stream(to endpoint: UpstreamEndpoint, of cluster: any UpstreamCluster, version: UpstreamVersion,
                alpn: [String]? = nil) -> EventLoopFuture<UpstreamStream> {
        let pool = pool(of: endpoint, in: cluster, alpn: alpn)
        let breakers = cluster.circuitBreakers
        switch version {
        case .http1:
            if let stream = pool.takeIdle() { return eventLoop.makeSucceededFuture(stream) }
            guard breakers.tryOpen(.pendingRequests) else { return eventLoop.makeFailedFuture(UpstreamUnavailable.overflow) }
            let waiter = eventLoop.makePromise(of: UpstreamStream.self)
            pool.waiting.append(waiter)
            openConnectionIfNeeded(to: endpoint, of: cluster, alpn: alpn, pool: pool)
            return waiter.futureResult
        case .http2:
            if let open = pool.http2, open.acceptsStreams { return open.openStream() }
            let connection: EventLoopFuture<UpstreamHTTP2Connection>
            if let connecting = pool.http2Connecting {
                connection = connecting
            } else {
                // One connection per endpoint and loop: opened even at max_connections (counted as an overflow).
                if !breakers.tryOpen(.connections) { breakers.openOverLimit(.connections) }
                connection = connectHTTP2(to: endpoint, of: cluster, alpn: alpn, pool: pool)
            }
            guard breakers.tryOpen(.pendingRequests) else { return eventLoop.makeFailedFuture(UpstreamUnavailable.overflow) }
            let stream = eventLoop.makePromise(of: UpstreamStream.self)
            connection.assumeIsolated().whenComplete { result in
                breakers.close(.pendingRequests)
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

    /// A request waiting for an HTTP/1.1 connection gave up (answered meanwhile, or its client left):
    /// it leaves the queue, and its pending request is closed.
    func abandon(_ waiting: EventLoopFuture<UpstreamStream>, to endpoint: UpstreamEndpoint, of cluster: any UpstreamCluster, alpn: [String]? = nil) {
        let pool = pool(of: endpoint, in: cluster, alpn: alpn)
        guard let index = pool.waiting.firstIndex(where: { $0.futureResult === waiting }) else { return }
        let waiter = pool.waiting.remove(at: index)
        cluster.circuitBreakers.close(.pendingRequests)
        waiter.fail(ChannelError.ioOnClosedChannel)
    }

    /// Opens another HTTP/1.1 connection while requests wait for more than are being opened, within the
    /// cluster's `max_connections` (a pool with none may always open one).
    private func openConnectionIfNeeded(to endpoint: UpstreamEndpoint, of cluster: any UpstreamCluster, alpn: [String]?, pool: EndpointPool) {
        guard pool.waiting.count > pool.connecting else { return }
        let breakers = cluster.circuitBreakers
        if !breakers.tryOpen(.connections) {
            guard pool.connections == 0 else { return }  // waits for one of the pool's connections to free
            breakers.openOverLimit(.connections)
        }
        pool.connections += 1
        pool.connecting += 1
        connectHTTP1(to: endpoint, of: cluster, alpn: alpn, pool: pool).assumeIsolated().whenComplete { [self] result in
            pool.connecting -= 1
            switch result {
            case .success(let stream):
                serve(stream, pool: pool, cluster: cluster)
            case .failure(let error):
                pool.connections -= 1
                breakers.close(.connections)
                // The oldest waiting request learns of the failure (its retry policy may try again); the
                // others get connections of their own.
                if let waiter = pool.waiting.popFirst() {
                    breakers.close(.pendingRequests)
                    waiter.fail(error)
                }
                openConnectionIfNeeded(to: endpoint, of: cluster, alpn: alpn, pool: pool)
            }
        }
    }

    /// An HTTP/1.1 connection ready for a request: the oldest waiting one takes it, else it goes idle.
    /// Returns whether it was taken or kept.
    @discardableResult
    private func serve(_ stream: UpstreamStream, pool: EndpointPool, cluster: any UpstreamCluster) -> Bool {
        if let waiter = pool.waiting.popFirst() {
            cluster.circuitBreakers.close(.pendingRequests)
            stream.forwarder.prepareForNextExchange()
            waiter.succeed(stream)
            return true
        }
        guard !pool.retired, pool.idle.count < maxIdlePerEndpoint else { return false }
        pool.idle.append(stream)
        if let idleTimeout = cluster.upstreamIdleTimeout { stream.closeWhenIdle(for: idleTimeout) }
        return true
    }

    private func connectHTTP1(to endpoint: UpstreamEndpoint, of cluster: any UpstreamCluster, alpn: [String]?, pool: EndpointPool) -> EventLoopFuture<UpstreamStream> {
        cluster.connect(to: endpoint, version: .http1, alpn: alpn, on: eventLoop) { channel in
            let forwarder = UpstreamResponseForwarder()
            let pipeline = channel.pipeline.syncOperations
            // Bytes past a 101 go on to the tunnel when the decoder leaves (WebSocket).
            // No outbound header validation: swift-http-types' fields are valid by construction.
            try pipeline.addHTTPClientHandlers(leftOverBytesStrategy: .forwardBytes, enableOutboundHeaderValidation: false)
            try pipeline.addHandlers(HTTP1ToHTTPClientCodec(), forwarder)
            let stream = UpstreamStream(channel: channel, forwarder: forwarder, maxRequests: cluster.maxRequestsPerConnection) { [weak self, weak pool] stream in
                guard let self, let pool, self.serve(stream, pool: pool, cluster: cluster) else {
                    stream.channel.close(promise: nil)
                    return
                }
            }
            // An idle connection that the upstream closes leaves the pool; its place under max_connections
            // may go to a request waiting for one.
            // (The stream is held strongly until then: a weak reference would slow its reference counting.)
            channel.closeFuture.assumeIsolated().whenComplete { [weak self, weak pool] _ in
                stream.closed()
                cluster.circuitBreakers.close(.connections)
                guard let self, let pool else { return }
                pool.connections -= 1
                pool.idle.removeAll { $0 === stream }
                self.openConnectionIfNeeded(to: endpoint, of: cluster, alpn: alpn, pool: pool)
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
                cluster.circuitBreakers.close(.connections)
                if pool?.http2 === connection { pool?.http2 = nil }
            }
            return connection
        }
        connecting.assumeIsolated().whenFailure { [weak pool] _ in
            cluster.circuitBreakers.close(.connections)
            pool?.http2Connecting = nil
        }
        pool.http2Connecting = connecting
        return connecting
    }

    /// Closes the idle connections of a cluster an update replaced; its streams in flight finish. Requests
    /// still waiting for one of its connections fail as if the connection had (a retry policy may
    /// send them again).
    private func dropCluster(_ identity: ObjectIdentifier) {
        for (key, pool) in endpoints where key.cluster == identity {
            pool.retired = true
            for stream in pool.idle { stream.channel.close(promise: nil) }
            pool.idle = []
            while let waiter = pool.waiting.popFirst() {
                pool.breakers.close(.pendingRequests)
                waiter.fail(ChannelError.ioOnClosedChannel)
            }
            // Its streams in flight finish; no new one starts.
            pool.http2?.retire()
            endpoints.removeValue(forKey: key)
        }
    }
}
