import SwiftProtobuf
import XDS

/// The xDS resources for a mesh, built once per configuration change: what every sidecar shares
/// (clusters, endpoints, the outbound listener), and each workload's inbound listener by its IP.
struct MeshResources: Sendable {
    typealias Resource = (name: String, resource: Google_Protobuf_Any)

    var clusters: [Resource]
    var endpoints: [Resource]
    var outboundListener: Resource
    /// The inbound ports (Istio's `inbound|PORT||` clusters) of the workload at each IP.
    var inboundPorts: [String: [Int]]
}

/// Turns a ``MeshConfig`` into Envoy resources named as Istio names them: clusters
/// `outbound|PORT|SUBSET|HOST` fed by EDS, `virtualOutbound` on 15001 with one filter chain per service
/// address and port plus a passthrough, `virtualInbound` on 15006 with one chain per workload port.
enum ProxyConfigGenerator {
    static let outboundListenerName = "virtualOutbound"
    static let inboundListenerName = "virtualInbound"
    static let passthroughCluster = "PassthroughCluster"
    static let inboundPassthroughCluster = "InboundPassthroughCluster"
    static let defaultConnectTimeout = Duration.seconds(10)

    static func resources(for config: MeshConfig, outboundPort: Int = 15001) throws -> MeshResources {
        var clusters: [MeshResources.Resource] = []
        var endpoints: [MeshResources.Resource] = []
        for cluster in [passthroughCluster, inboundPassthroughCluster] {
            clusters.append((cluster, try .packed(originalDestinationCluster(cluster), as: .cluster)))
        }
        var inboundPorts: [String: Set<Int>] = [:]
        var chains: [Envoy_Config_Listener_V3_FilterChain] = []
        for entry in config.serviceEntries {
            let members = self.members(of: entry, in: config)
            let rule = config.destinationRules.first { rule in entry.hosts.contains(rule.host) }
            for port in entry.ports {
                for member in members {
                    inboundPorts[member.address, default: []].insert(targetPort(of: member, port: port))
                }
                for host in entry.hosts {
                    var subsets: [(name: String, labels: [String: String], policy: DestinationRule.TrafficPolicy)] =
                        [("", [:], rule?.trafficPolicy ?? .init())]
                    for subset in rule?.subsets ?? [] {
                        subsets.append((subset.name, subset.labels, (rule?.trafficPolicy ?? .init()).overridden(by: subset.trafficPolicy)))
                    }
                    for subset in subsets {
                        let name = clusterName(port: port.number, subset: subset.name, host: host)
                        let selected = members.filter { member in subset.labels.allSatisfy { member.labels[$0.key] == $0.value } }
                        clusters.append((name, try .packed(edsCluster(name, policy: subset.policy), as: .cluster)))
                        endpoints.append((name, try .packed(assignment(name, selected.map { ($0.address, targetPort(of: $0, port: port)) }),
                                                            as: .endpoint)))
                    }
                    if !entry.addresses.isEmpty {
                        chains.append(outboundChain(host: host, port: port.number, addresses: entry.addresses,
                                                    route: route(host: host, port: port.number, config: config)))
                    }
                }
            }
        }
        var listener = Envoy_Config_Listener_V3_Listener()
        listener.name = outboundListenerName
        listener.address = socketAddress("0.0.0.0", port: outboundPort)
        listener.useOriginalDst = Google_Protobuf_BoolValue(true)
        listener.trafficDirection = .outbound
        listener.filterChains = chains
        listener.defaultFilterChain = tcpProxyChain(name: "PassthroughFilterChain", route: .cluster(passthroughCluster))
        let inboundClusterPorts = Set(inboundPorts.values.flatMap { $0 }).sorted()
        for port in inboundClusterPorts {
            let name = "inbound|\(port)||"
            clusters.append((name, try .packed(originalDestinationCluster(name), as: .cluster)))
        }
        return MeshResources(clusters: clusters, endpoints: endpoints,
                             outboundListener: (outboundListenerName, try .packed(listener, as: .listener)),
                             inboundPorts: inboundPorts.mapValues { $0.sorted() })
    }

    /// `virtualInbound` for the workload at `ip`: its ports go to `inbound|PORT||`, anything else
    /// passes through. `transparent` for TPROXY interception.
    static func inboundListener(ports: [Int], transparent: Bool, inboundPort: Int = 15006) throws -> MeshResources.Resource {
        var listener = Envoy_Config_Listener_V3_Listener()
        listener.name = inboundListenerName
        listener.address = socketAddress("0.0.0.0", port: inboundPort)
        listener.trafficDirection = .inbound
        if transparent { listener.transparent = Google_Protobuf_BoolValue(true) }
        listener.filterChains = ports.map { port in
            var chain = tcpProxyChain(name: "inbound|\(port)||", route: .cluster("inbound|\(port)||"))
            chain.filterChainMatch.destinationPort = Google_Protobuf_UInt32Value(UInt32(port))
            return chain
        }
        listener.defaultFilterChain = tcpProxyChain(name: "InboundPassthroughFilterChain", route: .cluster(inboundPassthroughCluster))
        return (inboundListenerName, try .packed(listener, as: .listener))
    }

    /// Istio's cluster name: `outbound|9000|v1|payments.shop.svc.cluster.local`.
    static func clusterName(port: Int, subset: String, host: String) -> String {
        "outbound|\(port)|\(subset)|\(host)"
    }

    // MARK: Pieces

    /// The endpoints of a service: inline ones and the WorkloadEntries its selector picks.
    private static func members(of entry: ServiceEntry, in config: MeshConfig) -> [WorkloadEndpoint] {
        var members = entry.endpoints
        if let selector = entry.workloadSelector {
            members += config.workloadEntries
                .filter { workload in
                    workload.namespace == entry.namespace && selector.allSatisfy { workload.endpoint.labels[$0.key] == $0.value }
                }
                .map(\.endpoint)
        }
        return members
    }

