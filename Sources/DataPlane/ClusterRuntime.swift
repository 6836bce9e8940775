import Atomics
import NIOCore

/// A cluster while the proxy runs: picks endpoints round robin and enforces `max_connections`.
final class ClusterRuntime: Sendable {
    let config: BootstrapConfig.Cluster
    let stats: ClusterStats
    private let next = ManagedAtomic<Int>(0)

    init(_ config: BootstrapConfig.Cluster) {
        self.config = config
        self.stats = ClusterStats(name: config.name)
    }

    var name: String { config.name }

    /// Where the next connection goes; nil when the circuit breaker is open.
    func endpoint(originalDestination: SocketAddress) -> SocketAddress? {
        if let limit = config.maxConnections, stats.connectionsActive.value >= Int64(limit) {
            stats.overflows.increment()
            return nil
        }
        switch config.discovery {
        case .originalDestination:
            return originalDestination
        case .endpoints(let endpoints):
            let index = next.loadThenWrappingIncrement(ordering: .relaxed)
            return endpoints[Int(UInt(bitPattern: index) % UInt(endpoints.count))]
        }
    }
}
