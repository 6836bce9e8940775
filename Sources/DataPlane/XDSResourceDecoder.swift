import Configuration
import NIOCore
import SwiftProtobuf
import XDS

/// Turns xDS resources into the proxy's listeners, clusters and endpoints, checking them as the
/// bootstrap reader does. A refusal names the resource and the field, and becomes the NACK's message.
enum XDSResourceDecoder {
    static let tcpProxyFilter = "envoy.filters.network.tcp_proxy"
    static let tcpProxyType = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

    /// A cluster, and the EDS service whose assignment supplies its endpoints (nil for STATIC and
    /// ORIGINAL_DST).
    struct DiscoveredCluster: Equatable {
        var cluster: BootstrapConfig.Cluster
        var endpointService: String?
    }

    // MARK: LDS

    static func listeners(_ resources: [Google_Protobuf_Any]) throws(ConfigError) -> [BootstrapConfig.Listener] {
        var listeners: [BootstrapConfig.Listener] = []
        for resource in resources {
            let proto: Envoy_Config_Listener_V3_Listener = try unpack(resource, as: .listener)
            let listener = try listener(proto)
            if listeners.contains(where: { $0.name == listener.name }) {
                throw ConfigError(path: "listener \"\(listener.name)\"", message: "is sent twice")
            }
            if let other = listeners.first(where: { $0.port == listener.port }) {
                throw ConfigError(path: "listener \"\(listener.name)\".address",
                                  message: "port \(listener.port) is also listener \"\(other.name)\"'s")
            }
            listeners.append(listener)
        }
        return listeners
    }

    static func listener(_ proto: Envoy_Config_Listener_V3_Listener) throws(ConfigError) -> BootstrapConfig.Listener {
        guard !proto.name.isEmpty else { throw ConfigError(path: "listener", message: "needs a name") }
        let path = "listener \"\(proto.name)\""
        guard case .socketAddress(let socket)? = proto.address.address, case .portValue(let port)? = socket.portSpecifier,
              (1...65535).contains(port), (try? SocketAddress(ipAddress: socket.address, port: Int(port))) != nil else {
            throw ConfigError(path: "\(path).address", message: "needs a socket_address with an IP address and a port 1-65535")
        }
        var chains: [BootstrapConfig.FilterChain] = []
        for (index, chain) in proto.filterChains.enumerated() {
            chains.append(try filterChain(chain, path: "\(path).filter_chains[\(index)]"))
        }
        let defaultChain = proto.hasDefaultFilterChain
            ? try filterChain(proto.defaultFilterChain, path: "\(path).default_filter_chain") : nil
        var inspectsTLS = false
        for (index, filter) in proto.listenerFilters.enumerated() {
            let typeURL: String? = if case .typedConfig(let any)? = filter.configType { any.typeURL } else { nil }
            if try isTLSInspector(name: filter.name, typeURL: typeURL, path: "\(path).listener_filters[\(index)]") { inspectsTLS = true }
        }
        return BootstrapConfig.Listener(
            name: proto.name, port: Int(port), direction: proto.trafficDirection == .inbound ? .inbound : .outbound,
            transparent: proto.hasTransparent && proto.transparent.value, chains: chains, defaultChain: defaultChain,
            listenerFilters: proto.listenerFilters.map(\.name), inspectsTLS: inspectsTLS)
    }

    /// Whether a listener filter is `tls_inspector`. `original_dst` (what the capture listeners always do)
    /// and `http_inspector` (accepted, though Capstan does not detect HTTP: chains matching on its
    /// protocols never match plaintext) are known too; any other filter is refused.
    static func isTLSInspector(name: String, typeURL: String?, path: String) throws(ConfigError) -> Bool {
        // Named `envoy.filters.listener.tls_inspector`, or typed `….listener.tls_inspector.v3.TlsInspector`.
        let parts = (name.isEmpty ? typeURL ?? "" : name).split(separator: ".")
        switch name.isEmpty ? parts.dropLast(2).last : parts.last {
        case "tls_inspector"?: return true
        case "original_dst"?, "http_inspector"?: return false
        default:
            throw ConfigError(path: "\(path).name", message: "\"\(name.isEmpty ? typeURL ?? "" : name)\" is not supported (envoy.filters.listener.tls_inspector, original_dst, http_inspector)")
        }
    }

