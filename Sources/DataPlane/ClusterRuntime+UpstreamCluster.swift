import HTTPProxy
import NIOCore

/// A cluster as the HTTP router asks it: an endpoint per request (LEAST_REQUEST counts active requests),
/// and connections through the proxy's ``UpstreamConnector``.
extension ClusterRuntime: UpstreamCluster {
    var upstreamProtocol: UpstreamProtocol {
        switch config.upstreamHTTP {
        case .http1: .http1
        case .http2: .http2
        case .downstream: .downstream
        }
    }

    var upstreamIdleTimeout: TimeAmount? { config.upstreamIdleTimeout.map { TimeAmount($0) } }

    var maxRequestsPerConnection: Int? { config.maxRequestsPerConnection }

    var circuitBreakers: CircuitBreakers { stats.circuitBreakers }

    func chooseEndpoint(for downstream: DownstreamConnectionInfo, hash: UInt64?) -> Result<UpstreamEndpoint, UpstreamUnavailable> {
        choose(for: downstream, hash: hash)
    }

    func chooseEndpoint(for downstream: DownstreamConnectionInfo, hash: UInt64?,
                        priorities: inout PreviousPriorities) -> Result<UpstreamEndpoint, UpstreamUnavailable> {
        choose(for: downstream, hash: hash) { health, degraded in priorities.load(health: health, degraded: degraded) }
    }

    private func choose(for downstream: DownstreamConnectionInfo, hash: UInt64?,
                        retryLoad: (_ health: [Int], _ degraded: [Int]) -> (healthy: [Int], degraded: [Int])? = { _, _ in nil })
        -> Result<UpstreamEndpoint, UpstreamUnavailable> {
        switch endpoint(originalDestination: downstream.localAddress ?? Self.unspecified, hash: hash, retryLoad: retryLoad) {
        case .success(let choice):
            // The cluster's `upstream_bind_config` (istiod's 127.0.0.6 on inbound clusters), for endpoints
            // of its address family. Without one, an ORIGINAL_DST cluster behind an inbound listener is
            // Istio's inbound passthrough all the same: the application sees the request come from
            // 127.0.0.6 (::6), not the pod's own address, which would be captured back into the inbound
            // listener. Other clusters (an ext_authz service's, a JWKS server's) are reached from the
            // pod's address, as from Envoy.
            var source = config.bindSource(for: choice.address)
            if source == nil, downstream.isInbound, case .originalDestination = config.discovery {
                source = choice.address.protocol == .inet6 ? Self.inboundPassthroughV6 : Self.inboundPassthroughV4
            }
            return .success(UpstreamEndpoint(address: choice.address, source: source, token: choice.index, transport: choice.transport,
                                              priority: choice.priority))
        case .failure(.overflow):
            return .failure(.overflow)
        case .failure:
            return .failure(.noHealthyUpstream)
        }
    }

    private static let unspecified = try! SocketAddress(ipAddress: "0.0.0.0", port: 0)
    private static let inboundPassthroughV4 = try! SocketAddress(ipAddress: "127.0.0.6", port: 0)
    private static let inboundPassthroughV6 = try! SocketAddress(ipAddress: "::6", port: 0)

    func requestEnded(at endpoint: UpstreamEndpoint) {
        released(endpoint.token)
    }

    func record(_ outcome: UpstreamOutcome, at endpoint: UpstreamEndpoint) {
        guard let outlierDetector, let index = endpoint.token else { return }
        outlierDetector.record(outcome, host: index)
    }

    func connect<Connection>(to endpoint: UpstreamEndpoint, version: UpstreamVersion, alpn: [String]?, on loop: any EventLoop,
                             configure: @escaping (Channel) throws -> Connection) -> EventLoopFuture<Connection> {
        guard let connector else { return loop.makeFailedFuture(ChannelError.connectPending) }
        // istiod marks the clusters whose ALPN must stay as configured (TLS it does not own): istio.alpn_override "false".
        return connector.connect(self, to: endpoint, alpn: config.allowsALPNOverride ? alpn : nil, on: loop, configure: configure)
    }
}
