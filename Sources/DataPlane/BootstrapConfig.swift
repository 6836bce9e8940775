import Configuration
import FoundationEssentials
import NIOCore
import SwiftProtobuf
import XDS

/// The subset of an Envoy bootstrap the proxy implements: static listeners whose filter chains match
/// on destination port and prefix and hand connections to `tcp_proxy`, clusters of static endpoints
/// or original destinations, and `dynamic_resources` over ADS (listeners and clusters from a control
/// plane, in the same shapes).
public struct BootstrapConfig: Sendable {
    /// `dynamic_resources` with `ads_config`: where the control plane is, and who this proxy is.
    public struct DynamicResources: Sendable {
        public var server: XDSServerAddress
        public var node: Envoy_Config_Core_V3_Node
    }

    public struct Listener: Sendable, Equatable {
        enum Direction: Sendable {
            /// Connections the application made, redirected by the outbound rules.
            case outbound
            /// Connections to the application, captured by the inbound rules.
            case inbound
        }

        /// Istio's names: `virtualOutbound` on 15001, `virtualInbound` on 15006.
        public var name: String
        public var port: Int
        var direction: Direction
        /// Listens with `IP_TRANSPARENT`: the accepted socket's local address is the original destination.
        public var transparent: Bool
        var chains: [FilterChain]
        var defaultChain: FilterChain?
        /// `listener_filters` by name, as configured.
        var listenerFilters: [String] = []
        /// Whether `envoy.filters.listener.tls_inspector` is among them: each connection's first bytes
        /// are read to tell TLS from plaintext before a chain is chosen.
        var inspectsTLS = false

        /// Every filter chain, the default one last.
        var allChains: [FilterChain] { defaultChain.map { chains + [$0] } ?? chains }

        /// The stat prefix Envoy uses for a listener on all addresses.
        var statName: String { "0.0.0.0_\(port)" }

        /// Envoy's choice, one criterion after the other, each keeping only its most specific matches:
        /// chains for the destination port (or, if none, those without a port); the longest matching
        /// prefix (no prefix matches anything, least specifically); the detected transport protocol
        /// (or, if no chain names it, chains naming none); an offered ALPN protocol (or chains naming
        /// none). Without a match, the default chain.
        func chain(for destination: SocketAddress, detected: TransportDetection = .plaintext) -> FilterChain? {
            // Runs for every connection: passes over the chains, each narrowing by one criterion, without
            // copying chains or building candidate lists.
            let port = destination.port
            let portSpecific = chains.contains { $0.destinationPort == port }
            func forPort(_ chain: FilterChain) -> Bool { portSpecific ? chain.destinationPort == port : chain.destinationPort == nil }
            var bestLength: Int?
            for chain in chains where forPort(chain) {
                if let length = chain.prefixLength(matching: destination), length > bestLength ?? Int.min { bestLength = length }
            }
            guard let bestLength else { return defaultChain }
            func forPrefix(_ chain: FilterChain) -> Bool { forPort(chain) && chain.prefixLength(matching: destination) == bestLength }
            let transportSpecific = chains.contains { forPrefix($0) && $0.transportProtocol == detected.transportProtocol }
            func forTransport(_ chain: FilterChain) -> Bool {
                forPrefix(chain) && chain.transportProtocol == (transportSpecific ? detected.transportProtocol : nil)
            }
            let offered = detected.applicationProtocols
            let protocolSpecific = !offered.isEmpty && chains.contains { chain in
                forTransport(chain) && chain.applicationProtocols.contains { offered.contains($0) }
            }
            return chains.first { chain in
                forTransport(chain) && (protocolSpecific ? chain.applicationProtocols.contains { offered.contains($0) }
                                                         : chain.applicationProtocols.isEmpty)
            } ?? defaultChain
        }
    }

