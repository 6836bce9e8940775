import HTTPProxy
import Routing

/// The configuration in force as the HTTP router asks it, once per request: RDS route tables and
/// clusters by name.
extension ActiveConfiguration: HTTPRoutingSnapshot {
    func routeTable(named name: String) -> RouteTable? { routes[name] }

    func cluster(named name: String) -> (any UpstreamCluster)? { clusters[name] }
}

/// The proxy as the HTTP connections' source of the configuration in force.
extension ProxyRuntime: HTTPRoutingSource {
    var routingGeneration: Int { configurationGeneration }

    func routingSnapshot() -> any HTTPRoutingSnapshot { configuration }
}