    private static func targetPort(of member: WorkloadEndpoint, port: ServiceEntry.Port) -> Int {
        member.ports[port.name] ?? port.targetPort ?? port.number
    }

    /// The VirtualService route for connections to `host:port`, or the service's own cluster.
    private static func route(host: String, port: Int, config: MeshConfig) -> Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.OneOf_ClusterSpecifier {
        let defaultCluster = clusterName(port: port, subset: "", host: host)
        guard let service = config.virtualServices.first(where: { $0.hosts.contains(host) }),
              let tcp = service.tcp.first(where: { $0.ports.isEmpty || $0.ports.contains(port) }) else {
            return .cluster(defaultCluster)
        }
        let clusters = tcp.destinations.map { destination -> (String, Int) in
            let destinationPort = destination.port
                ?? config.serviceEntries.first { $0.hosts.contains(destination.host) }?.ports.first?.number ?? port
            return (clusterName(port: destinationPort, subset: destination.subset ?? "", host: destination.host), destination.weight)
        }
        if clusters.count == 1 { return .cluster(clusters[0].0) }
        var weighted = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.WeightedCluster()
        weighted.clusters = clusters.map { name, weight in
            var cluster = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.WeightedCluster.ClusterWeight()
            cluster.name = name
            cluster.weight = UInt32(weight)
            return cluster
        }
        return .weightedClusters(weighted)
    }

    private static func outboundChain(host: String, port: Int, addresses: [String],
                                      route: Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.OneOf_ClusterSpecifier) -> Envoy_Config_Listener_V3_FilterChain {
        var chain = tcpProxyChain(name: "\(host):\(port)", route: route)
        chain.filterChainMatch.destinationPort = Google_Protobuf_UInt32Value(UInt32(port))
        chain.filterChainMatch.prefixRanges = addresses.compactMap(IPNetwork.init).map { network in
            var range = Envoy_Config_Core_V3_CidrRange()
            range.addressPrefix = network.address
            range.prefixLen = Google_Protobuf_UInt32Value(UInt32(network.prefixLength))
            return range
        }
        return chain
    }

    private static func tcpProxyChain(name: String, route: Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.OneOf_ClusterSpecifier) -> Envoy_Config_Listener_V3_FilterChain {
        var proxy = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy()
        proxy.statPrefix = name
        proxy.clusterSpecifier = route
        var filter = Envoy_Config_Listener_V3_Filter()
        filter.name = "envoy.filters.network.tcp_proxy"
        filter.typedConfig = (try? Google_Protobuf_Any(message: proxy)) ?? Google_Protobuf_Any()
        var chain = Envoy_Config_Listener_V3_FilterChain()
        chain.name = name
        chain.filters = [filter]
        return chain
    }

    private static func edsCluster(_ name: String, policy: DestinationRule.TrafficPolicy) -> Envoy_Config_Cluster_V3_Cluster {
        var cluster = Envoy_Config_Cluster_V3_Cluster()
        cluster.name = name
        cluster.type = .eds
        cluster.edsClusterConfig.serviceName = name
        cluster.edsClusterConfig.edsConfig.ads = Envoy_Config_Core_V3_AggregatedConfigSource()
        cluster.connectTimeout = protoDuration(policy.connectTimeout ?? defaultConnectTimeout)
        switch policy.loadBalancer {
        case "LEAST_REQUEST": cluster.lbPolicy = .leastRequest
        case "RANDOM": cluster.lbPolicy = .random
        default: cluster.lbPolicy = .roundRobin
        }
        if let maxConnections = policy.maxConnections {
            var threshold = Envoy_Config_Cluster_V3_CircuitBreakers.Thresholds()
            threshold.maxConnections = Google_Protobuf_UInt32Value(UInt32(maxConnections))
            cluster.circuitBreakers.thresholds = [threshold]
        }
        return cluster
    }

    private static func originalDestinationCluster(_ name: String) -> Envoy_Config_Cluster_V3_Cluster {
        var cluster = Envoy_Config_Cluster_V3_Cluster()
        cluster.name = name
        cluster.type = .originalDst
        cluster.lbPolicy = .clusterProvided
        cluster.connectTimeout = protoDuration(defaultConnectTimeout)
        return cluster
    }

    private static func assignment(_ name: String, _ endpoints: [(address: String, port: Int)]) -> Envoy_Config_Endpoint_V3_ClusterLoadAssignment {
        var assignment = Envoy_Config_Endpoint_V3_ClusterLoadAssignment()
        assignment.clusterName = name
        var locality = Envoy_Config_Endpoint_V3_LocalityLbEndpoints()
        locality.lbEndpoints = endpoints.map { address, port in
            var endpoint = Envoy_Config_Endpoint_V3_LbEndpoint()
            endpoint.endpoint.address = socketAddress(address, port: port)
            endpoint.healthStatus = .healthy
            return endpoint
        }
        assignment.endpoints = endpoints.isEmpty ? [] : [locality]
        return assignment
    }

    private static func socketAddress(_ address: String, port: Int) -> Envoy_Config_Core_V3_Address {
        var socket = Envoy_Config_Core_V3_SocketAddress()
        socket.address = address
        socket.portValue = UInt32(port)
        var result = Envoy_Config_Core_V3_Address()
        result.socketAddress = socket
        return result
    }

    private static func protoDuration(_ duration: Duration) -> Google_Protobuf_Duration {
        let (seconds, attoseconds) = duration.components
        return Google_Protobuf_Duration(seconds: seconds, nanos: Int32(attoseconds / 1_000_000_000))
    }
}