    struct FilterChain: Sendable, Equatable {
        var name: String
        var destinationPort: Int?
        var prefixes: [DestinationPrefix]
        var route: TCPRoute
        var idleTimeout: Duration?
        /// `filter_chain_match.transport_protocol`: `tls`, `raw_buffer`, or nil for either.
        var transportProtocol: String?
        /// `filter_chain_match.application_protocols` (ALPN); empty for any.
        var applicationProtocols: [String] = []
        /// TLS terminated on this chain (its `DownstreamTlsContext`); nil: the bytes are relayed as they come.
        var transportSocket: TransportSocketConfig?

        /// The longest of this chain's prefixes that holds `destination`; -1 for a chain without prefixes
        /// (it matches anything, least specifically), nil when none holds it.
        func prefixLength(matching destination: SocketAddress) -> Int? {
            if prefixes.isEmpty { return -1 }
            var longest: Int?
            for prefix in prefixes where prefix.contains(destination) && prefix.length > longest ?? Int.min { longest = prefix.length }
            return longest
        }
    }

    /// `tcp_proxy`'s destination: one cluster, or several with weights.
    enum TCPRoute: Sendable, Equatable {
        case cluster(String)
        case weighted([(name: String, weight: Int)])

        static func == (lhs: TCPRoute, rhs: TCPRoute) -> Bool {
            switch (lhs, rhs) {
            case (.cluster(let a), .cluster(let b)): a == b
            case (.weighted(let a), .weighted(let b)): a.map(\.name) == b.map(\.name) && a.map(\.weight) == b.map(\.weight)
            default: false
            }
        }

        var clusterNames: [String] {
            switch self {
            case .cluster(let name): [name]
            case .weighted(let clusters): clusters.map(\.name)
            }
        }
    }

    public struct Cluster: Sendable, Equatable {
        public enum Discovery: Sendable, Equatable {
            /// `STATIC`: the endpoints listed.
            case endpoints([SocketAddress])
            /// `ORIGINAL_DST`: wherever the connection was going.
            case originalDestination
        }

        /// `lb_policy`: how an endpoint is chosen for each connection.
        public enum LoadBalancing: String, Sendable, Equatable {
            case roundRobin = "ROUND_ROBIN"
            case random = "RANDOM"
            /// Envoy's: the less busy of two endpoints picked at random (for TCP, open connections).
            case leastRequest = "LEAST_REQUEST"
        }

        public var name: String
        public var discovery: Discovery
        var connectTimeout: Duration?
        /// `circuit_breakers.thresholds[].max_connections`.
        var maxConnections: Int?
        var loadBalancing = LoadBalancing.roundRobin
        /// TLS to the endpoints (its `UpstreamTlsContext`); nil: plaintext.
        var transportSocket: TransportSocketConfig?
    }

    public var listeners: [Listener]
    public var clusters: [Cluster]
    /// The admin port from `admin.address`, if given.
    public var adminPort: Int?
    /// Listeners and clusters from a control plane, if configured.
    public var dynamicResources: DynamicResources?
    /// Fields that were ignored, with their paths.
    public var warnings: [String]
    /// Who this proxy is (`node`), when the bootstrap says; sent on the xDS and SDS streams.
    public var node: Envoy_Config_Core_V3_Node?

    /// Istio's sidecar without configuration: every connection to its original destination.
    public static func passthrough(outboundPort: Int, inboundPort: Int, inboundTransparent: Bool) -> BootstrapConfig {
        BootstrapConfig(
            listeners: [
                Listener(name: "virtualOutbound", port: outboundPort, direction: .outbound, transparent: false, chains: [],
                         defaultChain: FilterChain(name: "PassthroughFilterChain", destinationPort: nil, prefixes: [],
                                                   route: .cluster(passthroughCluster), idleTimeout: nil)),
                Listener(name: "virtualInbound", port: inboundPort, direction: .inbound, transparent: inboundTransparent, chains: [],
                         defaultChain: FilterChain(name: "InboundPassthroughFilterChain", destinationPort: nil, prefixes: [],
                                                   route: .cluster(inboundPassthroughCluster), idleTimeout: nil)),
            ],
            clusters: [
                Cluster(name: passthroughCluster, discovery: .originalDestination),
                Cluster(name: inboundPassthroughCluster, discovery: .originalDestination),
            ],
            adminPort: nil, dynamicResources: nil, warnings: [])
    }

