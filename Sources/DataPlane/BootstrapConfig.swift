import Authorization
import Configuration
import HTTPProxy
import NIOCore
import Routing
import SwiftProtobuf
import XDS

/// The proxy's configuration as decoded from Envoy's messages (``XDSResourceDecoder``), whether a
/// bootstrap file or a control plane sent them: listeners whose filter chains match on destination port
/// and prefix and hand connections to `tcp_proxy` or the HTTP connection manager, clusters of endpoints
/// or original destinations, and `dynamic_resources` over ADS.
public struct BootstrapConfig: Sendable {
    /// `dynamic_resources` with `ads_config`: where the control plane is, and who this proxy is.
    public struct DynamicResources: Sendable {
        public var server: XDSServerAddress
        public var node: Envoy_Config_Core_V3_Node
        /// Whether every request carries the node (`set_node_on_first_message_only: false`, Envoy's
        /// default), or only each stream's first (Istio's setting).
        public var nodeOnEveryRequest = false
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
        /// Whether `envoy.filters.listener.http_inspector` is among them: a plaintext connection's first
        /// bytes tell HTTP/1.x (`http/1.0`, `http/1.1`) and HTTP/2 with prior knowledge (`h2c`) from other
        /// protocols, for chains that match those application protocols (istiod's outbound HTTP chains).
        var inspectsHTTP = false
        /// Fields given that Capstan accepts but does not act on.
        var fieldsNotActedOn: [FieldNotActedOn] = []
        /// `address`'s IP: `0.0.0.0` or `::` for a listener that binds (one dual-stack socket on all
        /// addresses); any address for one that does not bind, which is found by it (``ProxyRuntime/listener(handingOff:destination:in:)``).
        public var host = "0.0.0.0"
        /// `bind_to_port` (default true). istiod's per-service listeners (`0.0.0.0_8080`, `10.96.0.5_8080`)
        /// do not bind: they take the connections `virtualOutbound` hands them.
        public var bindsToPort = true
        /// `use_original_dst`: a connection whose original destination is the address of a listener that
        /// does not bind is handed to that listener (Envoy's hand-off; istiod's `virtualOutbound`).
        public var usesOriginalDestination = false

        /// Every filter chain, the default one last.
        var allChains: [FilterChain] { defaultChain.map { chains + [$0] } ?? chains }

        /// Whether `host` is all addresses of its family.
        var isOnAllAddresses: Bool { host == "0.0.0.0" || host == "::" }

        /// The stat prefix Envoy uses: `0.0.0.0_15001` for a listener on all addresses (either family, as
        /// Capstan's one dual-stack socket), `10.96.0.5_8080` for one on an address.
        var statName: String { isOnAllAddresses ? "0.0.0.0_\(port)" : "\(host)_\(port)" }

        /// The route configuration names its HTTP connection managers take from RDS.
        var routeConfigNames: Set<String> {
            Set(allChains.compactMap { $0.httpConnectionManager?.discoveredRouteName })
        }

