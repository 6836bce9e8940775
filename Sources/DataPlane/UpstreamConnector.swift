import HTTPProxy
import NIOCore
import NIOPosix
import NIOSSL

/// Connections to a cluster's endpoints for the HTTP router: from the inbound passthrough address when
/// the request came in through an inbound listener, with the cluster's TLS established (and its peer
/// verified) before the connection is handed over. The TCP relay connects for itself (its upstream
/// handlers go in before the first byte), with the same ``UpstreamTLS``.
final class UpstreamConnector: Sendable {
    let contexts: TLSContextCache
    let secrets: SecretStore
    let defaultConnectTimeout: TimeAmount

    init(contexts: TLSContextCache, secrets: SecretStore, defaultConnectTimeout: TimeAmount) {
        self.contexts = contexts
        self.secrets = secrets
        self.defaultConnectTimeout = defaultConnectTimeout
    }

    private func connectTimeout(of cluster: BootstrapConfig.Cluster) -> TimeAmount {
        cluster.connectTimeout.map { TimeAmount($0) } ?? defaultConnectTimeout
    }

    /// A connection to `endpoint`, connected and, with TLS, accepted, with `configure`'s handlers on it
    /// before the bytes the handshake held go on.
    func connect<Connection>(_ cluster: ClusterRuntime, to endpoint: UpstreamEndpoint, alpn: [String]? = nil, on loop: any EventLoop,
                             configure: @escaping (Channel) throws -> Connection) -> EventLoopFuture<Connection> {
        let stats = cluster.stats
        let timeout = connectTimeout(of: cluster.config)
        let upstreamTLS: UpstreamTLS?
        let socket = (endpoint.transport as? EndpointTransport)?.socket
        switch UpstreamTLS.make(for: cluster, socket: socket, alpn: alpn, contexts: contexts, secrets: secrets, on: loop, timeout: timeout) {
        case .success(let made): upstreamTLS = made
        case .failure(let unavailable):
            stats.tls.connectionErrors.increment()
            return loop.makeFailedFuture(unavailable)
        }
        var bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: ProxyOptions.readBuffers)
            .keepalive(cluster.config.tcpKeepalive, to: endpoint.address)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let upstreamTLS {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: upstreamTLS.built.context, serverHostname: upstreamTLS.serverName))
                        try channel.pipeline.syncOperations.addHandler(upstreamTLS.handshake)
                    }
                }
            }
        if let source = endpoint.source { bootstrap = bootstrap.bind(to: source) }
        stats.connectionsTotal.increment()
        let connected = bootstrap.connect(to: endpoint.address)
        connected.whenComplete { result in
            switch result {
            case .success(let channel):
                stats.connectionsActive.increment()
                channel.closeFuture.whenComplete { _ in stats.connectionsActive.decrement() }
            case .failure(let error):
                upstreamTLS?.handshake.abandon()
                if case ChannelError.connectTimeout = error { stats.connectTimeouts.increment() }
                stats.connectFailures.increment()
            }
        }
        let ready = loop.makePromise(of: Connection.self)
        func finish(_ channel: Channel) {
            do {
                ready.assumeIsolated().succeed(try configure(channel))
                // The bytes the handshake held (an HTTP/2 server's SETTINGS) now reach the codec.
                upstreamTLS?.handshake.release()
            } catch {
                channel.close(promise: nil)
                ready.fail(error)
            }
        }
        connected.assumeIsolated().whenComplete { result in
            switch result {
            case .failure(let error):
                ready.fail(error)
            case .success(let channel):
                guard let upstreamTLS else { return finish(channel) }
                upstreamTLS.accepted.assumeIsolated().whenComplete { verdict in
                    switch verdict {
                    case .success: finish(channel)
                    case .failure(let error):
                        channel.close(promise: nil)
                        ready.fail(error)
                    }
                }
            }
        }
        return ready.futureResult
    }
}

/// TLS to the upstream for one connection.
struct UpstreamTLS {
    var built: TLSContextCache.Built
    var serverName: String?
    var handshake: TLSHandshakeHandler
    var accepted: EventLoopFuture<String?>
    var presentsCertificate: Bool

    /// nil for a plaintext endpoint (`socket`, the cluster's or its transport socket match's); a failure
    /// when the TLS context cannot be had now.
    /// `alpn`: offered in place of the transport socket's ALPN (Istio's per-HTTP-version override).
    static func make(for cluster: ClusterRuntime, socket: TransportSocketConfig?, alpn: [String]? = nil, contexts: TLSContextCache,
                     secrets: SecretStore, on loop: any EventLoop, timeout: TimeAmount) -> Result<UpstreamTLS?, TLSContextCache.Unavailable> {
        guard let tls = socket else { return .success(nil) }
        let key = alpn.map { tls.contextKey.offering($0) } ?? tls.contextKey
        return contexts.context(for: key, secrets: secrets).map { built in
            let accepted = loop.makePromise(of: String?.self)
            // The handshake counts toward the connect timeout, as in Envoy.
            let handshake = TLSHandshakeHandler(subjectAltNames: built.subjectAltNames, verifiesPeer: built.verifiesPeer,
                                                stats: cluster.stats.tls, timeout: timeout, accepted: accepted)
            var serverName: String?
            if case .client(let name) = tls.role { serverName = name }
            return UpstreamTLS(built: built, serverName: serverName, handshake: handshake, accepted: accepted.futureResult,
                               presentsCertificate: tls.certificate != nil)
        }
    }
}

/// An endpoint's transport socket, made once per endpoint when its cluster is put in force: the HTTP
/// pools tell transports apart by identity, so finding a pooled connection hashes no TLS settings.
final class EndpointTransport: Sendable {
    let socket: TransportSocketConfig

    init(_ socket: TransportSocketConfig) { self.socket = socket }
}