    private static func filterChain(_ proto: Envoy_Config_Listener_V3_FilterChain, path: String) throws(ConfigError) -> BootstrapConfig.FilterChain {
        let match = proto.filterChainMatch
        var port: Int?
        if match.hasDestinationPort {
            guard (1...65535).contains(match.destinationPort.value) else {
                throw ConfigError(path: "\(path).filter_chain_match.destination_port", message: "\(match.destinationPort.value) is not a port")
            }
            port = Int(match.destinationPort.value)
        }
        let prefixes = try match.prefixRanges.enumerated().map { index, range throws(ConfigError) in
            let length = range.hasPrefixLen ? Int(range.prefixLen.value) : nil
            guard let prefix = DestinationPrefix(address: range.addressPrefix, length: length) else {
                throw ConfigError(path: "\(path).filter_chain_match.prefix_ranges[\(index)]",
                                  message: "\"\(range.addressPrefix)/\(length.map(String.init) ?? "")\" is not an IP prefix")
            }
            return prefix
        }
        guard proto.filters.count == 1, let filter = proto.filters.first else {
            throw ConfigError(path: "\(path).filters", message: "needs exactly one filter, \(tcpProxyFilter) (the only network filter Capstan has)")
        }
        guard filter.name == tcpProxyFilter || filter.typedConfig.typeURL == tcpProxyType else {
            throw ConfigError(path: "\(path).filters[0]", message: "\"\(filter.name)\" is not supported: Capstan has \(tcpProxyFilter) only")
        }
        guard filter.typedConfig.typeURL == tcpProxyType,
              let tcpProxy = try? Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy(serializedBytes: [UInt8](filter.typedConfig.value)) else {
            throw ConfigError(path: "\(path).filters[0].typed_config", message: "needs a \(tcpProxyType)")
        }
        let route: BootstrapConfig.TCPRoute
        switch tcpProxy.clusterSpecifier {
        case .cluster(let name)?:
            guard !name.isEmpty else { throw ConfigError(path: "\(path).filters[0].typed_config.cluster", message: "is empty") }
            route = .cluster(name)
        case .weightedClusters(let weighted)?:
            guard weighted.clusters.contains(where: { $0.weight > 0 }), weighted.clusters.allSatisfy({ !$0.name.isEmpty }) else {
                throw ConfigError(path: "\(path).filters[0].typed_config.weighted_clusters",
                                  message: "needs named clusters, at least one with a weight above 0")
            }
            route = .weighted(weighted.clusters.map { ($0.name, Int($0.weight)) })
        case nil:
            throw ConfigError(path: "\(path).filters[0].typed_config", message: "needs cluster or weighted_clusters")
        }
        for (index, name) in match.applicationProtocols.enumerated() where name.isEmpty {
            throw ConfigError(path: "\(path).filter_chain_match.application_protocols[\(index)]", message: "is empty")
        }
        let socket = proto.hasTransportSocket
            ? try TransportSocketConfig.downstream(proto.transportSocket, path: "\(path).transport_socket") : nil
        return BootstrapConfig.FilterChain(
            name: proto.name, destinationPort: port, prefixes: prefixes, route: route,
            idleTimeout: tcpProxy.hasIdleTimeout ? duration(tcpProxy.idleTimeout) : nil,
            transportProtocol: match.transportProtocol.isEmpty ? nil : match.transportProtocol,
            applicationProtocols: match.applicationProtocols, transportSocket: socket)
    }

    // MARK: CDS

    static func clusters(_ resources: [Google_Protobuf_Any]) throws(ConfigError) -> [DiscoveredCluster] {
        var clusters: [DiscoveredCluster] = []
        for resource in resources {
            let proto: Envoy_Config_Cluster_V3_Cluster = try unpack(resource, as: .cluster)
            let cluster = try cluster(proto)
            if clusters.contains(where: { $0.cluster.name == cluster.cluster.name }) {
                throw ConfigError(path: "cluster \"\(cluster.cluster.name)\"", message: "is sent twice")
            }
            clusters.append(cluster)
        }
        return clusters
    }

