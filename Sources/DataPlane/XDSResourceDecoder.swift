import Configuration
import NIOCore
import SwiftProtobuf
import XDS

/// Turns Envoy's messages into the proxy's listeners, clusters and endpoints: those a control plane sends
/// over xDS, and those of a bootstrap file (``BootstrapConfig/parse(_:format:)``), which are the same
/// messages. One set of refusals, each naming the field's path (`listener "virtualOutbound".address` for
/// a resource from xDS, `static_resources.listeners[0].address` in a bootstrap); a refusal from xDS becomes
/// the NACK's message. Fields Capstan accepts without acting on them are kept with the listener or cluster
/// (``BootstrapConfig/Listener/fieldsNotActedOn``), so they are counted and never silent.
enum XDSResourceDecoder {
    static let tcpProxyFilter = "envoy.filters.network.tcp_proxy"
    static let tcpProxyType = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

    /// A cluster, and the EDS service whose assignment supplies its endpoints (nil for STATIC and
    /// ORIGINAL_DST).
    struct DiscoveredCluster: Equatable {
        var cluster: BootstrapConfig.Cluster
        var endpointService: String?
    }

    /// The message types an `Any` in Capstan's configuration may hold, so that JSON and YAML name them by
    /// type URL. Registered once, before the first bootstrap is read.
    static let messageTypesRegistered: Void = {
        let types: [any SwiftProtobuf.Message.Type] = [
            Envoy_Config_Listener_V3_Listener.self, Envoy_Config_Cluster_V3_Cluster.self,
            Envoy_Config_Endpoint_V3_ClusterLoadAssignment.self, Envoy_Extensions_TransportSockets_Tls_V3_Secret.self,
            Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.self,
            Envoy_Extensions_Filters_Listener_TlsInspector_V3_TlsInspector.self,
            Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext.self,
            Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext.self,
        ]
        for type in types { Google_Protobuf_Any.register(messageType: type) }
    }()

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

    /// A listener; `path` names it in errors (from xDS: `listener "NAME"`).
    static func listener(_ proto: Envoy_Config_Listener_V3_Listener, path given: String? = nil) throws(ConfigError) -> BootstrapConfig.Listener {
        let path = try resourcePath(given, kind: "listener", name: proto.name)
        let port = try listeningPort(proto.address, path: "\(path).address")
        if proto.hasBindToPort && !proto.bindToPort.value {
            throw ConfigError(path: "\(path).bind_to_port",
                              message: "false is not supported: Capstan binds every listener, and hands no connection from one listener to another")
        }
        var notActedOn = unknownFields(in: proto)
        if proto.hasUseOriginalDst {
            notActedOn.append(.init(path: "use_original_dst", reason: "every listener restores a redirected connection's original destination and handles the connection itself: none is handed to another listener"))
        }
        var chains: [BootstrapConfig.FilterChain] = []
        for (index, chain) in proto.filterChains.enumerated() {
            chains.append(try filterChain(chain, path: path, field: "filter_chains[\(index)]", notActedOn: &notActedOn))
        }
        let defaultChain = proto.hasDefaultFilterChain
            ? try filterChain(proto.defaultFilterChain, path: path, field: "default_filter_chain", notActedOn: &notActedOn) : nil
        var inspectsTLS = false
        for (index, filter) in proto.listenerFilters.enumerated() {
            let field = "listener_filters[\(index)]"
            let typeURL: String? = if case .typedConfig(let any)? = filter.configType { any.typeURL } else { nil }
            switch try ListenerFilter(name: filter.name, typeURL: typeURL, path: "\(path).\(field)") {
            case .tlsInspector: inspectsTLS = true
            case .originalDestination: break
            case .httpInspector:
                notActedOn.append(.init(path: field, reason: "Capstan does not detect HTTP: a chain matching on HTTP's application protocols takes only TLS connections that offer them by ALPN"))
            }
        }
        return BootstrapConfig.Listener(
            name: proto.name, port: port, direction: proto.trafficDirection == .inbound ? .inbound : .outbound,
            transparent: proto.hasTransparent && proto.transparent.value, chains: chains, defaultChain: defaultChain,
            listenerFilters: proto.listenerFilters.map(\.name), inspectsTLS: inspectsTLS, fieldsNotActedOn: notActedOn)
    }

