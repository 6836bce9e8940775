import Authorization
import Configuration
import HTTPProxy
import NIOCore
import Routing
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
    static let httpConnectionManagerFilter = "envoy.filters.network.http_connection_manager"
    static let httpConnectionManagerType = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    static let sniClusterFilter = "envoy.filters.network.sni_cluster"
    static let sniClusterTypeName = "envoy.extensions.filters.network.sni_cluster.v3.SniCluster"
    /// The key of `typed_extension_protocol_options` that says how a cluster speaks HTTP.
    static let upstreamHTTPOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

    /// A cluster, and the EDS service whose assignment supplies its endpoints (nil for STATIC and
    /// ORIGINAL_DST).
    struct DiscoveredCluster: Equatable {
        var cluster: BootstrapConfig.Cluster
        var endpointService: String?
        /// STRICT_DNS and LOGICAL_DNS: the names the proxy looks up for the cluster's hosts.
        var dns: DNSClusterConfig? = nil
    }

    /// The message types an `Any` in Capstan's configuration may hold, so that JSON and YAML name them by
    /// type URL. Registered once, before the first bootstrap is read.
    static let messageTypesRegistered: Void = {
        let types: [any SwiftProtobuf.Message.Type] = [
            Envoy_Config_Listener_V3_Listener.self, Envoy_Config_Cluster_V3_Cluster.self,
            Envoy_Config_Endpoint_V3_ClusterLoadAssignment.self, Envoy_Extensions_TransportSockets_Tls_V3_Secret.self,
            Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.self,
            Envoy_Extensions_Filters_Network_SniCluster_V3_SniCluster.self,
            Envoy_Extensions_Filters_Listener_TlsInspector_V3_TlsInspector.self,
            Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext.self,
            Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext.self,
            Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager.self,
            Envoy_Extensions_Filters_Http_Router_V3_Router.self, Envoy_Extensions_Filters_Http_Fault_V3_HTTPFault.self,
            Envoy_Extensions_Filters_Http_Rbac_V3_RBAC.self, Envoy_Extensions_Filters_Network_Rbac_V3_RBAC.self,
            Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtAuthentication.self, Envoy_Extensions_Filters_Http_ExtAuthz_V3_ExtAuthz.self,
            Envoy_Extensions_Filters_Listener_HttpInspector_V3_HttpInspector.self,
            Envoy_Extensions_Filters_Listener_OriginalDst_V3_OriginalDst.self,
            Envoy_Extensions_Upstreams_Http_V3_HttpProtocolOptions.self,
            Envoy_Config_Route_V3_RouteConfiguration.self,
            Udpa_Type_V1_TypedStruct.self, Xds_Type_V3_TypedStruct.self,
            Istio_Envoy_Config_Filter_Http_Alpn_V2alpha1_FilterConfig.self,
            Envoy_Extensions_AccessLoggers_File_V3_FileAccessLog.self,
            Envoy_Extensions_AccessLoggers_Stream_V3_StdoutAccessLog.self,
            Envoy_Extensions_AccessLoggers_Stream_V3_StderrAccessLog.self,
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
            try checkAddress(of: listener, against: listeners, path: "listener \"\(listener.name)\".address")
            listeners.append(listener)
        }
        return listeners
    }

    /// An LDS response one listener at a time, as Envoy takes it: the listeners that decode, and the
    /// refusal of each that does not (named, so that its previous version can keep serving). A resource
    /// that is not a listener at all refuses the whole response.
    static func listenersOneByOne(_ resources: [Google_Protobuf_Any]) throws(ConfigError)
        -> (accepted: [BootstrapConfig.Listener], refused: [(name: String, error: ConfigError)]) {
        var accepted: [BootstrapConfig.Listener] = []
        var refused: [(name: String, error: ConfigError)] = []
        for resource in resources {
            let proto: Envoy_Config_Listener_V3_Listener = try unpack(resource, as: .listener)
            do throws(ConfigError) {
                let listener = try listener(proto)
                if accepted.contains(where: { $0.name == listener.name }) {
                    throw ConfigError(path: "listener \"\(listener.name)\"", message: "is sent twice")
                }
                try checkAddress(of: listener, against: accepted, path: "listener \"\(listener.name)\".address")
                accepted.append(listener)
            } catch {
                refused.append((proto.name, error))
            }
        }
        return (accepted, refused)
    }

    /// Refuses a listener whose address another of `listeners` has: two listeners that bind may not share
    /// a port (each binds all addresses), and two that do not bind may not share an address and port
    /// (a connection handed off could go to either).
    static func checkAddress(of listener: BootstrapConfig.Listener, against listeners: [BootstrapConfig.Listener],
                             path: String) throws(ConfigError) {
        if listener.bindsToPort, let other = listeners.first(where: { $0.bindsToPort && $0.port == listener.port }) {
            throw ConfigError(path: path, message: "port \(listener.port) is also listener \"\(other.name)\"'s")
        }
        if !listener.bindsToPort,
           let other = listeners.first(where: { !$0.bindsToPort && $0.port == listener.port && $0.host == listener.host }) {
            throw ConfigError(path: path, message: "\(listener.host):\(listener.port) is also listener \"\(other.name)\"'s (neither binds, so a connection handed off could go to either)")
        }
    }

    /// A listener; `path` names it in errors (from xDS: `listener "NAME"`).
    static func listener(_ proto: Envoy_Config_Listener_V3_Listener, path given: String? = nil) throws(ConfigError) -> BootstrapConfig.Listener {
        let path = try resourcePath(given, kind: "listener", name: proto.name)
        let binds = !proto.hasBindToPort || proto.bindToPort.value
        let (host, port) = try listenerAddress(proto.address, binds: binds, path: "\(path).address")
        var notActedOn = unknownFields(in: proto)
        var chains: [BootstrapConfig.FilterChain] = []
        for (index, chain) in proto.filterChains.enumerated() {
            chains.append(try filterChain(chain, path: path, field: "filter_chains[\(index)]", notActedOn: &notActedOn))
        }
        let defaultChain = proto.hasDefaultFilterChain
            ? try filterChain(proto.defaultFilterChain, path: path, field: "default_filter_chain", notActedOn: &notActedOn) : nil
        var inspectsTLS = false
        var inspectsHTTP = false
        for (index, filter) in proto.listenerFilters.enumerated() {
            let field = "listener_filters[\(index)]"
            let typeURL: String? = if case .typedConfig(let any)? = filter.configType { any.typeURL } else { nil }
            switch try ListenerFilter(name: filter.name, typeURL: typeURL, path: "\(path).\(field)") {
            case .tlsInspector: inspectsTLS = true
            case .originalDestination: break
            case .httpInspector: inspectsHTTP = true
            }
        }
        return BootstrapConfig.Listener(
            name: proto.name, port: port, direction: proto.trafficDirection == .inbound ? .inbound : .outbound,
            transparent: proto.hasTransparent && proto.transparent.value, chains: chains, defaultChain: defaultChain,
            listenerFilters: proto.listenerFilters.map(\.name), inspectsTLS: inspectsTLS, inspectsHTTP: inspectsHTTP,
            fieldsNotActedOn: notActedOn, host: host, bindsToPort: binds,
            usesOriginalDestination: proto.hasUseOriginalDst && proto.useOriginalDst.value)
    }

    /// The listener filters Capstan knows, by name (`envoy.filters.listener.tls_inspector`) or by type
    /// (`….listener.tls_inspector.v3.TlsInspector`).
    enum ListenerFilter {
        /// Reads each connection's first bytes to tell TLS (and its ALPN) from plaintext.
        case tlsInspector
        /// What every Capstan listener does anyway: restores a redirected connection's destination.
        case originalDestination
        /// Reads a plaintext connection's first bytes to tell HTTP/1.x and HTTP/2 (`h2c`) apart.
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
        // A filter chain's range without `prefix_len` is the one address (RBAC's, as Envoy reads it there, is 0).
        let prefixes = try match.prefixRanges.enumerated().map { index, range throws(ConfigError) in
            try CIDRRange(address: range.addressPrefix, length: range.hasPrefixLen ? Int(range.prefixLen.value) : nil,
                          path: "\(path).filter_chain_match.prefix_ranges[\(index)]")
        }
        let (action, idleTimeout, authorization, clusterFromServerName) = try networkFilters(proto.filters, path: path, field: field,
                                                                                             notActedOn: &notActedOn)
        for (index, name) in match.applicationProtocols.enumerated() where name.isEmpty {
            throw ConfigError(path: "\(path).filter_chain_match.application_protocols[\(index)]", message: "is empty")
        }
        var serverNames = BootstrapConfig.ServerNames()
        for (index, name) in match.serverNames.enumerated() {
            let lowered = name.lowercased()
            if lowered.hasPrefix("*.") && lowered.count > 2 && !lowered.dropFirst(2).contains("*") {
                serverNames.wildcardSuffixes.insert(String(lowered.dropFirst(2)))
            } else if !lowered.isEmpty && !lowered.contains("*") {
                serverNames.exact.insert(lowered)
            } else {
                throw ConfigError(path: "\(path).filter_chain_match.server_names[\(index)]",
                                  message: "\"\(name)\" is not a server name (a host name, or *. before one)")
            }
        }
        let socket = proto.hasTransportSocket
            ? try TransportSocketConfig.downstream(proto.transportSocket, path: "\(path).transport_socket") : nil
        return BootstrapConfig.FilterChain(
            name: proto.name, destinationPort: port, prefixes: prefixes, action: action, idleTimeout: idleTimeout,
            terminalFilterIndex: proto.filters.count - 1,
            transportProtocol: match.transportProtocol.isEmpty ? nil : match.transportProtocol,
            applicationProtocols: match.applicationProtocols, serverNames: serverNames, transportSocket: socket,
            authorization: authorization, clusterFromServerName: clusterFromServerName)
    }

    /// Network filters istiod puts before a chain's terminal filter that Capstan accepts without acting
    /// on them, by configuration type (after a TypedStruct), with why.
    static let leadingNetworkFilters: [String: String] = [
        // istio.metadata_exchange
        "envoy.tcp.metadataexchange.config.MetadataExchange":
            "Capstan exchanges no Istio peer metadata on connections (the istio-peer-exchange protocol): peers are known by their mTLS identities only",
        // istio.stats
        "stats.PluginConfig":
            "Capstan counts Istio's TCP connection metrics on every connection itself; this filter's configuration (metrics, dimensions) is not read",
        // istio_authn
        "io.istio.network.authn.Config":
            "Capstan takes each TLS connection's verified peer identity itself; this filter's configuration is not read",
    ]

    /// A chain's `filters`: zero or more leading filters, `envoy.filters.network.rbac`,
    /// `envoy.filters.network.ext_authz` and `envoy.filters.network.sni_cluster` (acted on) or
    /// those Capstan counts as not acted on (``leadingNetworkFilters``), then exactly one terminal
    /// filter, `tcp_proxy` (the connection's bytes relayed to a cluster, with its idle timeout) or
    /// `http_connection_manager` (HTTP served on it). `path` is the chain's, `field` its place in the
    /// listener, for the fields not acted on. The last value says whether `sni_cluster` names the
    /// `tcp_proxy`'s cluster by the connection's SNI.
    private static func networkFilters(_ filters: [Envoy_Config_Listener_V3_Filter], path: String, field: String,
                                       notActedOn: inout [FieldNotActedOn]) throws(ConfigError)
        -> (BootstrapConfig.ChainAction, Duration?, NetworkAuthorization, Bool) {
        var authorization = NetworkAuthorization()
        // `sni_cluster`'s place among the filters, once met.
        var serverNameCluster: Int?
        let terminals = "\(tcpProxyFilter) or \(httpConnectionManagerFilter)"
        guard !filters.isEmpty else {
            throw ConfigError(path: "\(path).filters", message: "needs a terminal filter, \(terminals)")
        }
        for (index, filter) in filters.enumerated() {
            let filterPath = "\(path).filters[\(index)]"
            let typeURL = filter.configType == nil ? nil
                : try HTTPFilterRegistry.configurationTypeURL(filter.typedConfig, path: "\(filterPath).typed_config")
            let type = typeURL.map(HTTPFilterRegistry.typeName) ?? ""
            let terminal = typeURL == tcpProxyType || typeURL == httpConnectionManagerType
                || filter.name == tcpProxyFilter || filter.name == httpConnectionManagerFilter
            let description = type.isEmpty ? "\"\(filter.name)\"" : "\"\(filter.name)\" (\(type))"
            guard index == filters.count - 1 else {
                if terminal {
                    throw ConfigError(path: filterPath, message: "\(description) must be the chain's last filter")
                }
                if type == NetworkAuthorization.typeName {
                    try authorization.add(filter.typedConfig, path: "\(filterPath).typed_config",
                                          field: "\(field).filters[\(index)].typed_config", notActedOn: &notActedOn)
                } else if type == NetworkExternalAuthorization.typeName {
                    try authorization.addExternalAuthorization(filter.typedConfig, path: "\(filterPath).typed_config",
                                                               field: "\(field).filters[\(index)].typed_config", notActedOn: &notActedOn)
                } else if type == sniClusterTypeName || (typeURL == nil && filter.name == sniClusterFilter) {
                    // An empty message: istiod before 1.19 sent it without typed_config, by name only.
                    if filter.configType != nil, HTTPFilterRegistry.typeName(filter.typedConfig.typeURL) == sniClusterTypeName {
                        guard let config = try? Envoy_Extensions_Filters_Network_SniCluster_V3_SniCluster(unpackingAny: filter.typedConfig) else {
                            throw ConfigError(path: "\(filterPath).typed_config", message: "does not decode as \(sniClusterTypeName)")
                        }
                        notActedOn += unknownFields(in: config, under: "\(field).filters[\(index)].typed_config")
                    }
                    serverNameCluster = index
                } else if let reason = leadingNetworkFilters[type] {
                    notActedOn.append(.init(path: "\(field).filters[\(index)]", reason: "\(description): \(reason)"))
                } else {
                    throw ConfigError(path: filterPath, message: "\(description) is not supported: before the terminal filter Capstan takes envoy.filters.network.rbac, envoy.filters.network.ext_authz and envoy.filters.network.sni_cluster, and istio.metadata_exchange, istio.stats and istio_authn, not acted on")
                }
                continue
            }
            let configPath = "\(filterPath).typed_config"
            let configField = "\(field).filters[\(index)].typed_config"
            if typeURL == httpConnectionManagerType || (typeURL == nil && filter.name == httpConnectionManagerFilter) {
                guard typeURL != nil, let proto = try? Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager(unpackingAny: filter.typedConfig) else {
                    throw ConfigError(path: configPath, message: "needs a \(httpConnectionManagerType)")
                }
                let manager = try HTTPConnectionManagerConfig(proto, path: configPath)
                notActedOn += manager.fieldsNotActedOn.map { FieldNotActedOn(path: "\(configField).\($0.path)", reason: $0.reason) }
                if let serverNameCluster {
                    // As in Envoy: the filter state it sets is tcp_proxy's; a connection manager routes each request itself.
                    notActedOn.append(.init(path: "\(field).filters[\(serverNameCluster)]",
                                            reason: "\(sniClusterFilter) names tcp_proxy's cluster; before an HTTP connection manager it changes nothing"))
                }
                return (.http(manager), nil, authorization, false)
            }
            guard terminal else {
                throw ConfigError(path: filterPath, message: "\(description) is not supported: a chain ends in \(terminals)")
            }
            guard typeURL == tcpProxyType,
                  let tcpProxy = try? Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy(unpackingAny: filter.typedConfig) else {
                throw ConfigError(path: configPath, message: "needs a \(tcpProxyType)")
            }
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
            // Inside access_log (its filter's contents), what is outside the subset goes with the entry's listing.
            notActedOn += unknownFields(in: tcpProxy, under: configField).filter { !$0.path.hasPrefix("\(configField).#5.") }
            for (index, log) in tcpProxy.accessLog.enumerated() {
                notActedOn.append(.init(path: "\(configField).access_log[\(index)]",
                                        reason: "Capstan writes no TCP access log yet (\"\(log.name)\"): only HTTP connection managers' access logs are written"))
            }
            if !tcpProxy.statPrefix.isEmpty {
                notActedOn.append(.init(path: "\(configField).stat_prefix",
                                        reason: "Capstan keeps no tcp.<stat_prefix>.* statistics (its cluster and listener statistics are Envoy's)"))
            }
            return (.relay(route), tcpProxy.hasIdleTimeout ? duration(tcpProxy.idleTimeout) : nil, authorization, serverNameCluster != nil)
        }
        // The loop returns at the last filter.
        throw ConfigError(path: "\(path).filters", message: "needs a terminal filter, \(terminals)")
    }

    /// A listener's address and port. One that binds listens on all addresses (one dual-stack socket), so
    /// its address is 0.0.0.0 or ::; one that does not bind (`bind_to_port: false`) may have any IP
    /// address, by which connections are handed to it.
    private static func listenerAddress(_ address: Envoy_Config_Core_V3_Address, binds: Bool,
                                        path: String) throws(ConfigError) -> (host: String, port: Int) {
        guard case .socketAddress(let socket)? = address.address else {
            throw ConfigError(path: path, message: "needs a socket_address: Capstan listens on TCP ports")
        }
        let port = try socketPort(socket, path: "\(path).socket_address")
        guard let parsed = try? SocketAddress(ipAddress: socket.address, port: port), let host = parsed.unmapped.ipAddress else {
            throw ConfigError(path: "\(path).socket_address.address", message: "\"\(socket.address)\" is not an IP address")
        }
        guard !binds || socket.address == "0.0.0.0" || socket.address == "::" else {
            throw ConfigError(path: "\(path).socket_address.address",
                              message: "\"\(socket.address)\" is not supported for a listener that binds: Capstan listens on all addresses (0.0.0.0 or ::)")
        }
        return (socket.address == "::" ? "::" : host, port)
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
        case .ringHash: loadBalancing = try ringHash(proto, path: path)
        case .maglev: loadBalancing = try maglev(proto, path: path)
        // Envoy requires it for ORIGINAL_DST: the connection picks the host.
        case .clusterProvided where proto.type == .originalDst: loadBalancing = .roundRobin
        default: throw ConfigError(path: "\(path).lb_policy", message: "\(spelling("lb_policy", in: proto)) is not supported (ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV)")
        }
        if case .ringHashLbConfig? = proto.lbConfig, proto.lbPolicy != .ringHash {
            throw ConfigError(path: "\(path).ring_hash_lb_config", message: "is for lb_policy RING_HASH")
        }
        if case .maglevLbConfig? = proto.lbConfig, proto.lbPolicy != .maglev {
            throw ConfigError(path: "\(path).maglev_lb_config", message: "is for lb_policy MAGLEV")
        }
        var slowStart: BootstrapConfig.Cluster.SlowStart?
        var slowStartConfig: (field: String, config: Envoy_Config_Cluster_V3_Cluster.SlowStartConfig)?
        switch proto.lbConfig {
        case .roundRobinLbConfig(let config)?:
            guard proto.lbPolicy == .roundRobin else {
                throw ConfigError(path: "\(path).round_robin_lb_config", message: "is for lb_policy ROUND_ROBIN")
            }
            if config.hasSlowStartConfig { slowStartConfig = ("round_robin_lb_config.slow_start_config", config.slowStartConfig) }
        case .leastRequestLbConfig(let config)?:
            guard proto.lbPolicy == .leastRequest else {
                throw ConfigError(path: "\(path).least_request_lb_config", message: "is for lb_policy LEAST_REQUEST")
            }
            if config.hasSlowStartConfig { slowStartConfig = ("least_request_lb_config.slow_start_config", config.slowStartConfig) }
        default:
            break
        }
        var notActedOn = unknownFields(in: proto)
        if let given = slowStartConfig {
            slowStart = try .init(given.config, path: "\(path).\(given.field)")
            // istiod's warmup sets one ("("): Capstan has no runtime, so the default value applies.
            if !given.config.aggression.runtimeKey.isEmpty {
                notActedOn.append(.init(path: "\(given.field).aggression.runtime_key", reason: "Capstan has no runtime: default_value applies"))
            }
        }
        if proto.type != .strictDns && proto.type != .logicalDns {
            for (set, field) in [(proto.hasDnsRefreshRate, "dns_refresh_rate"), (proto.respectDnsTtl, "respect_dns_ttl"),
                                 (proto.dnsLookupFamily != .auto, "dns_lookup_family"), (proto.hasTypedDnsResolverConfig, "typed_dns_resolver_config")] where set {
                notActedOn.append(.init(path: field, reason: "only STRICT_DNS and LOGICAL_DNS clusters look names up"))
            }
        }
        let circuitBreakers = try circuitBreakers(proto.circuitBreakers, path: path)
        let discovery: BootstrapConfig.Cluster.Discovery
        var service: String?
        var dns: DNSClusterConfig?
        var dnsNotActedOn: [FieldNotActedOn] = []
        var staticPlacement: EndpointAssignment?
        switch proto.type {
        case .static:
            // Without endpoints (istiod's BlackHoleCluster) every connection to it fails, as in Envoy.
            staticPlacement = try placement(of: proto.loadAssignment, path: "\(path).load_assignment")
            discovery = .endpoints(staticPlacement!.endpoints)
            dnsNotActedOn = localityNotActedOn(proto.loadAssignment, under: "load_assignment")
        case .strictDns, .logicalDns:
            // The hosts come from the proxy's own lookups; until the first, none.
            dns = try DNSClusterConfig(proto, path: path, notActedOn: &dnsNotActedOn)
            discovery = .endpoints([])
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
            throw ConfigError(path: "\(path).type", message: "\(spelling("type", in: proto)) is not supported (STATIC, STRICT_DNS, LOGICAL_DNS, EDS, ORIGINAL_DST)")
        }
        let socket = proto.hasTransportSocket
            ? try TransportSocketConfig.upstream(proto.transportSocket, path: "\(path).transport_socket") : nil
        var matches: [BootstrapConfig.Cluster.TransportSocketMatch] = []
        for (index, match) in proto.transportSocketMatches.enumerated() {
            let matchPath = "\(path).transport_socket_matches[\(index)]"
            guard match.hasTransportSocket else {
                throw ConfigError(path: "\(matchPath).transport_socket", message: "is required")
            }
            matches.append(.init(name: match.name, match: match.match.fields,
                                 transportSocket: try TransportSocketConfig.upstream(match.transportSocket, path: "\(matchPath).transport_socket")))
        }
        var cluster = BootstrapConfig.Cluster(
            name: proto.name, discovery: discovery,
            connectTimeout: proto.hasConnectTimeout ? duration(proto.connectTimeout) : nil, circuitBreakers: circuitBreakers,
            loadBalancing: loadBalancing, transportSocket: socket, fieldsNotActedOn: notActedOn + dnsNotActedOn, transportSocketMatches: matches)
        cluster.slowStart = slowStart
        if let staticPlacement {
            cluster.localities = staticPlacement.localities
            cluster.overprovisioningFactor = staticPlacement.overprovisioningFactor
        }
        if proto.hasCommonLbConfig, case .localityWeightedLbConfig? = proto.commonLbConfig.localityConfigSpecifier {
            cluster.localityWeighted = true
        }
        try protocolOptions(proto.typedExtensionProtocolOptions, path: path, into: &cluster)
        cluster.healthCheck = try HealthCheckConfig.decode(proto.healthChecks, path: path, notActedOn: &cluster.fieldsNotActedOn)
        try outlierDetection(of: proto, path: path, into: &cluster)
        // Its other fields are outside the subset, listed with the cluster's unknown fields.
        if proto.upstreamConnectionOptions.hasTcpKeepalive {
            cluster.tcpKeepalive = try TCPKeepalive.decode(proto.upstreamConnectionOptions.tcpKeepalive,
                                                           path: "\(path).upstream_connection_options.tcp_keepalive")
        }
        if proto.hasUpstreamBindConfig {
            cluster.bindSource = try bindSource(proto.upstreamBindConfig, path: "\(path).upstream_bind_config")
        }
        cluster.serviceHost = istioServiceHost(proto.metadata, notActedOn: &cluster.fieldsNotActedOn)
        if case .stringValue(let override)? = proto.metadata.filterMetadata["istio"]?.fields["alpn_override"]?.kind, override == "false" {
            cluster.allowsALPNOverride = false
        }
        return DiscoveredCluster(cluster: cluster, endpointService: service, dns: dns)
    }

    /// An assignment's fields that nothing of Capstan's reads: listed, once each. (Localities, their
    /// weights and priorities are acted on: see ``PriorityLoad``.)
    static func localityNotActedOn(_ assignment: Envoy_Config_Endpoint_V3_ClusterLoadAssignment, under prefix: String) -> [FieldNotActedOn] {
        var fields: [FieldNotActedOn] = []
        if assignment.endpoints.contains(where: { $0.lbEndpoints.contains { !$0.endpoint.hostname.isEmpty } }) {
            fields.append(.init(path: "\(prefix).endpoints[*].lb_endpoints[*].endpoint.hostname",
                                reason: "a host's name is not used (no auto host rewrite, no health check host from it)"))
        }
        return fields
    }

    /// `upstream_bind_config`'s source: an IP address, with port 0 (any) or a fixed one.
    private static func bindSource(_ config: Envoy_Config_Core_V3_BindConfig, path: String) throws(ConfigError) -> SocketAddress {
        guard config.hasSourceAddress else { throw ConfigError(path: "\(path).source_address", message: "is required") }
        let socket = config.sourceAddress
        guard socket.protocol == .tcp else {
            throw ConfigError(path: "\(path).source_address.protocol", message: "UDP is not supported: Capstan relays TCP")
        }
        let port: Int
        switch socket.portSpecifier {
        case .portValue(let value)? where value <= 65535: port = Int(value)
        case .portValue(let value)?: throw ConfigError(path: "\(path).source_address.port_value", message: "\(value) is out of range 0-65535")
        case nil: port = 0
        }
        do {
            return try SocketAddress(ipAddress: socket.address, port: port)
        } catch {
            throw ConfigError(path: "\(path).source_address.address", message: "\"\(socket.address)\" is not an IP address")
        }
    }

    /// RING_HASH with Envoy's bounds: 1,024 points at least, 8M at most (each at most 8M, the first no
    /// more than the second); XX_HASH only.
    private static func ringHash(_ proto: Envoy_Config_Cluster_V3_Cluster, path: String) throws(ConfigError) -> BootstrapConfig.Cluster.LoadBalancing {
        let config = proto.ringHashLbConfig
        let field = "\(path).ring_hash_lb_config"
        let limit: UInt64 = 8_388_608
        let minimum = config.hasMinimumRingSize ? config.minimumRingSize.value : 1024
        let maximum = config.hasMaximumRingSize ? config.maximumRingSize.value : limit
        guard (1...limit).contains(minimum) else { throw ConfigError(path: "\(field).minimum_ring_size", message: "\(minimum) is not in 1-\(limit)") }
        guard (1...limit).contains(maximum) else { throw ConfigError(path: "\(field).maximum_ring_size", message: "\(maximum) is not in 1-\(limit)") }
        guard minimum <= maximum else {
            throw ConfigError(path: "\(field).minimum_ring_size", message: "\(minimum) is above maximum_ring_size (\(maximum))")
        }
        guard config.hashFunction == .xxHash else {
            throw ConfigError(path: "\(field).hash_function", message: "\(spelling("hash_function", in: config)) is not supported (XX_HASH)")
        }
        return .ringHash(minimumSize: Int(minimum), maximumSize: Int(maximum))
    }

    /// MAGLEV with Envoy's bounds: a prime table size up to 5,000,011 (65,537 by default).
    private static func maglev(_ proto: Envoy_Config_Cluster_V3_Cluster, path: String) throws(ConfigError) -> BootstrapConfig.Cluster.LoadBalancing {
        let size = proto.maglevLbConfig.hasTableSize ? proto.maglevLbConfig.tableSize.value : 65_537
        var prime = size >= 2
        var divisor: UInt64 = 2
        while prime, divisor * divisor <= size {
            prime = size % divisor != 0
            divisor += 1
        }
        guard size <= 5_000_011, prime else {
            throw ConfigError(path: "\(path).maglev_lb_config.table_size", message: "\(size) is not a prime up to 5000011")
        }
        return .maglev(tableSize: Int(size))
    }

    /// The host of the first service in Istio's cluster metadata (`istio.services[0].host`), what Istio's
    /// stats filter reports as `destination_service` (`istio.alpn_override` is read beside it). Other
    /// metadata is read by no one here: listed.
    private static func istioServiceHost(_ metadata: Envoy_Config_Core_V3_Metadata, notActedOn: inout [FieldNotActedOn]) -> String? {
        for key in metadata.filterMetadata.keys.sorted() where key != "istio" {
            notActedOn.append(.init(path: "metadata.filter_metadata[\"\(key)\"]", reason: "cluster metadata is read only for Istio's service host"))
        }
        guard let istio = metadata.filterMetadata["istio"], case .listValue(let services)? = istio.fields["services"]?.kind,
              case .structValue(let first)? = services.values.first?.kind, case .stringValue(let host)? = first.fields["host"]?.kind,
              !host.isEmpty else { return nil }
        return host
    }

    /// `typed_extension_protocol_options`: the upstream HTTP options (the HTTP version, and the connection
    /// limits Capstan acts on) into `cluster`; other keys are listed as not acted on.
    private static func protocolOptions(_ options: [String: Google_Protobuf_Any], path: String,
                                        into cluster: inout BootstrapConfig.Cluster) throws(ConfigError) {
        for key in options.keys.sorted() {
            let field = "typed_extension_protocol_options[\"\(key)\"]"
            let any = options[key]!
            guard key == upstreamHTTPOptionsKey || HTTPFilterRegistry.typeName(any.typeURL) == upstreamHTTPOptionsKey else {
                cluster.fieldsNotActedOn.append(.init(path: field, reason: "Capstan has no protocol options of this kind (\(HTTPFilterRegistry.typeName(any.typeURL)))"))
                continue
            }
            let optionsPath = "\(path).\(field)"
            guard HTTPFilterRegistry.typeName(any.typeURL) == upstreamHTTPOptionsKey,
                  let http = try? Envoy_Extensions_Upstreams_Http_V3_HttpProtocolOptions(unpackingAny: any) else {
                throw ConfigError(path: optionsPath, message: "needs a type.googleapis.com/\(upstreamHTTPOptionsKey)")
            }
            cluster.fieldsNotActedOn += unknownFields(in: http, under: field)
            switch http.upstreamProtocolOptions {
            case nil:
                cluster.upstreamHTTP = .http1
            case .explicitHTTPConfig(let explicit)?:
                switch explicit.protocolConfig {
                case .httpProtocolOptions?, nil: cluster.upstreamHTTP = .http1
                case .http2ProtocolOptions(let http2)?:
                    cluster.upstreamHTTP = .http2
                    cluster.fieldsNotActedOn += upstreamHTTP2NotActedOn(http2, field: "\(field).explicit_http_config.http2_protocol_options")
                case .http3ProtocolOptions?:
                    throw ConfigError(path: "\(optionsPath).explicit_http_config.http3_protocol_options",
                                      message: "HTTP/3 is not supported: Capstan speaks HTTP/1.1 and HTTP/2 over TCP")
                }
            case .useDownstreamProtocolConfig(let downstream)?:
                cluster.upstreamHTTP = .downstream
                if downstream.hasHTTP2ProtocolOptions {
                    cluster.fieldsNotActedOn += upstreamHTTP2NotActedOn(downstream.http2ProtocolOptions,
                                                                        field: "\(field).use_downstream_protocol_config.http2_protocol_options")
                }
            case .autoConfig?:
                cluster.upstreamHTTP = .http1
                cluster.fieldsNotActedOn.append(.init(path: "\(field).auto_config",
                                                      reason: "Capstan does not negotiate the upstream HTTP version by ALPN yet: it speaks HTTP/1.1"))
            }
            guard http.hasCommonHTTPProtocolOptions else { continue }
            let common = http.commonHTTPProtocolOptions
            if common.hasIdleTimeout {
                let idle = duration(common.idleTimeout)
                cluster.upstreamIdleTimeout = idle == .zero ? nil : idle
            }
            if common.hasMaxRequestsPerConnection, common.maxRequestsPerConnection.value > 0 {
                cluster.maxRequestsPerConnection = Int(common.maxRequestsPerConnection.value)
            }
            cluster.fieldsNotActedOn += HTTPConnectionManagerConfig.commonOptionsNotActedOn(
                common, field: "\(field).common_http_protocol_options", downstream: false)
        }
    }

    /// The upstream HTTP/2 options Capstan does not act on: all but the choice of HTTP/2 itself.
    private static func upstreamHTTP2NotActedOn(_ options: Envoy_Config_Core_V3_Http2ProtocolOptions, field: String) -> [FieldNotActedOn] {
        var fields = HTTPConnectionManagerConfig.http2OptionsNotActedOn(options, field: field)
        if options.hasMaxConcurrentStreams {
            fields.append(.init(path: "\(field).max_concurrent_streams", reason: "the upstream server's own SETTINGS limit the streams on an upstream HTTP/2 connection"))
        }
        return fields
    }

    /// The first threshold of priority DEFAULT, as Envoy takes it (later ones of the same priority are not
    /// used); limits it does not give keep Envoy's defaults. Thresholds of priority HIGH apply to routes of
    /// high priority only, and Capstan's routes are all of default priority (a route's `priority` is
    /// outside its proto subset, so listed where given). (`path`: the cluster's.)
    private static func circuitBreakers(_ breakers: Envoy_Config_Cluster_V3_CircuitBreakers,
                                        path: String) throws(ConfigError) -> CircuitBreakers.Limits {
        for (index, threshold) in breakers.thresholds.enumerated() {
            if case .UNRECOGNIZED(let number) = threshold.priority {
                throw ConfigError(path: "\(path).circuit_breakers.thresholds[\(index)].priority", message: "\(number) is not a routing priority (DEFAULT, HIGH)")
            }
        }
        var limits = CircuitBreakers.Limits()
        guard let index = breakers.thresholds.firstIndex(where: { $0.priority == .default }) else { return limits }
        let threshold = breakers.thresholds[index]
        if threshold.hasMaxConnections {
            guard threshold.maxConnections.value > 0 else {
                throw ConfigError(path: "\(path).circuit_breakers.thresholds[\(index)].max_connections", message: "must be above 0")
            }
            limits.maxConnections = Int(threshold.maxConnections.value)
        }
        if threshold.hasMaxPendingRequests { limits.maxPendingRequests = Int(threshold.maxPendingRequests.value) }
        if threshold.hasMaxRequests { limits.maxRequests = Int(threshold.maxRequests.value) }
        if threshold.hasMaxRetries { limits.maxRetries = Int(threshold.maxRetries.value) }
        limits.tracksRemaining = threshold.trackRemaining
        return limits
    }

    // MARK: EDS

    /// The endpoint metadata that a cluster's `transport_socket_matches` compare.
    static let transportSocketMatchKey = "envoy.transport_socket_match"

    /// An EDS service's endpoints, and the fields of its assignment Capstan does not act on (those outside
    /// its proto subset), which go with the clusters it feeds.
    struct EndpointAssignment: Equatable {
        var endpoints: [BootstrapConfig.Cluster.Endpoint]
        var fieldsNotActedOn: [FieldNotActedOn] = []
        /// The `LocalityLbEndpoints` the endpoints index, with their priorities and weights.
        var localities: [BootstrapConfig.Cluster.Locality] = []
        /// `policy.overprovisioning_factor` (percent).
        var overprovisioningFactor = 140
    }

    /// Assignments by EDS service name.
    static func assignments(_ resources: [Google_Protobuf_Any]) throws(ConfigError) -> [String: EndpointAssignment] {
        var assignments: [String: EndpointAssignment] = [:]
        for resource in resources {
            let proto: Envoy_Config_Endpoint_V3_ClusterLoadAssignment = try unpack(resource, as: .endpoint)
            guard !proto.clusterName.isEmpty else { throw ConfigError(path: "cluster_load_assignment", message: "needs a cluster_name") }
            var notActedOn = unknownFields(in: proto, under: "load_assignment (EDS)") + localityNotActedOn(proto, under: "load_assignment (EDS)")
            // Endpoint metadata other than the transport socket match's, named once per assignment.
            let otherMetadata = Set(proto.endpoints.flatMap { $0.lbEndpoints.flatMap { $0.metadata.filterMetadata.keys } })
                .subtracting([transportSocketMatchKey]).sorted()
            for key in otherMetadata {
                notActedOn.append(.init(path: "load_assignment (EDS).endpoints[*].lb_endpoints[*].metadata.filter_metadata[\"\(key)\"]",
                                        reason: "endpoint metadata no filter of Capstan's reads (only \(transportSocketMatchKey) is)"))
            }
            var assignment = try placement(of: proto, path: "cluster_load_assignment \"\(proto.clusterName)\"")
            assignment.fieldsNotActedOn = notActedOn
            assignments[proto.clusterName] = assignment
        }
        return assignments
    }

    /// The endpoints that may take connections, with the localities (priority, weight) they belong to.
    /// HEALTHY and UNKNOWN endpoints are kept, of every priority, and DEGRADED ones marked so (they take
    /// their priority's degraded load). The others (UNHEALTHY, DRAINING, TIMEOUT) are counted in their
    /// locality's `unavailable`, so that their priority's health is what Envoy computes. How requests are
    /// spread over priorities, healthy and degraded hosts, and localities is ``PriorityLoad``'s.
    static func placement(of assignment: Envoy_Config_Endpoint_V3_ClusterLoadAssignment,
                          path: String) throws(ConfigError) -> EndpointAssignment {
        var kept: [BootstrapConfig.Cluster.Endpoint] = []
        var localities: [BootstrapConfig.Cluster.Locality] = []
        var unavailable: [Int] = []
        for (localityIndex, locality) in assignment.endpoints.enumerated() {
            var weight = 0
            if locality.hasLoadBalancingWeight {
                guard locality.loadBalancingWeight.value >= 1 else {
                    throw ConfigError(path: "\(path).endpoints[\(localityIndex)].load_balancing_weight", message: "must be at least 1")
                }
                weight = Int(locality.loadBalancingWeight.value)
            }
            let place = locality.locality
            let name = [place.region, place.zone, place.subZone].joined(separator: "/")
            localities.append(.init(name: locality.hasLocality ? name : "", priority: Int(locality.priority), weight: weight))
            unavailable.append(0)
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
                let metadata = lbEndpoint.metadata.filterMetadata[transportSocketMatchKey]?.fields ?? [:]
                let endpoint = BootstrapConfig.Cluster.Endpoint(address, weight: weight, transportSocketMatch: metadata, locality: localityIndex,
                                                                degraded: lbEndpoint.healthStatus == .degraded)
                switch lbEndpoint.healthStatus {
                case .unknown, .healthy, .degraded: kept.append(endpoint)
                case .unhealthy, .draining, .timeout: unavailable[localityIndex] += 1
                case .UNRECOGNIZED(let number):
                    throw ConfigError(path: "\(endpointPath).health_status", message: "\(number) is not a health status")
                }
            }
        }
        var factor = 140
        if assignment.hasPolicy && assignment.policy.hasOverprovisioningFactor {
            guard assignment.policy.overprovisioningFactor.value >= 1 else {
                throw ConfigError(path: "\(path).policy.overprovisioning_factor", message: "must be above 0")
            }
            factor = Int(assignment.policy.overprovisioningFactor.value)
        }
        for index in localities.indices { localities[index].unavailable = unavailable[index] }
        // By priority, so that each priority's endpoints are together (the order within one is kept).
        let endpoints = kept.enumerated()
            .sorted { (localities[$0.element.locality].priority, $0.offset) < (localities[$1.element.locality].priority, $1.offset) }
            .map(\.element)
        return EndpointAssignment(endpoints: endpoints, localities: localities, overprovisioningFactor: factor)
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

    // MARK: RDS

    /// A route configuration from RDS: the message (for `/config_dump`) and its compiled table.
    struct DiscoveredRoutes {
        var proto: Envoy_Config_Route_V3_RouteConfiguration
        var table: RouteTable
    }

    /// Route configurations by name, each compiled once (refusals name it `route_config "NAME"`); one
    /// refused refuses the response.
    static func routeConfigurations(_ resources: [Google_Protobuf_Any]) throws(ConfigError) -> [String: DiscoveredRoutes] {
        var routes: [String: DiscoveredRoutes] = [:]
        for resource in resources {
            let proto: Envoy_Config_Route_V3_RouteConfiguration = try unpack(resource, as: .route)
            guard !proto.name.isEmpty else { throw ConfigError(path: "route_config", message: "needs a name") }
            let path = "route_config \"\(proto.name)\""
            guard routes[proto.name] == nil else { throw ConfigError(path: path, message: "is sent twice") }
            routes[proto.name] = DiscoveredRoutes(proto: proto, table: try RouteTable(proto, path: path))
        }
        return routes
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