    static func cluster(_ proto: Envoy_Config_Cluster_V3_Cluster) throws(ConfigError) -> DiscoveredCluster {
        guard !proto.name.isEmpty else { throw ConfigError(path: "cluster", message: "needs a name") }
        let path = "cluster \"\(proto.name)\""
        let loadBalancing: BootstrapConfig.Cluster.LoadBalancing
        switch proto.lbPolicy {
        case .roundRobin: loadBalancing = .roundRobin
        case .leastRequest: loadBalancing = .leastRequest
        case .random: loadBalancing = .random
        // Envoy requires it for ORIGINAL_DST: the connection picks the host.
        case .clusterProvided where proto.type == .originalDst: loadBalancing = .roundRobin
        default: throw ConfigError(path: "\(path).lb_policy", message: "\(proto.lbPolicy) is not supported (ROUND_ROBIN, LEAST_REQUEST, RANDOM)")
        }
        var maxConnections: Int?
        for threshold in proto.circuitBreakers.thresholds where threshold.priority == .default && threshold.hasMaxConnections {
            guard threshold.maxConnections.value > 0 else {
                throw ConfigError(path: "\(path).circuit_breakers.thresholds.max_connections", message: "must be above 0")
            }
            maxConnections = Int(threshold.maxConnections.value)
        }
        let discovery: BootstrapConfig.Cluster.Discovery
        var service: String?
        switch proto.type {
        case .static:
            let endpoints = try endpoints(of: proto.loadAssignment, path: "\(path).load_assignment")
            guard !endpoints.isEmpty else {
                throw ConfigError(path: "\(path).load_assignment", message: "a STATIC cluster needs at least one endpoint")
            }
            discovery = .endpoints(endpoints)
        case .eds:
            if proto.edsClusterConfig.hasEdsConfig, case .apiConfigSource? = proto.edsClusterConfig.edsConfig.configSourceSpecifier {
                throw ConfigError(path: "\(path).eds_cluster_config.eds_config", message: "only ADS is supported")
            }
            service = proto.edsClusterConfig.serviceName.isEmpty ? proto.name : proto.edsClusterConfig.serviceName
            discovery = .endpoints([])
        case .originalDst:
            discovery = .originalDestination
        default:
            throw ConfigError(path: "\(path).type", message: "\(proto.type) is not supported (STATIC, EDS, ORIGINAL_DST)")
        }
        let socket = proto.hasTransportSocket
            ? try TransportSocketConfig.upstream(proto.transportSocket, path: "\(path).transport_socket") : nil
        let cluster = BootstrapConfig.Cluster(
            name: proto.name, discovery: discovery,
            connectTimeout: proto.hasConnectTimeout ? duration(proto.connectTimeout) : nil, maxConnections: maxConnections,
            loadBalancing: loadBalancing, transportSocket: socket)
        return DiscoveredCluster(cluster: cluster, endpointService: service)
    }

    // MARK: EDS

    /// Endpoints by EDS service name.
    static func assignments(_ resources: [Google_Protobuf_Any]) throws(ConfigError) -> [String: [SocketAddress]] {
        var assignments: [String: [SocketAddress]] = [:]
        for resource in resources {
            let proto: Envoy_Config_Endpoint_V3_ClusterLoadAssignment = try unpack(resource, as: .endpoint)
            guard !proto.clusterName.isEmpty else { throw ConfigError(path: "cluster_load_assignment", message: "needs a cluster_name") }
            assignments[proto.clusterName] = try endpoints(of: proto, path: "cluster_load_assignment \"\(proto.clusterName)\"")
        }
        return assignments
    }

    /// The endpoints that may take traffic: those not reported unhealthy, draining or timed out.
    private static func endpoints(of assignment: Envoy_Config_Endpoint_V3_ClusterLoadAssignment, path: String) throws(ConfigError) -> [SocketAddress] {
        var endpoints: [SocketAddress] = []
        for (localityIndex, locality) in assignment.endpoints.enumerated() {
            for (index, endpoint) in locality.lbEndpoints.enumerated() {
                let endpointPath = "\(path).endpoints[\(localityIndex)].lb_endpoints[\(index)]"
                guard case .endpoint(let inner)? = endpoint.hostIdentifier, case .socketAddress(let socket)? = inner.address.address,
                      case .portValue(let port)? = socket.portSpecifier, (1...65535).contains(port),
                      let address = try? SocketAddress(ipAddress: socket.address, port: Int(port)) else {
                    throw ConfigError(path: "\(endpointPath).endpoint.address", message: "needs a socket_address with an IP address and a port 1-65535")
                }
                switch endpoint.healthStatus {
                case .unhealthy, .draining, .timeout: continue
                default: endpoints.append(address)
                }
            }
        }
        return endpoints
    }

    // MARK: Helpers

    private static func unpack<M: SwiftProtobuf.Message>(_ any: Google_Protobuf_Any, as type: XDSResourceType) throws(ConfigError) -> M {
        guard any.typeURL == type.typeURL else {
            throw ConfigError(path: type.service, message: "resource of type \(any.typeURL) in a \(type.service) response")
        }
        do {
            return try M(serializedBytes: [UInt8](any.value))
        } catch {
            throw ConfigError(path: type.service, message: "a resource does not decode as \(M.protoMessageName): \(error)")
        }
    }

    private static func duration(_ proto: Google_Protobuf_Duration) -> Duration {
        .seconds(proto.seconds) + .nanoseconds(Int64(proto.nanos))
    }
}
