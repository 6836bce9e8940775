import Routing

/// What the configuration in force offers the HTTP path: route tables and clusters by name.
public protocol HTTPRoutingSnapshot: Sendable {
    func routeTable(named name: String) -> RouteTable?
    func cluster(named name: String) -> (any UpstreamCluster)?
}

extension HTTPRoutingSnapshot {
    /// The route table `manager` routes by: its inline one, or the RDS one it names (nil while that has
    /// not arrived, or never did: Envoy answers 404, `NR`).
    public func routeTable(for manager: HTTPConnectionManagerConfig) -> RouteTable? {
        switch manager.routes {
        case .inline(let table): table
        case .discovered(let name): routeTable(named: name)
        }
    }
}

/// Where a connection gets the configuration in force: a snapshot, and a number that changes whenever
/// the snapshot does. A connection keeps the snapshot it read and reads it again only when the number
/// moved, so a request costs one atomic load, not a lock and a copy.
public protocol HTTPRoutingSource: Sendable {
    var routingGeneration: Int { get }
    func routingSnapshot() -> any HTTPRoutingSnapshot
}
