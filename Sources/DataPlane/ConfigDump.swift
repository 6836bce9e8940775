import Configuration
import FoundationEssentials
import HTTPProxy
import NIOCore
import SwiftProtobuf
import XDS

/// `/config_dump`: the listeners, clusters and routes in force, in the shape of Envoy's dump: a `configs`
/// list with a clusters dump, (with `?include_eds`) an endpoints dump, a listeners dump, a routes dump
/// and a secrets dump,
/// static resources apart from dynamic ones, and each dynamic resource with the version it came in and when. Transport sockets appear as they
/// were received; private keys never appear.
struct ConfigDump {
    struct Address: Encodable {
        struct Socket: Encodable {
            var address: String
            var port_value: Int
        }
        var socket_address: Socket
    }

    struct ListenerEntry: Encodable {
        struct Chain: Encodable {
            var name: String
            var destination_port: Int?
            var prefix_ranges: [String]
            var transport_protocol: String?
            var application_protocols: [String]?
            /// `filter_chain_match.server_names`, exact names then `*.` wildcards, sorted.
            var server_names: [String]?
            /// A `tcp_proxy` chain's clusters.
            var clusters: [String]?
            /// True when `envoy.filters.network.sni_cluster` names the cluster by the connection's SNI.
            var sni_cluster: Bool?
            var http_connection_manager: HTTPConnectionManager?
            var transport_socket: ConfigValue?
        }
        /// An `http_connection_manager` chain: where its routes come from and its HTTP filters.
        struct HTTPConnectionManager: Encodable {
            var stat_prefix: String
            /// RDS's `route_config_name`, or the inline `route_config`'s name.
            var rds_route_config_name: String?
            var route_config_name: String?
            var http_filters: [String]
        }
        var name: String
        var address: Address
        var traffic_direction: String
        var transparent: Bool
        /// Shown when false, as Envoy shows it.
        var bind_to_port: Bool?
        var use_original_dst: Bool?
        var listener_filters: [String]?
        var filter_chains: [Chain]
        var default_filter_chain: Chain?
    }

    struct ClusterEntry: Encodable {
        struct Match: Encodable {
            var name: String
            var match: ConfigValue
            var transport_socket: ConfigValue?
        }
        /// Envoy's shape: the DEFAULT threshold in force (with Envoy's defaults for limits not given).
        struct CircuitBreakersEntry: Encodable {
            struct Threshold: Encodable {
                var max_connections: Int
                var max_pending_requests: Int
                var max_requests: Int
                var max_retries: Int
                var track_remaining: Bool
            }
            var thresholds: [Threshold]

            init(_ limits: CircuitBreakers.Limits) {
                thresholds = [Threshold(max_connections: limits.maxConnections, max_pending_requests: limits.maxPendingRequests,
                                        max_requests: limits.maxRequests, max_retries: limits.maxRetries,
                                        track_remaining: limits.tracksRemaining)]
            }
        }
        var name: String
        var type: String
        var endpoints: [String]
        var circuit_breakers: CircuitBreakersEntry
        var transport_socket: ConfigValue?
        var transport_socket_matches: [Match]?
        /// How the router speaks HTTP to it: `HTTP1`, `HTTP2` or `USE_DOWNSTREAM_PROTOCOL`.
        var upstream_http_protocol: String
        /// Its outlier detection in force, and the panic threshold that goes with it.
        var outlier_detection: ConfigValue? = nil
        var common_lb_config: ConfigValue? = nil
    }

    /// Envoy's `RoutesConfigDump`: each route configuration from RDS with the version it came in and when
    /// (inline ones are shown with their listener, as in Envoy they are static route configs).
    struct RoutesDump: Encodable {
        struct Dynamic: Encodable {
            var version_info: String
            var route_config: ConfigValue
            var last_updated: String
        }
        var type = "type.googleapis.com/envoy.admin.v3.RoutesConfigDump"
        var dynamic_route_configs: [Dynamic]

        enum CodingKeys: String, CodingKey {
            case type = "@type", dynamic_route_configs
        }

        init(_ routes: [String: ResourceVersions.Route]) {
            var options = JSONEncodingOptions()
            options.preserveProtoFieldNames = true
            dynamic_route_configs = routes.sorted { $0.key < $1.key }.map { _, route in
                var fields: [String: ConfigValue] = ["@type": .string(XDSResourceType.route.typeURL)]
                if let text = try? route.proto.jsonString(options: options), case .object(let json)? = try? ConfigValue.parse(json: text) {
                    fields.merge(json) { first, _ in first }
                }
                return Dynamic(version_info: route.entry.version, route_config: .object(fields), last_updated: route.entry.lastUpdated)
            }
        }
    }