        /// Envoy's choice, one criterion after the other, each keeping only its most specific matches:
        /// chains for the destination port (or, if none, those without a port); the longest matching
        /// prefix (no prefix matches anything, least specifically); the TLS server name, exactly, else
        /// by the nearest `*.` wildcard (no names match anything, least specifically); the detected transport protocol
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
            var bestName: Int?
            for chain in chains where forPrefix(chain) {
                if let rank = chain.serverNameRank(detected.serverName), rank < bestName ?? Int.max || bestName == nil { bestName = rank }
            }
            guard let bestName else { return defaultChain }
            func forName(_ chain: FilterChain) -> Bool { forPrefix(chain) && chain.serverNameRank(detected.serverName) == bestName }
            let transportSpecific = chains.contains { forName($0) && $0.transportProtocol == detected.transportProtocol }
            func forTransport(_ chain: FilterChain) -> Bool {
                forName(chain) && chain.transportProtocol == (transportSpecific ? detected.transportProtocol : nil)
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
        var prefixes: [CIDRRange]
        /// What the chain does with a connection: its terminal network filter.
        var action: ChainAction
        /// `tcp_proxy`'s `idle_timeout`.
        var idleTimeout: Duration?
        /// Where the terminal filter is in `filters` (after those not acted on), for paths in refusals.
        var terminalFilterIndex = 0
        /// `filter_chain_match.transport_protocol`: `tls`, `raw_buffer`, or nil for either.
        var transportProtocol: String?
        /// `filter_chain_match.application_protocols` (ALPN); empty for any.
        var applicationProtocols: [String] = []
        /// `filter_chain_match.server_names` (SNI), lowercased: exact names, and `*.SUFFIX` wildcards kept
        /// as their suffix; both empty for any.
        var serverNames = ServerNames()
        /// TLS terminated on this chain (its `DownstreamTlsContext`); nil: the bytes are relayed as they come.
        var transportSocket: TransportSocketConfig?
        /// Its `envoy.filters.network.rbac` filters.
        var authorization = NetworkAuthorization()
        /// `envoy.filters.network.sni_cluster` before `tcp_proxy`: a connection with a TLS server name
        /// (as tls_inspector read it) is relayed to the cluster of that name instead of `route`'s; one
        /// without goes to `route`.
        var clusterFromServerName = false

        /// `tcp_proxy`'s destination, for a chain that relays.
        var route: TCPRoute? {
            if case .relay(let route) = action { route } else { nil }
        }

        /// The HTTP connection manager, for a chain that serves HTTP.
        var httpConnectionManager: HTTPConnectionManagerConfig? {
            if case .http(let manager) = action { manager } else { nil }
        }

        /// How closely this chain's server names match `name`: 0 exactly, N by the wildcard N labels up
        /// (`*.example.com` is 1 for `www.example.com`), nil when none does; `Int.max` for a chain
        /// without names (it matches anything, least specifically).
        func serverNameRank(_ name: String?) -> Int? {
            if serverNames.isEmpty { return Int.max }
            guard let name else { return nil }
            if serverNames.exact.contains(name) { return 0 }
            var labels = 0
            var rest = Substring(name)
            while let dot = rest.firstIndex(of: ".") {
                rest = rest[rest.index(after: dot)...]
                labels += 1
                if serverNames.wildcardSuffixes.contains(String(rest)) { return labels }
            }
            return nil
        }

        /// The longest of this chain's prefixes that holds `destination`; -1 for a chain without prefixes
        /// (it matches anything, least specifically), nil when none holds it.
        func prefixLength(matching destination: SocketAddress) -> Int? {
            if prefixes.isEmpty { return -1 }
            var longest: Int?
            for prefix in prefixes where prefix.contains(destination) && prefix.length > longest ?? Int.min { longest = prefix.length }
            return longest
        }
    }

    /// A filter chain's `server_names`, split for matching.
    struct ServerNames: Sendable, Equatable {
        var exact: Set<String> = []
        /// `*.example.com` as `example.com`.
        var wildcardSuffixes: Set<String> = []

        var isEmpty: Bool { exact.isEmpty && wildcardSuffixes.isEmpty }
    }

    /// A filter chain's terminal network filter: `tcp_proxy` relays the connection's bytes to a cluster;
    /// `http_connection_manager` serves HTTP on it, each request routed on its own.
    enum ChainAction: Sendable, Equatable {
        case relay(TCPRoute)
        case http(HTTPConnectionManagerConfig)
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
            /// `STATIC`, or `EDS` once its assignment came: the endpoints that take connections.
            case endpoints([Endpoint])
            /// `ORIGINAL_DST`: wherever the connection was going.
            case originalDestination
        }

        /// `lb_policy`: how an endpoint is chosen for each connection.
        public enum LoadBalancing: Sendable, Equatable {
            case roundRobin
            case random
            /// Envoy's: the less busy of two endpoints picked at random (for TCP, open connections).
            case leastRequest
            /// A request goes where its hash (the route's `hash_policy`) lands on a ring of at least
            /// `minimumSize` points (`ring_hash_lb_config`).
            case ringHash(minimumSize: Int, maximumSize: Int)
            /// A request goes to the slot of its hash in a Maglev table of `tableSize` slots.
            case maglev(tableSize: Int)
        }

        /// An endpoint and its `load_balancing_weight`.
        public struct Endpoint: Sendable, Equatable {
            public var address: SocketAddress
            /// Its share of connections relative to the others' (round robin and least request; Envoy's
            /// random choice ignores weights).
            public var weight: Int
            /// Its `metadata.filter_metadata["envoy.transport_socket_match"]`, which the cluster's
            /// `transport_socket_matches` compare (Istio: `tlsMode: istio` for endpoints with a sidecar).
            public var transportSocketMatch: [String: Google_Protobuf_Value]
            /// Its place among ``Cluster/localities`` (the `LocalityLbEndpoints` it came in); its priority
            /// is that locality's.
            public var locality: Int
            /// Given as DEGRADED: it takes its priority's degraded load (Envoy's), not the healthy one.
            public var degraded: Bool