    public static let passthroughCluster = "PassthroughCluster"
    public static let inboundPassthroughCluster = "InboundPassthroughCluster"

    // MARK: Reading

    /// Parses a bootstrap in JSON. Unknown fields are ignored with a warning; anything invalid is refused
    /// with the path of the field.
    public static func parse(json text: String) throws(ConfigError) -> BootstrapConfig {
        let document: ConfigValue
        do {
            document = try ConfigValue.parse(json: text)
        } catch {
            throw ConfigError(path: "", message: "not valid JSON: \(error)")
        }
        var warnings: [String] = []
        let root = ConfigReader(document)
        try root.ignoringUnknown(["node", "admin", "static_resources", "dynamic_resources", "layered_runtime",
                                  "stats_config", "tracing"], warnings: &warnings)
        var adminPort: Int?
        if let admin = try root.optional("admin"), let address = try admin.optional("address") {
            adminPort = try socketAddress(address, warnings: &warnings).port
        }
        let resources = try root.optional("static_resources")
        try resources?.ignoringUnknown(["listeners", "clusters"], warnings: &warnings)
        let clusters = try (resources?.optional("clusters")?.list() ?? []).map { reader throws(ConfigError) in
            try cluster(reader, warnings: &warnings)
        }
        let listeners = try (resources?.optional("listeners")?.list() ?? []).map { reader throws(ConfigError) in
            try listener(reader, warnings: &warnings)
        }
        let node = try root.optional("node").map { reader throws(ConfigError) in try nodeMessage(reader) }
        let dynamic = try root.optional("dynamic_resources").map { reader throws(ConfigError) in
            try dynamicResources(reader, node: node, clusters: clusters, warnings: &warnings)
        }
        // Every route must name a cluster that exists, and names are unique.
        for (index, cluster) in clusters.enumerated() where clusters[..<index].contains(where: { $0.name == cluster.name }) {
            throw ConfigError(path: "static_resources.clusters[\(index)].name", message: "duplicate cluster \"\(cluster.name)\"")
        }
        for (index, listener) in listeners.enumerated() {
            if listeners[..<index].contains(where: { $0.port == listener.port }) {
                throw ConfigError(path: "static_resources.listeners[\(index)].address", message: "port \(listener.port) is used twice")
            }
            for chain in listener.allChains {
                for name in chain.route.clusterNames where !clusters.contains(where: { $0.name == name }) {
                    throw ConfigError(path: "static_resources.listeners[\(index)]",
                                      message: "filter chain \"\(chain.name)\" routes to unknown cluster \"\(name)\"")
                }
            }
        }
        let config = BootstrapConfig(listeners: listeners, clusters: clusters, adminPort: adminPort, dynamicResources: dynamic,
                                     warnings: warnings, node: node)
        // Secrets come from a static cluster with a gRPC endpoint (Istio's sds-grpc).
        for (index, cluster) in clusters.enumerated() {
            try config.checkSecretSources(cluster.transportSocket, path: "static_resources.clusters[\(index)].transport_socket")
        }
        for (index, listener) in listeners.enumerated() {
            for chain in listener.allChains {
                try config.checkSecretSources(chain.transportSocket, path: "static_resources.listeners[\(index)] filter chain \"\(chain.name)\".transport_socket")
            }
        }
        return config
    }

    /// Where the gRPC service a static cluster names is (its first endpoint: Istio's `xds-grpc` and
    /// `sds-grpc` are pipes); nil when there is no such static cluster.
    func grpcServer(cluster name: String) -> XDSServerAddress? {
        guard let cluster = clusters.first(where: { $0.name == name }), case .endpoints(let endpoints) = cluster.discovery,
              let endpoint = endpoints.first else { return nil }
        if let path = endpoint.pathname { return .unixSocket(path: path) }
        guard let host = endpoint.ipAddress, let port = endpoint.port else { return nil }
        return .tcp(host: host, port: port)
    }