    /// Envoy's `SecretsConfigDump`: each SDS secret with its version, when it came, and when its
    /// certificates expire; the secret in Envoy's shape with the private key redacted.
    struct SecretsDump: Encodable {
        struct Dynamic: Encodable {
            var name: String
            var version_info: String
            var last_updated: String
            /// RFC 3339: the leaf's expiry for a certificate, the first root's to expire for a trust bundle.
            var expiration_time: String
            var identity: String?
            var secret: ConfigValue
        }
        var type = "type.googleapis.com/envoy.admin.v3.SecretsConfigDump"
        var dynamic_active_secrets: [Dynamic]

        enum CodingKeys: String, CodingKey {
            case type = "@type", dynamic_active_secrets
        }

        init(_ secrets: [SecretStore.Secret]) {
            dynamic_active_secrets = secrets.map { secret in
                func inline(_ bytes: [UInt8]) -> ConfigValue { .object(["inline_bytes": .string(Data(bytes).base64EncodedString())]) }
                func time(_ seconds: Int) -> String { Date(timeIntervalSince1970: Double(seconds)).formatted(.iso8601) }
                var fields: [String: ConfigValue] = [
                    "@type": .string(XDSResourceType.secret.typeURL), "name": .string(secret.name),
                ]
                switch secret.content {
                case .certificate(let credentials):
                    fields["tls_certificate"] = .object(["certificate_chain": inline(credentials.chainPEM),
                                                         "private_key": .object(["inline_string": .string("[redacted]")])])
                    return Dynamic(name: secret.name, version_info: secret.version, last_updated: secret.lastUpdated,
                                   expiration_time: time(credentials.notAfter), identity: credentials.identity, secret: .object(fields))
                case .trust(let bundle):
                    fields["validation_context"] = .object(["trusted_ca": inline(bundle.pem)])
                    return Dynamic(name: secret.name, version_info: secret.version, last_updated: secret.lastUpdated,
                                   expiration_time: time(bundle.notAfter), identity: nil, secret: .object(fields))
                }
            }
        }
    }

    struct ClustersDump: Encodable {
        struct Static: Encodable { var cluster: ClusterEntry }
        struct Dynamic: Encodable {
            var version_info: String
            var cluster: ClusterEntry
            var last_updated: String
        }
        var type = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"
        var version_info: String?
        var static_clusters: [Static]
        var dynamic_active_clusters: [Dynamic]
        var dynamic_warming_clusters: [String]

        enum CodingKeys: String, CodingKey {
            case type = "@type", version_info, static_clusters, dynamic_active_clusters, dynamic_warming_clusters
        }
    }

    /// Envoy's `EndpointsConfigDump` (only with `?include_eds`, as Envoy): the endpoints of static
    /// clusters, and each `ClusterLoadAssignment` EDS delivered with the version it came in.
    struct EndpointsDump: Encodable {
        struct Static: Encodable { var endpoint_config: Assignment }
        struct Dynamic: Encodable {
            var version_info: String
            var endpoint_config: Assignment
            var last_updated: String
        }
        /// A `ClusterLoadAssignment` in Envoy's JSON: its localities (one without localities given) with
        /// their endpoints, `locality`, `load_balancing_weight` and `priority` where given.
        struct Assignment: Encodable {
            struct Locality: Encodable {
                struct Place: Encodable { var region: String; var zone: String; var sub_zone: String }
                var locality: Place?
                var lb_endpoints: [LoadBalanced]
                var load_balancing_weight: Int?
                var priority: Int?
            }
            struct LoadBalanced: Encodable {
                /// An IP endpoint's `socket_address`, or a unix socket's `pipe`.
                struct EndpointAddress: Encodable {
                    struct Pipe: Encodable { var path: String }
                    var socket_address: Address.Socket?
                    var pipe: Pipe?
                }
                struct Endpoint: Encodable { var address: EndpointAddress }
                var endpoint: Endpoint
                /// Shown when not 1, the weight every endpoint has unless given.
                var load_balancing_weight: Int?
            }
            var type = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            var cluster_name: String
            var endpoints: [Locality]

            enum CodingKeys: String, CodingKey {
                case type = "@type", cluster_name, endpoints
            }