            public init(_ address: SocketAddress, weight: Int = 1, transportSocketMatch: [String: Google_Protobuf_Value] = [:],
                        locality: Int = 0, degraded: Bool = false) {
                self.address = address
                self.weight = weight
                self.transportSocketMatch = transportSocketMatch
                self.locality = locality
                self.degraded = degraded
            }
        }

        /// One `LocalityLbEndpoints` of the assignment: where it is, its priority and weight, and how many
        /// of its hosts EDS gave as not healthy (they count in its priority's and its own total, as in
        /// Envoy, but take no requests, not even in panic: Capstan does not keep them).
        public struct Locality: Sendable, Equatable {
            /// `region/zone/sub_zone`, for `/clusters`.
            public var name: String
            /// Its `priority` (0 first).
            public var priority: Int
            /// Its `load_balancing_weight` (0 when not given: no share under locality-weighted balancing).
            public var weight: Int
            /// Hosts given as UNHEALTHY, DRAINING or TIMEOUT.
            public var unavailable: Int

            public init(name: String = "", priority: Int = 0, weight: Int = 0, unavailable: Int = 0) {
                self.name = name
                self.priority = priority
                self.weight = weight
                self.unavailable = unavailable
            }
        }

        /// One of `transport_socket_matches`: the transport socket for endpoints whose metadata has every
        /// field of `match` with the same value.
        struct TransportSocketMatch: Sendable, Equatable {
            var name: String
            var match: [String: Google_Protobuf_Value]
            /// nil: plaintext (`raw_buffer`).
            var transportSocket: TransportSocketConfig?
        }

        /// The HTTP version spoken to the endpoints (`typed_extension_protocol_options`'
        /// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`).
        public enum UpstreamHTTPProtocol: Sendable, Equatable {
            /// Envoy's default, and `explicit_http_config.http_protocol_options`.
            case http1
            /// `explicit_http_config.http2_protocol_options` (istiod: gRPC and `h2` ports, `xds-grpc`).
            case http2
            /// `use_downstream_protocol_config`: the version the downstream request came in (istiod's
            /// inbound and passthrough clusters).
            case downstream
        }

        public var name: String
        public var discovery: Discovery
        var connectTimeout: Duration?
        /// The first `circuit_breakers` threshold of priority DEFAULT (Envoy's defaults without one).
        var circuitBreakers = CircuitBreakers.Limits()
        /// `health_checks`: how the endpoints are actively checked (nil: they are not).
        var healthCheck: HealthCheckConfig?
        var loadBalancing = LoadBalancing.roundRobin
        /// `round_robin_lb_config` / `least_request_lb_config` `slow_start_config`: new hosts' weights ramp
        /// up (nil: no slow start).
        var slowStart: SlowStart?
        /// TLS to the endpoints (its `UpstreamTlsContext`); nil: plaintext. With `transportSocketMatches`,
        /// the socket of endpoints no match takes.
        var transportSocket: TransportSocketConfig?
        /// Fields given that Capstan accepts but does not act on.
        var fieldsNotActedOn: [FieldNotActedOn] = []
        /// `transport_socket_matches`, in order: the first whose `match` the endpoint's metadata has wins.
        var transportSocketMatches: [TransportSocketMatch] = []
        /// `outlier_detection`: nil, no host is ever ejected.
        public var outlierDetection: OutlierDetectionConfig?
        /// `upstream_connection_options.tcp_keepalive`: keepalive timing on the upstream sockets, those of
        /// the HTTP router and of the TCP relay (nil: the kernel's; SO_KEEPALIVE is on either way).
        var tcpKeepalive: TCPKeepalive?
        /// `common_lb_config.healthy_panic_threshold`: below this percent of healthy hosts, the load
        /// balancer uses all hosts, ejected ones too (Envoy's panic mode); 0 disables it.
        public var healthyPanicThreshold = 50.0
        /// The assignment's localities, which ``Endpoint/locality`` indexes (empty: one locality, priority
        /// 0, every endpoint in it).
        public var localities: [Locality] = []
        /// The assignment's `policy.overprovisioning_factor`, in percent (Envoy's default 140).
        public var overprovisioningFactor = 140
        /// `common_lb_config.locality_weighted_lb_config` is set: within a priority, localities take
        /// requests by their effective weights.
        public var localityWeighted = false
        /// The HTTP version spoken to the endpoints by the router (the TCP relay sends bytes as they come).
        public var upstreamHTTP = UpstreamHTTPProtocol.http1
        /// `common_http_protocol_options.idle_timeout` of the upstream HTTP protocol options: how long an
        /// upstream HTTP connection stays open without requests (Envoy's default 1 h; given as 0s: no limit).
        public var upstreamIdleTimeout: Duration? = .seconds(3600)
        /// `common_http_protocol_options.max_requests_per_connection`: requests on one upstream HTTP
        /// connection before it is closed; nil: no limit.
        public var maxRequestsPerConnection: Int?
        /// Istio's `istio.services[0].host` from the cluster's metadata: the service its requests go to,
        /// as Istio's metrics name it (`destination_service`).
        public var serviceHost: String?
        /// Whether `istio.alpn` may replace the ALPN of this cluster's TLS (istiod's `istio.alpn_override`
        /// metadata says `"false"` for TLS it does not own, such as a DestinationRule's SIMPLE TLS).
        public var allowsALPNOverride = true
        /// `upstream_bind_config.source_address`: the address upstream connections come from (istiod's
        /// 127.0.0.6 on inbound clusters, which the capture rules let through to the application).
        public var bindSource: SocketAddress?