    /// Refuses a transport socket whose SDS secrets come from a cluster that is not one of this
    /// bootstrap's static clusters with an endpoint.
    func checkSecretSources(_ socket: TransportSocketConfig?, path: String) throws(ConfigError) {
        for reference in socket?.secretReferences ?? [] where grpcServer(cluster: reference.cluster) == nil {
            throw ConfigError(path: path, message: "SDS secret \"\(reference.name)\" comes from cluster \"\(reference.cluster)\", which is not a static cluster of the bootstrap with an endpoint")
        }
    }

    /// ADS only (`lds_config` and `cds_config` say `ads`), state of the world over gRPC; the server is a
    /// static cluster named by `envoy_grpc` (as Istio's `xds-grpc`, often a `pipe`), or a `google_grpc`
    /// target URI.
    private static func dynamicResources(_ reader: ConfigReader, node: Envoy_Config_Core_V3_Node?, clusters: [Cluster],
                                         warnings: inout [String]) throws(ConfigError) -> DynamicResources {
        try reader.ignoringUnknown(["lds_config", "cds_config", "ads_config"], warnings: &warnings)
        for key in ["lds_config", "cds_config"] {
            guard let source = try reader.optional(key) else { continue }
            try source.ignoringUnknown(["ads", "resource_api_version", "initial_fetch_timeout"], warnings: &warnings)
            guard try source.optional("ads") != nil else {
                throw source.fail("only ADS is supported (\"ads\": {})")
            }
        }
        let ads = try reader.required("ads_config")
        try ads.ignoringUnknown(["api_type", "transport_api_version", "grpc_services", "set_node_on_first_message_only"],
                                warnings: &warnings)
        if let api = try ads.optional("api_type"), try api.string() != "GRPC" {
            throw api.fail("\"\(try api.string())\" is not supported: Capstan speaks state-of-the-world GRPC")
        }
        guard let service = try ads.required("grpc_services").list().first else {
            throw ConfigError(path: "\(ads.path).grpc_services", message: "needs one gRPC service")
        }
        try service.ignoringUnknown(["envoy_grpc", "google_grpc", "timeout"], warnings: &warnings)
        let server: XDSServerAddress
        if let envoyGRPC = try service.optional("envoy_grpc") {
            let name = try envoyGRPC.required("cluster_name").string()
            guard let cluster = clusters.first(where: { $0.name == name }), case .endpoints(let endpoints) = cluster.discovery,
                  let endpoint = endpoints.first else {
                throw envoyGRPC.fail("cluster \"\(name)\" must be a static cluster with an endpoint")
            }
            if let path = endpoint.pathname {
                server = .unixSocket(path: path)
            } else {
                server = .tcp(host: endpoint.ipAddress ?? "", port: endpoint.port ?? 0)
            }
        } else if let googleGRPC = try service.optional("google_grpc") {
            let target = try googleGRPC.required("target_uri")
            let text = try target.string()
            do throws(XDSAddressError) {
                server = try XDSServerAddress(parsing: text)
            } catch {
                throw target.fail(error.reason)
            }
        } else {
            throw service.fail("needs envoy_grpc or google_grpc")
        }
        guard let node else { throw ConfigError(path: "node", message: "is required with dynamic_resources (the control plane identifies the proxy by node.id)") }
        guard !node.id.isEmpty else { throw ConfigError(path: "node.id", message: "is required with dynamic_resources") }
        return DynamicResources(server: server, node: node)
    }

    private static func nodeMessage(_ node: ConfigReader) throws(ConfigError) -> Envoy_Config_Core_V3_Node {
        do {
            var options = JSONDecodingOptions()
            options.ignoreUnknownFields = true
            return try Envoy_Config_Core_V3_Node(jsonString: node.value.jsonText(), options: options)
        } catch {
            throw node.fail("not a valid node: \(error)")
        }
    }

