import Atomics
import NIOCore

/// A cluster while the proxy runs: picks endpoints by its `lb_policy` and their weights, and enforces
/// `max_connections`.
final class ClusterRuntime: Sendable {
    /// The endpoint chosen for a connection. `index`, set only where open connections are counted
    /// (LEAST_REQUEST), goes back to ``released(_:)`` when the connection ends.
    struct Choice {
        var address: SocketAddress
        var index: Int?
    }

    let config: BootstrapConfig.Cluster
    let stats: ClusterStats
    private let next = ManagedAtomic<Int>(0)
    /// Connections open to each endpoint, for LEAST_REQUEST.
    private let openByEndpoint: [ManagedAtomic<Int>]
    /// With unequal weights, the round-robin schedule; nil when every endpoint weighs the same.
    private let schedule: WeightedSchedule?

    init(_ config: BootstrapConfig.Cluster, stats: ClusterStats? = nil) {
        self.config = config
        self.stats = stats ?? ClusterStats(name: config.name)
        if case .endpoints(let endpoints) = config.discovery, config.loadBalancing == .leastRequest {
            openByEndpoint = endpoints.map { _ in ManagedAtomic(0) }
        } else {
            openByEndpoint = []
        }
        if case .endpoints(let endpoints) = config.discovery, Set(endpoints.map(\.weight)).count > 1 {
            schedule = WeightedSchedule(weights: endpoints.map(\.weight))
        } else {
            schedule = nil
        }
    }

    var name: String { config.name }

    /// Where the next connection goes, or why nowhere: the circuit breaker is open, or there are no
    /// endpoints (an EDS cluster before or without its assignment).
    func endpoint(originalDestination: SocketAddress) -> Result<Choice, ProxyRuntime.RouteFailure> {
        if let limit = config.maxConnections, stats.connectionsActive.value >= Int64(limit) {
            stats.overflows.increment()
            return .failure(.overflow)
        }
        switch config.discovery {
        case .originalDestination:
            return .success(Choice(address: originalDestination, index: nil))
        case .endpoints(let endpoints):
            guard !endpoints.isEmpty else {
                stats.noHealthyUpstream.increment()
                return .failure(.noHealthyUpstream)
            }
            switch config.loadBalancing {
            case .roundRobin:
                let ticket = UInt(bitPattern: next.loadThenWrappingIncrement(ordering: .relaxed))
                let index = schedule?.endpoint(for: ticket) ?? Int(ticket % UInt(endpoints.count))
                return .success(Choice(address: endpoints[index].address, index: nil))
            case .random:
                return .success(Choice(address: endpoints.randomElement()!.address, index: nil))
            case .leastRequest:
                // Envoy's two random choices: the one with fewer open connections for its weight, (open + 1)
                // / weight, compared without dividing.
                let first = Int.random(in: endpoints.indices)
                let second = endpoints.count > 1 ? (first + Int.random(in: 1..<endpoints.count)) % endpoints.count : first
                let firstLoad = (openByEndpoint[first].load(ordering: .relaxed) + 1) * endpoints[second].weight
                let secondLoad = (openByEndpoint[second].load(ordering: .relaxed) + 1) * endpoints[first].weight
                let index = secondLoad < firstLoad ? second : first
                openByEndpoint[index].wrappingIncrement(ordering: .relaxed)
                return .success(Choice(address: endpoints[index].address, index: index))
            }
        }
    }

    /// The connection given `index` by ``endpoint(originalDestination:)`` has ended.
    func released(_ index: Int?) {
        guard let index, openByEndpoint.indices.contains(index) else { return }
        openByEndpoint[index].wrappingDecrement(ordering: .relaxed)
    }
}