            init(clusterName: String, endpoints: [BootstrapConfig.Cluster.Endpoint], localities: [BootstrapConfig.Cluster.Locality] = []) {
                cluster_name = clusterName
                let addresses = endpoints.compactMap { endpoint -> (Int, LoadBalanced)? in
                    let weight = endpoint.weight == 1 ? nil : endpoint.weight
                    let address = endpoint.address
                    if let path = address.pathname {
                        return (endpoint.locality, LoadBalanced(endpoint: .init(address: .init(pipe: .init(path: path))), load_balancing_weight: weight))
                    }
                    guard let ip = address.ipAddress else { return nil }
                    return (endpoint.locality, LoadBalanced(endpoint: .init(address: .init(socket_address: .init(address: ip, port_value: address.port ?? 0))),
                                                            load_balancing_weight: weight))
                }
                guard !localities.isEmpty else {
                    self.endpoints = addresses.isEmpty ? [] : [Locality(lb_endpoints: addresses.map(\.1))]
                    return
                }
                // Each locality that has endpoints, in the assignment's order.
                self.endpoints = localities.enumerated().compactMap { index, given in
                    let members = addresses.filter { $0.0 == index }.map(\.1)
                    guard !members.isEmpty else { return nil }
                    let parts = given.name.split(separator: "/", omittingEmptySubsequences: false).map(String.init) + ["", "", ""]
                    return Locality(locality: given.name.isEmpty ? nil : .init(region: parts[0], zone: parts[1], sub_zone: parts[2]),
                                    lb_endpoints: members, load_balancing_weight: given.weight > 0 ? given.weight : nil,
                                    priority: given.priority > 0 ? given.priority : nil)
                }
            }
        }
        var type = "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump"
        var static_endpoint_configs: [Static]
        var dynamic_endpoint_configs: [Dynamic]

        enum CodingKeys: String, CodingKey {
            case type = "@type", static_endpoint_configs, dynamic_endpoint_configs
        }
    }

    struct ListenersDump: Encodable {
        struct Static: Encodable { var listener: ListenerEntry }
        struct Dynamic: Encodable {
            struct State: Encodable {
                var version_info: String
                var listener: ListenerEntry
                var last_updated: String
            }
            var name: String
            var active_state: State?
            /// A version waiting for its route configurations (the active one, if any, serves meanwhile).
            var warming_state: State?
        }
        var type = "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"
        var version_info: String?
        var static_listeners: [Static]
        var dynamic_listeners: [Dynamic]

        enum CodingKeys: String, CodingKey {
            case type = "@type", version_info, static_listeners, dynamic_listeners
        }
    }

    var clusters: ClustersDump
    var endpoints: EndpointsDump?
    var listeners: ListenersDump
    var routes: RoutesDump
    var secrets: SecretsDump