        /// `bindSource` for a connection to `endpoint`, if it is of the same address family (Envoy's
        /// other-family source addresses are outside the subset).
        func bindSource(for endpoint: SocketAddress) -> SocketAddress? {
            bindSource.flatMap { $0.protocol == endpoint.protocol ? $0 : nil }
        }

        /// The transport socket for a connection to `endpoint`: that of the first of
        /// `transport_socket_matches` whose every `match` field the endpoint's metadata has with the same
        /// value, else the cluster's `transport_socket` (nil: plaintext). Chosen once per endpoint when the
        /// cluster is put in force (``ClusterRuntime``), not per connection.
        func transportSocket(for endpoint: Endpoint) -> TransportSocketConfig? {
            transportSocket(matching: endpoint.transportSocketMatch)
        }

        /// The transport socket for an endpoint with `metadata` (its `envoy.transport_socket_match` fields).
        func transportSocket(matching metadata: [String: Google_Protobuf_Value]) -> TransportSocketConfig? {
            for candidate in transportSocketMatches where candidate.match.allSatisfy({ metadata[$0.key] == $0.value }) {
                return candidate.transportSocket
            }
            return transportSocket
        }

        /// Every transport socket the cluster may use: its own and its matches'.
        var allTransportSockets: [TransportSocketConfig] {
            (transportSocket.map { [$0] } ?? []) + transportSocketMatches.compactMap(\.transportSocket)
        }
    }

    public var listeners: [Listener]
    public var clusters: [Cluster]
    /// The admin port from `admin.address`, if given.
    public var adminPort: Int?
    /// Listeners and clusters from a control plane, if configured.
    public var dynamicResources: DynamicResources?
    /// Fields Capstan does not have, ignored, and `Any`s of types it does not know, each with its path.
    public var warnings: [String]
    /// Who this proxy is (`node`), when the bootstrap says; sent on the xDS and SDS streams.
    public var node: Envoy_Config_Core_V3_Node?
    /// Fields of the bootstrap given that Capstan accepts but does not act on, other than its listeners'
    /// and clusters' (those are theirs).
    public var fieldsNotActedOn: [FieldNotActedOn] = []

    /// Every field of the bootstrap that Capstan accepts but does not act on, each as `PATH: accepted, not
    /// acted on: WHY`.
    public var allFieldsNotActedOn: [String] {
        fieldsNotActedOn.map { $0.described() }
            + listeners.enumerated().flatMap { index, listener in
                listener.fieldsNotActedOn.map { $0.described(under: "static_resources.listeners[\(index)]") }
            }
            + clusters.enumerated().flatMap { index, cluster in
                cluster.fieldsNotActedOn.map { $0.described(under: "static_resources.clusters[\(index)]") }
            }
    }