    private static func socketAddress(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> SocketAddress {
        try reader.ignoringUnknown(["socket_address", "pipe"], warnings: &warnings)
        if let pipe = try reader.optional("pipe") {
            let path = try pipe.required("path").string()
            do {
                return try SocketAddress(unixDomainSocketPath: path)
            } catch {
                throw pipe.fail("\"\(path)\" is not a usable unix socket path")
            }
        }
        let socket = try reader.required("socket_address")
        try socket.ignoringUnknown(["address", "port_value", "protocol"], warnings: &warnings)
        let host = try socket.required("address").string()
        let port = try socket.required("port_value").integer(in: 0...65535)
        do {
            return try SocketAddress(ipAddress: host, port: port)
        } catch {
            throw ConfigError(path: "\(socket.path).address", message: "\"\(host)\" is not an IP address")
        }
    }

    private static func listener(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> Listener {
        try reader.ignoringUnknown(["name", "address", "filter_chains", "default_filter_chain", "traffic_direction",
                                    "transparent", "use_original_dst", "listener_filters", "bind_to_port"], warnings: &warnings)
        let name = try reader.required("name").string()
        let address = try socketAddress(try reader.required("address"), warnings: &warnings)
        var direction = Listener.Direction.outbound
        if let traffic = try reader.optional("traffic_direction") {
            switch try traffic.string() {
            case "INBOUND": direction = .inbound
            case "OUTBOUND", "UNSPECIFIED": direction = .outbound
            case let other: throw traffic.fail("\"\(other)\" is not INBOUND, OUTBOUND or UNSPECIFIED")
            }
        }
        let transparent = try reader.optional("transparent")?.bool() ?? false
        let chains = try (reader.optional("filter_chains")?.list() ?? []).map { chain throws(ConfigError) in
            try filterChain(chain, warnings: &warnings)
        }
        let defaultChain = try reader.optional("default_filter_chain").map { chain throws(ConfigError) in
            try filterChain(chain, warnings: &warnings)
        }
        var filters: [String] = []
        var inspectsTLS = false
        for filter in try reader.optional("listener_filters")?.list() ?? [] {
            try filter.ignoringUnknown(["name", "typed_config"], warnings: &warnings)
            let filterName = try filter.optional("name")?.string() ?? ""
            let type = try filter.optional("typed_config")?.optional("@type")?.string()
            if try XDSResourceDecoder.isTLSInspector(name: filterName, typeURL: type, path: filter.path) { inspectsTLS = true }
            filters.append(filterName)
        }
        return Listener(name: name, port: address.port ?? 0, direction: direction, transparent: transparent,
                        chains: chains, defaultChain: defaultChain, listenerFilters: filters, inspectsTLS: inspectsTLS)
    }

    private static func filterChain(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> FilterChain {
        try reader.ignoringUnknown(["name", "filter_chain_match", "filters", "transport_socket"], warnings: &warnings)
        var port: Int?
        var prefixes: [DestinationPrefix] = []
        var transportProtocol: String?
        var applicationProtocols: [String] = []
        if let match = try reader.optional("filter_chain_match") {
            try match.ignoringUnknown(["destination_port", "prefix_ranges", "transport_protocol", "application_protocols"],
                                      warnings: &warnings)
            port = try match.optional("destination_port")?.integer(in: 1...65535)
            if let text = try match.optional("transport_protocol")?.string(), !text.isEmpty { transportProtocol = text }
            applicationProtocols = try (match.optional("application_protocols")?.list() ?? []).map { item throws(ConfigError) in
                try item.string()
            }
            prefixes = try (match.optional("prefix_ranges")?.list() ?? []).map { range throws(ConfigError) in
                try range.ignoringUnknown(["address_prefix", "prefix_len"], warnings: &warnings)
                let address = try range.required("address_prefix").string()
                let length = try range.optional("prefix_len")?.integer(in: 0...128)
                guard let prefix = DestinationPrefix(address: address, length: length) else {
                    throw range.fail("\"\(address)/\(length.map(String.init) ?? "")\" is not an IP prefix")
                }
                return prefix
            }
        }
        let filters = try reader.required("filters").list()
        guard let tcpProxy = filters.first(where: { (try? $0.required("name").string()) == "envoy.filters.network.tcp_proxy" }) else {
            throw reader.fail("needs an envoy.filters.network.tcp_proxy filter (the only network filter Capstan has)")
        }
        let config = try tcpProxy.required("typed_config")
        try config.ignoringUnknown(["@type", "stat_prefix", "cluster", "weighted_clusters", "idle_timeout"], warnings: &warnings)
        let route: TCPRoute
        if let cluster = try config.optional("cluster") {
            route = .cluster(try cluster.string())
        } else if let weighted = try config.optional("weighted_clusters") {
            let clusters = try weighted.required("clusters").list().map { entry throws(ConfigError) -> (name: String, weight: Int) in
                try entry.ignoringUnknown(["name", "weight"], warnings: &warnings)
                return (try entry.required("name").string(), try entry.required("weight").integer(in: 0...1_000_000))
            }
            guard clusters.contains(where: { $0.weight > 0 }) else {
                throw weighted.fail("needs at least one cluster with a weight above 0")
            }
            route = .weighted(clusters)
        } else {
            throw config.fail("needs cluster or weighted_clusters")
        }
        let socket = try reader.optional("transport_socket").map { socket throws(ConfigError) in
            try transportSocket(socket, upstream: false, warnings: &warnings)
        } ?? nil
        return FilterChain(name: try reader.optional("name")?.string() ?? "", destinationPort: port, prefixes: prefixes,
                           route: route, idleTimeout: try config.optional("idle_timeout")?.duration(),
                           transportProtocol: transportProtocol, applicationProtocols: applicationProtocols, transportSocket: socket)
    }

    /// A `transport_socket` in JSON: its typed_config is read as the protobuf message it names, then
    /// checked as one from xDS would be. Fields Capstan does not implement are ignored with a warning.
    private static func transportSocket(_ reader: ConfigReader, upstream: Bool,
                                        warnings: inout [String]) throws(ConfigError) -> TransportSocketConfig? {
        try reader.ignoringUnknown(["name", "typed_config"], warnings: &warnings)
        var socket = Envoy_Config_Core_V3_TransportSocket()
        socket.name = try reader.optional("name")?.string() ?? ""
        if let typed = try reader.optional("typed_config") {
            var fields = try typed.fields()
            let type = fields.removeValue(forKey: "@type")?.stringValue ?? ""
            let json = ConfigValue.object(fields).jsonText()
            switch type {
            case TransportSocketConfig.upstreamContextType where upstream:
                socket.typedConfig = try packed(json, as: Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext.self,
                                                path: typed.path, warnings: &warnings)
            case TransportSocketConfig.downstreamContextType where !upstream:
                socket.typedConfig = try packed(json, as: Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext.self,
                                                path: typed.path, warnings: &warnings)
            default:
                // Refused (or, for raw_buffer, accepted) by the checks below, with the type in the message.
                var any = Google_Protobuf_Any()
                any.typeURL = type
                socket.typedConfig = any
            }
        }
        return upstream ? try TransportSocketConfig.upstream(socket, path: reader.path)
                        : try TransportSocketConfig.downstream(socket, path: reader.path)
    }

    private static func packed<M: SwiftProtobuf.Message>(_ json: String, as type: M.Type, path: String,
                                                         warnings: inout [String]) throws(ConfigError) -> Google_Protobuf_Any {
        var message: M
        do {
            message = try M(jsonString: json)
        } catch {
            do {
                var options = JSONDecodingOptions()
                options.ignoreUnknownFields = true
                message = try M(jsonString: json, options: options)
                warnings.append("\(path): fields Capstan does not implement were ignored (\(error))")
            } catch {
                throw ConfigError(path: path, message: "not a valid \(M.protoMessageName): \(error)")
            }
        }
        do {
            return try Google_Protobuf_Any(message: message)
        } catch {
            throw ConfigError(path: path, message: "cannot be packed: \(error)")
        }
    }

    private static func cluster(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> Cluster {
        try reader.ignoringUnknown(["name", "type", "connect_timeout", "lb_policy", "load_assignment", "circuit_breakers",
                                    "alt_stat_name", "transport_socket"], warnings: &warnings)
        let name = try reader.required("name").string()
        let type = try reader.optional("type")?.string() ?? "STATIC"
        var loadBalancing = Cluster.LoadBalancing.roundRobin
        if let policy = try reader.optional("lb_policy") {
            let value = try policy.string()
            if let known = Cluster.LoadBalancing(rawValue: value) {
                loadBalancing = known
            } else if value != "CLUSTER_PROVIDED" || type != "ORIGINAL_DST" {
                throw policy.fail("\"\(value)\" is not a load-balancing policy Capstan has (ROUND_ROBIN, RANDOM, LEAST_REQUEST; CLUSTER_PROVIDED for ORIGINAL_DST)")
            }
        }
        let discovery: Cluster.Discovery
        switch type {
        case "STATIC":
            let assignment = try reader.required("load_assignment")
            try assignment.ignoringUnknown(["cluster_name", "endpoints"], warnings: &warnings)
            var endpoints: [SocketAddress] = []
            for locality in try assignment.required("endpoints").list() {
                try locality.ignoringUnknown(["lb_endpoints", "locality"], warnings: &warnings)
                for endpoint in try locality.required("lb_endpoints").list() {
                    try endpoint.ignoringUnknown(["endpoint", "load_balancing_weight", "metadata"], warnings: &warnings)
                    let inner = try endpoint.required("endpoint")
                    try inner.ignoringUnknown(["address"], warnings: &warnings)
                    endpoints.append(try socketAddress(try inner.required("address"), warnings: &warnings))
                }
            }
            guard !endpoints.isEmpty else { throw assignment.fail("a STATIC cluster needs at least one endpoint") }
            discovery = .endpoints(endpoints)
        case "ORIGINAL_DST":
            discovery = .originalDestination
        default:
            throw ConfigError(path: "\(reader.path).type", message: "\"\(type)\" is not STATIC or ORIGINAL_DST")
        }
        var maxConnections: Int?
        if let breakers = try reader.optional("circuit_breakers") {
            for threshold in try breakers.optional("thresholds")?.list() ?? [] {
                try threshold.ignoringUnknown(["priority", "max_connections", "max_pending_requests", "max_requests",
                                               "max_retries"], warnings: &warnings)
                maxConnections = try threshold.optional("max_connections")?.integer(in: 1...Int(Int32.max)) ?? maxConnections
            }
        }
        let socket = try reader.optional("transport_socket").map { socket throws(ConfigError) in
            try transportSocket(socket, upstream: true, warnings: &warnings)
        } ?? nil
        return Cluster(name: name, discovery: discovery, connectTimeout: try reader.optional("connect_timeout")?.duration(),
                       maxConnections: maxConnections, loadBalancing: loadBalancing, transportSocket: socket)
    }
}

/// A destination CIDR of a filter chain match, compared with a connection's original destination.
struct DestinationPrefix: Sendable, Equatable {
    let bytes: [UInt8]
    let length: Int

    init?(address: String, length: Int?) {
        guard let parsed = try? SocketAddress(ipAddress: address, port: 0), let bytes = parsed.addressBytes else { return nil }
        let length = length ?? bytes.count * 8
        guard length <= bytes.count * 8 else { return nil }
        self.bytes = bytes
        self.length = length
    }

    func contains(_ address: SocketAddress) -> Bool {
        guard let candidate = address.unmapped.addressBytes, candidate.count == bytes.count else { return false }
        var remaining = length
        for index in bytes.indices where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
            if candidate[index] & mask != bytes[index] & mask { return false }
            remaining -= bits
        }
        return true
    }
}

extension SocketAddress {
    /// The address bytes in network order (4 or 16), nil for non-IP addresses.
    var addressBytes: [UInt8]? {
        switch self {
        case .v4(let address): withUnsafeBytes(of: address.address.sin_addr) { Array($0) }
        case .v6(let address): withUnsafeBytes(of: address.address.sin6_addr) { Array($0) }
        default: nil
        }
    }
}