    /// `includeEndpoints`: Envoy's `?include_eds`, which adds the endpoints dump after the clusters.
    init(runtime: ProxyRuntime, includeEndpoints: Bool = false) {
        let configuration = runtime.configuration
        let versions = runtime.versions.withLockedValue { $0 }
        func chain(_ chain: BootstrapConfig.FilterChain) -> ListenerEntry.Chain {
            var manager: ListenerEntry.HTTPConnectionManager?
            if let http = chain.httpConnectionManager {
                var inlineName: String?
                if case .inline(let table) = http.routes { inlineName = table.name }
                manager = .init(stat_prefix: http.statPrefix, rds_route_config_name: http.discoveredRouteName, route_config_name: inlineName,
                                http_filters: http.filters.map(\.name))
            }
            return .init(name: chain.name, destination_port: chain.destinationPort, prefix_ranges: chain.prefixes.map(\.description),
                         transport_protocol: chain.transportProtocol,
                         application_protocols: chain.applicationProtocols.isEmpty ? nil : chain.applicationProtocols,
                         server_names: chain.serverNames.isEmpty ? nil
                             : chain.serverNames.exact.sorted() + chain.serverNames.wildcardSuffixes.sorted().map { "*.\($0)" },
                         clusters: chain.route?.clusterNames, sni_cluster: chain.clusterFromServerName ? true : nil,
                         http_connection_manager: manager, transport_socket: chain.transportSocket?.dump)
        }
        func entry(_ listener: BootstrapConfig.Listener) -> ListenerEntry {
            ListenerEntry(name: listener.name,
                          address: Address(socket_address: .init(address: listener.host, port_value: listener.port)),
                          traffic_direction: listener.direction == .inbound ? "INBOUND" : "OUTBOUND",
                          transparent: listener.transparent,
                          bind_to_port: listener.bindsToPort ? nil : false,
                          use_original_dst: listener.usesOriginalDestination ? true : nil,
                          listener_filters: listener.listenerFilters.isEmpty ? nil : listener.listenerFilters,
                          filter_chains: listener.chains.map(chain),
                          default_filter_chain: listener.defaultChain.map(chain))
        }
        var listeners = ListenersDump(version_info: versions.accepted["LDS"], static_listeners: [], dynamic_listeners: [])
        for listener in configuration.listeners.values.sorted(by: { $0.name < $1.name }) {
            if let version = versions.listeners[listener.name] {
                let warming = versions.warmingListeners[listener.name]
                listeners.dynamic_listeners.append(.init(name: listener.name, active_state: .init(
                    version_info: version.version, listener: entry(listener), last_updated: version.lastUpdated),
                    warming_state: warming.map { .init(version_info: $0.entry.version, listener: entry($0.listener), last_updated: $0.entry.lastUpdated) }))
            } else {
                listeners.static_listeners.append(.init(listener: entry(listener)))
            }
        }
        // New listeners waiting for their routes: warming, nothing active.
        for (name, warming) in versions.warmingListeners.sorted(by: { $0.key < $1.key }) where configuration.listeners[name] == nil {
            listeners.dynamic_listeners.append(.init(name: name, active_state: nil, warming_state: .init(
                version_info: warming.entry.version, listener: entry(warming.listener), last_updated: warming.entry.lastUpdated)))
        }
        var clusters = ClustersDump(version_info: versions.accepted["CDS"], static_clusters: [], dynamic_active_clusters: [],
                                    dynamic_warming_clusters: versions.warmingClusters)
        for cluster in configuration.clusters.values.sorted(by: { $0.name < $1.name }) {
            let config = cluster.config
            let matches = config.transportSocketMatches.map { match in
                ClusterEntry.Match(name: match.name, match: Self.value(match.match), transport_socket: match.transportSocket?.dump)
            }
            let upstream = switch config.upstreamHTTP {
            case .http1: "HTTP1"
            case .http2: "HTTP2"
            case .downstream: "USE_DOWNSTREAM_PROTOCOL"
            }
            var entry: ClusterEntry
            switch config.discovery {
            case .originalDestination:
                entry = ClusterEntry(name: cluster.name, type: "ORIGINAL_DST", endpoints: [], circuit_breakers: .init(config.circuitBreakers),
                                     transport_socket: config.transportSocket?.dump, transport_socket_matches: matches.isEmpty ? nil : matches,
                                     upstream_http_protocol: upstream)
            case .endpoints(let endpoints):
                entry = ClusterEntry(name: cluster.name, type: versions.endpointDiscovered.contains(cluster.name) ? "EDS" : "STATIC",
                                     endpoints: endpoints.map { $0.address.pathname ?? "\($0.address.ipAddress ?? "?"):\($0.address.port ?? 0)" },
                                     circuit_breakers: .init(config.circuitBreakers), transport_socket: config.transportSocket?.dump,
                                     transport_socket_matches: matches.isEmpty ? nil : matches, upstream_http_protocol: upstream)
            }
            if let outlier = config.outlierDetection {
                entry.outlier_detection = outlier.dump
                entry.common_lb_config = .object(["healthy_panic_threshold": .object(["value": .number(config.healthyPanicThreshold)])])
            }
            if let version = versions.clusters[cluster.name] {
                clusters.dynamic_active_clusters.append(.init(version_info: version.version, cluster: entry, last_updated: version.lastUpdated))
            } else {
                clusters.static_clusters.append(.init(cluster: entry))
            }
        }
        self.clusters = clusters
        if includeEndpoints {
            var endpoints = EndpointsDump(static_endpoint_configs: [], dynamic_endpoint_configs: [])
            for cluster in configuration.clusters.values.sorted(by: { $0.name < $1.name })
            where versions.clusters[cluster.name] == nil {
                if case .endpoints(let addresses) = cluster.config.discovery {
                    endpoints.static_endpoint_configs.append(.init(endpoint_config: .init(clusterName: cluster.name, endpoints: addresses,
                                                                                              localities: cluster.config.localities)))
                }
            }
            for (service, assignment) in versions.assignments.sorted(by: { $0.key < $1.key }) {
                endpoints.dynamic_endpoint_configs.append(.init(
                    version_info: assignment.entry.version,
                    endpoint_config: .init(clusterName: service, endpoints: assignment.endpoints, localities: assignment.localities),
                    last_updated: assignment.entry.lastUpdated))
            }
            self.endpoints = endpoints
        }
        self.listeners = listeners
        self.routes = RoutesDump(versions.routes)
        self.secrets = SecretsDump(runtime.secrets.all)
    }

    /// A `match` struct as JSON.
    private static func value(_ fields: [String: Google_Protobuf_Value]) -> ConfigValue {
        var message = Google_Protobuf_Struct()
        message.fields = fields
        guard let text = try? message.jsonString(), let parsed = try? ConfigValue.parse(json: text) else { return .object([:]) }
        return parsed
    }

    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let configs = [AnyEncodable(clusters)] + (endpoints.map { [AnyEncodable($0)] } ?? [])
            + [AnyEncodable(listeners), AnyEncodable(routes), AnyEncodable(secrets)]
        let data = (try? encoder.encode(["configs": configs])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}

/// Lets two lists of different types share one JSON object.
private struct AnyEncodable: Encodable {
    let encodeValue: (any Encoder) throws -> Void
    init(_ value: some Encodable) { encodeValue = value.encode }
    func encode(to encoder: any Encoder) throws { try encodeValue(encoder) }
}