    /// Istio's sidecar without configuration: every connection to its original destination.
    public static func passthrough(outboundPort: Int, inboundPort: Int, inboundTransparent: Bool) -> BootstrapConfig {
        BootstrapConfig(
            listeners: [
                Listener(name: "virtualOutbound", port: outboundPort, direction: .outbound, transparent: false, chains: [],
                         defaultChain: FilterChain(name: "PassthroughFilterChain", destinationPort: nil, prefixes: [],
                                                   action: .relay(.cluster(passthroughCluster)), idleTimeout: nil)),
                Listener(name: "virtualInbound", port: inboundPort, direction: .inbound, transparent: inboundTransparent, chains: [],
                         defaultChain: FilterChain(name: "InboundPassthroughFilterChain", destinationPort: nil, prefixes: [],
                                                   action: .relay(.cluster(inboundPassthroughCluster)), idleTimeout: nil)),
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

    /// How a bootstrap file is written.
    public enum Format: String, Sendable {
        case json = "JSON"
        case yaml = "YAML"

        /// By the file's extension, as Envoy's `--config-path` (`.json`, `.yaml`, `.yml`); otherwise JSON
        /// if the text starts as a JSON object does, YAML if not.
        public init(path: String, text: String) {
            let name = path.lowercased()
            if name.hasSuffix(".json") {
                self = .json
            } else if name.hasSuffix(".yaml") || name.hasSuffix(".yml") {
                self = .yaml
            } else {
                self = text.first(where: { !$0.isWhitespace }) == "{" ? .json : .yaml
            }
        }
    }

    /// Parses a bootstrap as Envoy does: into its `Bootstrap` message (SwiftProtobuf's JSON mapping;
    /// YAML through the same tree), then through the decoder xDS resources take. Fields Capstan does not
    /// have are ignored with a warning naming their path; anything it cannot do is refused with the path.
    public static func parse(_ text: String, format: Format) throws(ConfigError) -> BootstrapConfig {
        let document: ConfigValue
        switch format {
        case .json:
            do {
                document = try ConfigValue.parse(json: text)
            } catch {
                throw ConfigError(path: "", message: "not valid JSON: \(error)")
            }
        case .yaml:
            let documents: [YAMLDocument]
            do throws(YAMLError) {
                documents = try YAMLDocument.parseAll(text)
            } catch {
                throw ConfigError(path: "", message: "not valid YAML: \(error)")
            }
            guard documents.count <= 1 else {
                throw ConfigError(path: "", message: "has \(documents.count) YAML documents: a bootstrap is one")
            }
            document = documents.first?.value ?? .object([:])
        }
        guard case .object = document else { throw ConfigError(path: "", message: "expected an object, found \(document.kind)") }
        _ = XDSResourceDecoder.messageTypesRegistered
        var reader = ProtobufJSONReader()
        let bootstrap = try reader.decode(document, as: Envoy_Config_Bootstrap_V3_Bootstrap.self, path: "")
        return try XDSResourceDecoder.bootstrap(bootstrap, warnings: reader.warnings)
    }

    /// Where the gRPC service a static cluster names is (its first endpoint: Istio's `xds-grpc` and
    /// `sds-grpc` are pipes); nil when there is no such static cluster.
    func grpcServer(cluster name: String) -> XDSServerAddress? { Self.grpcServer(cluster: name, in: clusters) }

    static func grpcServer(cluster name: String, in clusters: [Cluster]) -> XDSServerAddress? {
        guard let cluster = clusters.first(where: { $0.name == name }), case .endpoints(let endpoints) = cluster.discovery,
              let endpoint = endpoints.first?.address else { return nil }
        if let path = endpoint.pathname { return .unixSocket(path: path) }
        guard let host = endpoint.ipAddress, let port = endpoint.port else { return nil }
        return .tcp(host: host, port: port)
    }

    /// Refuses a transport socket whose SDS secrets come from a cluster that is not one of this
    /// bootstrap's static clusters with an endpoint, or over ADS when there is no ADS.
    func checkSecretSources(_ socket: TransportSocketConfig?, path: String) throws(ConfigError) {
        for reference in socket?.secretReferences ?? [] {
            guard let cluster = reference.cluster else {
                guard dynamicResources != nil else {
                    throw ConfigError(path: path, message: "SDS secret \"\(reference.name)\" comes over ADS, but the bootstrap has no ads_config")
                }
                continue
            }
            guard grpcServer(cluster: cluster) != nil else {
                throw ConfigError(path: path, message: "SDS secret \"\(reference.name)\" comes from cluster \"\(cluster)\", which is not a static cluster of the bootstrap with an endpoint")
            }
        }
    }
}

extension CIDRRange {
    /// Whether `address` (an IPv4-mapped IPv6 address as the IPv4 address) is in the range: a filter
    /// chain's `prefix_ranges` test the connection's original destination this way.
    func contains(_ address: SocketAddress) -> Bool {
        IPAddress(socketAddress: address).map(contains) ?? false
    }
}