    /// The listener filters Capstan knows, by name (`envoy.filters.listener.tls_inspector`) or by type
    /// (`….listener.tls_inspector.v3.TlsInspector`).
    enum ListenerFilter {
        /// Reads each connection's first bytes to tell TLS (and its ALPN) from plaintext.
        case tlsInspector
        /// What every Capstan listener does anyway: restores a redirected connection's destination.
        case originalDestination
        /// Accepted, not acted on: Capstan does not detect HTTP.
        case httpInspector

        init(name: String, typeURL: String?, path: String) throws(ConfigError) {
            let parts = (name.isEmpty ? typeURL ?? "" : name).split(separator: ".")
            switch name.isEmpty ? parts.dropLast(2).last : parts.last {
            case "tls_inspector"?: self = .tlsInspector
            case "original_dst"?: self = .originalDestination
            case "http_inspector"?: self = .httpInspector
            default:
                throw ConfigError(path: "\(path).name", message: "\"\(name.isEmpty ? typeURL ?? "" : name)\" is not supported (envoy.filters.listener.tls_inspector, original_dst, http_inspector)")
            }
        }
    }

    /// The chain at `field` of the listener at `path`.
    private static func filterChain(_ proto: Envoy_Config_Listener_V3_FilterChain, path listenerPath: String, field: String,
                                    notActedOn: inout [FieldNotActedOn]) throws(ConfigError) -> BootstrapConfig.FilterChain {
        let path = "\(listenerPath).\(field)"
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
        let filterPath = "\(path).filters[0]"
        guard filter.name == tcpProxyFilter || filter.typedConfig.typeURL == tcpProxyType else {
            throw ConfigError(path: filterPath, message: "\"\(filter.name)\" is not supported: Capstan has \(tcpProxyFilter) only")
        }
        guard filter.typedConfig.typeURL == tcpProxyType,
              let tcpProxy = try? Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy(serializedBytes: [UInt8](filter.typedConfig.value)) else {
            throw ConfigError(path: "\(filterPath).typed_config", message: "needs a \(tcpProxyType)")
        }
        let configPath = "\(filterPath).typed_config"
        let route: BootstrapConfig.TCPRoute
        switch tcpProxy.clusterSpecifier {
        case .cluster(let name)?:
            guard !name.isEmpty else { throw ConfigError(path: "\(configPath).cluster", message: "is empty") }
            route = .cluster(name)
        case .weightedClusters(let weighted)?:
            guard weighted.clusters.contains(where: { $0.weight > 0 }), weighted.clusters.allSatisfy({ !$0.name.isEmpty }) else {
                throw ConfigError(path: "\(configPath).weighted_clusters",
                                  message: "needs named clusters, at least one with a weight above 0")
            }
            route = .weighted(weighted.clusters.map { ($0.name, Int($0.weight)) })
        case nil:
            throw ConfigError(path: configPath, message: "needs cluster or weighted_clusters")
        }
        notActedOn += unknownFields(in: tcpProxy, under: "\(field).filters[0].typed_config")
        if !tcpProxy.statPrefix.isEmpty {
            notActedOn.append(.init(path: "\(field).filters[0].typed_config.stat_prefix",
                                    reason: "Capstan keeps no tcp.<stat_prefix>.* statistics (its cluster and listener statistics are Envoy's)"))
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

    /// The port a listener binds, on all addresses (one dual-stack socket).
    private static func listeningPort(_ address: Envoy_Config_Core_V3_Address, path: String) throws(ConfigError) -> Int {
        guard case .socketAddress(let socket)? = address.address else {
            throw ConfigError(path: path, message: "needs a socket_address: Capstan listens on TCP ports")
        }
        let port = try socketPort(socket, path: "\(path).socket_address")
        guard socket.address == "0.0.0.0" || socket.address == "::" else {
            let isAddress = (try? SocketAddress(ipAddress: socket.address, port: 0)) != nil
            throw ConfigError(path: "\(path).socket_address.address",
                              message: isAddress ? "\"\(socket.address)\" is not supported: Capstan listens on all addresses (0.0.0.0 or ::)"
                                                 : "\"\(socket.address)\" is not an IP address")
        }
        return port
    }

    /// A TCP `socket_address`'s port, 1-65535.
    private static func socketPort(_ socket: Envoy_Config_Core_V3_SocketAddress, path: String) throws(ConfigError) -> Int {
        guard socket.protocol == .tcp else {
            throw ConfigError(path: "\(path).protocol", message: "UDP is not supported: Capstan relays TCP")
        }
        guard case .portValue(let port)? = socket.portSpecifier else { throw ConfigError(path: "\(path).port_value", message: "is required") }
        guard (1...65535).contains(port) else {
            throw ConfigError(path: "\(path).port_value", message: "\(port) is out of range 1-65535")
        }
        return Int(port)
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

    /// A cluster; `path` names it in errors (from xDS: `cluster "NAME"`).
    static func cluster(_ proto: Envoy_Config_Cluster_V3_Cluster, path given: String? = nil) throws(ConfigError) -> DiscoveredCluster {
        let path = try resourcePath(given, kind: "cluster", name: proto.name)
        let loadBalancing: BootstrapConfig.Cluster.LoadBalancing
        switch proto.lbPolicy {
        case .roundRobin: loadBalancing = .roundRobin
        case .leastRequest: loadBalancing = .leastRequest
        case .random: loadBalancing = .random
        // Envoy requires it for ORIGINAL_DST: the connection picks the host.
        case .clusterProvided where proto.type == .originalDst: loadBalancing = .roundRobin
        default: throw ConfigError(path: "\(path).lb_policy", message: "\(spelling("lb_policy", in: proto)) is not supported (ROUND_ROBIN, LEAST_REQUEST, RANDOM)")
        }
        var notActedOn = unknownFields(in: proto)
        let maxConnections = try circuitBreaker(proto.circuitBreakers, path: path, notActedOn: &notActedOn)
        let discovery: BootstrapConfig.Cluster.Discovery
        var service: String?
        switch proto.type {
        case .static:
            guard proto.loadAssignment.endpoints.contains(where: { !$0.lbEndpoints.isEmpty }) else {
                throw ConfigError(path: "\(path).load_assignment", message: "a STATIC cluster needs at least one endpoint")
            }
            discovery = .endpoints(try endpoints(of: proto.loadAssignment, path: "\(path).load_assignment"))
        case .eds:
            if proto.edsClusterConfig.hasEdsConfig, case .apiConfigSource? = proto.edsClusterConfig.edsConfig.configSourceSpecifier {
                throw ConfigError(path: "\(path).eds_cluster_config.eds_config", message: "only ADS is supported")
            }
            // Like Envoy, an EDS cluster's own load_assignment is not used: its endpoints come from EDS.
            service = proto.edsClusterConfig.serviceName.isEmpty ? proto.name : proto.edsClusterConfig.serviceName
            discovery = .endpoints([])
        case .originalDst:
            if proto.hasLoadAssignment {
                throw ConfigError(path: "\(path).load_assignment", message: "an ORIGINAL_DST cluster has no endpoints: each connection goes where it was going")
            }
            discovery = .originalDestination
        default:
            throw ConfigError(path: "\(path).type", message: "\(spelling("type", in: proto)) is not supported (STATIC, EDS, ORIGINAL_DST)")
        }
        let socket = proto.hasTransportSocket
            ? try TransportSocketConfig.upstream(proto.transportSocket, path: "\(path).transport_socket") : nil
        let cluster = BootstrapConfig.Cluster(
            name: proto.name, discovery: discovery,
            connectTimeout: proto.hasConnectTimeout ? duration(proto.connectTimeout) : nil, maxConnections: maxConnections,
            loadBalancing: loadBalancing, transportSocket: socket, fieldsNotActedOn: notActedOn)
        return DiscoveredCluster(cluster: cluster, endpointService: service)
    }

    /// `max_connections` of the first threshold of priority DEFAULT, as Envoy takes it (later ones of the
    /// same priority are not used). Thresholds of priority HIGH apply to HTTP routes of high priority only;
    /// `tcp_proxy`'s connections are of default priority, in Envoy as here.
    /// (`path`: the cluster's.)
    private static func circuitBreaker(_ breakers: Envoy_Config_Cluster_V3_CircuitBreakers, path: String,
                                       notActedOn: inout [FieldNotActedOn]) throws(ConfigError) -> Int? {
        for (index, threshold) in breakers.thresholds.enumerated() {
            if case .UNRECOGNIZED(let number) = threshold.priority {
                throw ConfigError(path: "\(path).circuit_breakers.thresholds[\(index)].priority", message: "\(number) is not a routing priority (DEFAULT, HIGH)")
            }
        }
        guard let index = breakers.thresholds.firstIndex(where: { $0.priority == .default }) else { return nil }
        let threshold = breakers.thresholds[index]
        let field = "circuit_breakers.thresholds[\(index)]"
        for (limit, given) in [("max_pending_requests", threshold.hasMaxPendingRequests), ("max_requests", threshold.hasMaxRequests),
                               ("max_retries", threshold.hasMaxRetries)] where given {
            notActedOn.append(.init(path: "\(field).\(limit)", reason: "Capstan relays TCP connections: it has no requests, pending requests or retries to limit"))
        }
        guard threshold.hasMaxConnections else { return nil }
        guard threshold.maxConnections.value > 0 else {
            throw ConfigError(path: "\(path).\(field).max_connections", message: "must be above 0")
        }
        return Int(threshold.maxConnections.value)
    }

    // MARK: EDS

    /// An EDS service's endpoints, and the fields of its assignment Capstan does not act on (those outside
    /// its proto subset), which go with the clusters it feeds.
    struct EndpointAssignment: Equatable {
        var endpoints: [BootstrapConfig.Cluster.Endpoint]
        var fieldsNotActedOn: [FieldNotActedOn] = []
    }

    /// Assignments by EDS service name.
    static func assignments(_ resources: [Google_Protobuf_Any]) throws(ConfigError) -> [String: EndpointAssignment] {
        var assignments: [String: EndpointAssignment] = [:]
        for resource in resources {
            let proto: Envoy_Config_Endpoint_V3_ClusterLoadAssignment = try unpack(resource, as: .endpoint)
            guard !proto.clusterName.isEmpty else { throw ConfigError(path: "cluster_load_assignment", message: "needs a cluster_name") }
            assignments[proto.clusterName] = EndpointAssignment(
                endpoints: try endpoints(of: proto, path: "cluster_load_assignment \"\(proto.clusterName)\""),
                fieldsNotActedOn: unknownFields(in: proto, under: "load_assignment (EDS)"))
        }
        return assignments
    }

    /// The endpoints that take connections, chosen by priority and health as Envoy does while every
    /// priority is either healthy or not at all (Capstan knows health only from EDS, so the choice is made
    /// once, here): the priority (0 first) that has healthy endpoints (HEALTHY or UNKNOWN), and of it those;
    /// if no priority has one, the first that has DEGRADED ones, and of it those. UNHEALTHY, DRAINING and
    /// TIMEOUT endpoints take none. Envoy's partial spill-over to the next priority when a priority is
    /// partly unhealthy, and its panic threshold, are not done (README).
    private static func endpoints(of assignment: Envoy_Config_Endpoint_V3_ClusterLoadAssignment,
                                  path: String) throws(ConfigError) -> [BootstrapConfig.Cluster.Endpoint] {
        var healthy: [UInt32: [BootstrapConfig.Cluster.Endpoint]] = [:]
        var degraded: [UInt32: [BootstrapConfig.Cluster.Endpoint]] = [:]
        for (localityIndex, locality) in assignment.endpoints.enumerated() {
            for (index, lbEndpoint) in locality.lbEndpoints.enumerated() {
                let endpointPath = "\(path).endpoints[\(localityIndex)].lb_endpoints[\(index)]"
                guard case .endpoint(let inner)? = lbEndpoint.hostIdentifier else {
                    throw ConfigError(path: "\(endpointPath).endpoint", message: "is required")
                }
                let address = try endpointAddress(inner.address, path: "\(endpointPath).endpoint.address")
                var weight = 1
                if lbEndpoint.hasLoadBalancingWeight {
                    guard lbEndpoint.loadBalancingWeight.value >= 1 else {
                        throw ConfigError(path: "\(endpointPath).load_balancing_weight", message: "must be at least 1")
                    }
                    weight = Int(lbEndpoint.loadBalancingWeight.value)
                }
                let endpoint = BootstrapConfig.Cluster.Endpoint(address, weight: weight)
                switch lbEndpoint.healthStatus {
                case .unknown, .healthy: healthy[locality.priority, default: []].append(endpoint)
                case .degraded: degraded[locality.priority, default: []].append(endpoint)
                case .unhealthy, .draining, .timeout: continue
                case .UNRECOGNIZED(let number):
                    throw ConfigError(path: "\(endpointPath).health_status", message: "\(number) is not a health status")
                }
            }
        }
        let chosen = healthy.isEmpty ? degraded : healthy
        return chosen.min { $0.key < $1.key }?.value ?? []
    }

    /// An endpoint's address: an IP address and port, or a unix socket (`pipe`).
    static func endpointAddress(_ address: Envoy_Config_Core_V3_Address, path: String) throws(ConfigError) -> SocketAddress {
        switch address.address {
        case .socketAddress(let socket)?:
            let port = try socketPort(socket, path: "\(path).socket_address")
            do {
                return try SocketAddress(ipAddress: socket.address, port: port)
            } catch {
                throw ConfigError(path: "\(path).socket_address.address", message: "\"\(socket.address)\" is not an IP address")
            }
        case .pipe(let pipe)?:
            do {
                return try SocketAddress(unixDomainSocketPath: pipe.path)
            } catch {
                throw ConfigError(path: "\(path).pipe.path", message: "\"\(pipe.path)\" is not a usable unix socket path")
            }
        case nil:
            throw ConfigError(path: path, message: "needs a socket_address or a pipe")
        }
    }

    // MARK: Helpers

    /// The fields of `message` outside Capstan's proto subset (sent by a control plane that knows more of
    /// Envoy's API), as fields not acted on: counted and logged, never silently dropped.
    private static func unknownFields(in message: some SwiftProtobuf.Message, under prefix: String? = nil) -> [FieldNotActedOn] {
        UnknownFields.paths(in: message).map { path in
            .init(path: prefix.map { "\($0).\(path)" } ?? path, reason: UnknownFields.reason)
        }
    }

    /// The path errors name a resource by: the one given (in a bootstrap), or `KIND "NAME"` (from xDS).
    private static func resourcePath(_ given: String?, kind: String, name: String) throws(ConfigError) -> String {
        guard !name.isEmpty else {
            throw given.map { ConfigError(path: "\($0).name", message: "is required") } ?? ConfigError(path: kind, message: "needs a name")
        }
        return given ?? "\(kind) \"\(name)\""
    }

    /// How Envoy's API spells the value of `field` in `message` (`LOGICAL_DNS`), for refusals: as its JSON
    /// form writes it.
    static func spelling(_ field: String, in message: some SwiftProtobuf.Message) -> String {
        var options = JSONEncodingOptions()
        options.preserveProtoFieldNames = true
        guard let text = try? message.jsonString(options: options), let value = try? ConfigValue.parse(json: text)[field] else {
            return "the default"
        }
        return value.stringValue ?? value.jsonText()
    }

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

    static func duration(_ proto: Google_Protobuf_Duration) -> Duration {
        .seconds(proto.seconds) + .nanoseconds(Int64(proto.nanos))
    }
}
