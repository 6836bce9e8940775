import Atomics
import NIOCore

/// A cluster while the proxy runs: picks endpoints round robin and enforces `max_connections`.
final class ClusterRuntime: Sendable {
    let config: BootstrapConfig.Cluster
    let stats: ClusterStats
    private let next = ManagedAtomic<Int>(0)

    init(_ config: BootstrapConfig.Cluster, stats: ClusterStats? = nil) {
        self.config = config
        self.stats = stats ?? ClusterStats(name: config.name)
    }

    var name: String { config.name }

    /// Where the next connection goes, or why nowhere: the circuit breaker is open, or there are no
    /// endpoints (an EDS cluster before or without its assignment).
    func endpoint(originalDestination: SocketAddress) -> Result<SocketAddress, ProxyRuntime.RouteFailure> {
        if let limit = config.maxConnections, stats.connectionsActive.value >= Int64(limit) {
            stats.overflows.increment()
            return .failure(.overflow)
        }
        switch config.discovery {
        case .originalDestination:
            return .success(originalDestination)
        case .endpoints(let endpoints):
            guard !endpoints.isEmpty else {
                stats.noHealthyUpstream.increment()
                return .failure(.noHealthyUpstream)
            }
            let index = next.loadThenWrappingIncrement(ordering: .relaxed)
            return .success(endpoints[Int(UInt(bitPattern: index) % UInt(endpoints.count))])
        }
    }
}
