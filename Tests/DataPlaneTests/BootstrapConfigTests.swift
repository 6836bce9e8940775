import Configuration
@testable import DataPlane
import Foundation
import NIOCore
import SwiftProtobuf
import Testing
import XDS

/// Reading a bootstrap as Envoy does: YAML or JSON into the `Bootstrap` message, then through the decoder
/// xDS resources take. Every refusal and every field left out names its path.
@Suite struct BootstrapConfigTests {
    static let tcpProxyType = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

    /// A listener with a weighted chain and a default chain, and the clusters they route to, as YAML.
    static let yaml = """
        static_resources:
          listeners:
          - name: virtualOutbound
            address: {socket_address: {address: 0.0.0.0, port_value: 15001}}
            traffic_direction: OUTBOUND
            use_original_dst: true
            filter_chains:
            - name: reviews
              filter_chain_match:
                destination_port: 9080
                prefix_ranges: [{address_prefix: 198.51.100.0, prefix_len: 24}]
              filters:
              - name: envoy.filters.network.tcp_proxy
                typed_config:
                  "@type": \(tcpProxyType)
                  stat_prefix: reviews
                  idle_timeout: 30s
                  weighted_clusters:
                    clusters: [{name: reviews-v1, weight: 90}, {name: reviews-v2, weight: 10}]
            default_filter_chain:
              filters:
              - name: envoy.filters.network.tcp_proxy
                typed_config: {"@type": \(tcpProxyType), cluster: PassthroughCluster}
          clusters:
          - name: reviews-v1
            type: STATIC
            connect_timeout: 0.25s
            lb_policy: LEAST_REQUEST
            circuit_breakers:
              thresholds: [{max_connections: 3, max_requests: 10}, {priority: HIGH, max_connections: 1}]
            load_assignment:
              cluster_name: reviews-v1
              endpoints:
              - lb_endpoints:
                - endpoint: {address: {socket_address: {address: 198.51.100.10, port_value: 9080}}}
                  load_balancing_weight: 3
                - endpoint: {address: {socket_address: {address: 198.51.100.11, port_value: 9080}}}
          - name: reviews-v2
            load_assignment:
              endpoints:
              - lb_endpoints:
                - endpoint: {address: {socket_address: {address: 198.51.100.99, port_value: 9080}}}
          - {name: PassthroughCluster, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED}
        """

    /// The same, as JSON.
    static let json = """
        {"static_resources": {
          "listeners": [{"name": "virtualOutbound", "traffic_direction": "OUTBOUND", "use_original_dst": true,
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
            "filter_chains": [{"name": "reviews",
              "filter_chain_match": {"destination_port": 9080, "prefix_ranges": [{"address_prefix": "198.51.100.0", "prefix_len": 24}]},
              "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {"@type": "\(tcpProxyType)",
                "stat_prefix": "reviews", "idle_timeout": "30s",
                "weighted_clusters": {"clusters": [{"name": "reviews-v1", "weight": 90}, {"name": "reviews-v2", "weight": 10}]}}}]}],
            "default_filter_chain": {"filters": [{"name": "envoy.filters.network.tcp_proxy",
              "typed_config": {"@type": "\(tcpProxyType)", "cluster": "PassthroughCluster"}}]}}],
          "clusters": [
            {"name": "reviews-v1", "type": "STATIC", "connect_timeout": "0.25s", "lb_policy": "LEAST_REQUEST",
             "circuit_breakers": {"thresholds": [{"max_connections": 3, "max_requests": 10}, {"priority": "HIGH", "max_connections": 1}]},
             "load_assignment": {"cluster_name": "reviews-v1", "endpoints": [{"lb_endpoints": [
               {"endpoint": {"address": {"socket_address": {"address": "198.51.100.10", "port_value": 9080}}}, "load_balancing_weight": 3},
               {"endpoint": {"address": {"socket_address": {"address": "198.51.100.11", "port_value": 9080}}}}]}]}},
            {"name": "reviews-v2", "load_assignment": {"endpoints": [{"lb_endpoints": [
               {"endpoint": {"address": {"socket_address": {"address": "198.51.100.99", "port_value": 9080}}}}]}]}},
            {"name": "PassthroughCluster", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED"}
          ]}}
        """

    /// The same listener and clusters as xDS resources, built as a control plane would.
    static func resources() throws -> (listeners: [Google_Protobuf_Any], clusters: [Google_Protobuf_Any]) {
        func tcpProxy(_ configure: (inout Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy) -> Void) throws -> Envoy_Config_Listener_V3_Filter {
            var proxy = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy()
            configure(&proxy)
            return try .with {
                $0.name = "envoy.filters.network.tcp_proxy"
                $0.typedConfig = try Google_Protobuf_Any(message: proxy)
            }
        }
        var listener = Envoy_Config_Listener_V3_Listener()
        listener.name = "virtualOutbound"
        listener.address.socketAddress = .with { $0.address = "0.0.0.0"; $0.portValue = 15001 }
        listener.trafficDirection = .outbound
        listener.useOriginalDst = Google_Protobuf_BoolValue(true)
        listener.filterChains = [try .with {
            $0.name = "reviews"
            $0.filterChainMatch.destinationPort = Google_Protobuf_UInt32Value(9080)
            $0.filterChainMatch.prefixRanges = [.with { $0.addressPrefix = "198.51.100.0"; $0.prefixLen = Google_Protobuf_UInt32Value(24) }]
            $0.filters = [try tcpProxy {
                $0.statPrefix = "reviews"
                $0.idleTimeout = .with { $0.seconds = 30 }
                $0.weightedClusters.clusters = [.with { $0.name = "reviews-v1"; $0.weight = 90 }, .with { $0.name = "reviews-v2"; $0.weight = 10 }]
            }]
        }]
        listener.defaultFilterChain.filters = [try tcpProxy { $0.cluster = "PassthroughCluster" }]

        func endpoint(_ address: String, weight: UInt32? = nil) -> Envoy_Config_Endpoint_V3_LbEndpoint {
            .with {
                $0.endpoint.address.socketAddress = .with { $0.address = address; $0.portValue = 9080 }
                if let weight { $0.loadBalancingWeight = Google_Protobuf_UInt32Value(weight) }
            }
        }
        var v1 = Envoy_Config_Cluster_V3_Cluster()
        v1.name = "reviews-v1"
        v1.type = .static
        v1.connectTimeout = .with { $0.nanos = 250_000_000 }
        v1.lbPolicy = .leastRequest
        v1.circuitBreakers.thresholds = [
            .with { $0.maxConnections = Google_Protobuf_UInt32Value(3); $0.maxRequests = Google_Protobuf_UInt32Value(10) },
            .with { $0.priority = .high; $0.maxConnections = Google_Protobuf_UInt32Value(1) },
        ]
        v1.loadAssignment.clusterName = "reviews-v1"
        v1.loadAssignment.endpoints = [.with { $0.lbEndpoints = [endpoint("198.51.100.10", weight: 3), endpoint("198.51.100.11")] }]
        var v2 = Envoy_Config_Cluster_V3_Cluster()
        v2.name = "reviews-v2"
        v2.loadAssignment.endpoints = [.with { $0.lbEndpoints = [endpoint("198.51.100.99")] }]
        var passthrough = Envoy_Config_Cluster_V3_Cluster()
        passthrough.name = "PassthroughCluster"
        passthrough.type = .originalDst
        passthrough.lbPolicy = .clusterProvided
        return ([try .packed(listener, as: .listener)], try [v1, v2, passthrough].map { try .packed($0, as: .cluster) })
    }

    static func dump(_ config: BootstrapConfig) -> String {
        ConfigDump(runtime: ProxyRuntime(options: ProxyOptions(), config: config), includeEndpoints: true).json
    }

    @Test func yamlJSONAndXDSGiveTheSameConfigurationAndDump() throws {
        let fromYAML = try BootstrapConfig.parse(Self.yaml, format: .yaml)
        let fromJSON = try BootstrapConfig.parse(Self.json, format: .json)
        let (listeners, clusters) = try Self.resources()
        let fromXDS = BootstrapConfig(listeners: try XDSResourceDecoder.listeners(listeners),
                                      clusters: try XDSResourceDecoder.clusters(clusters).map(\.cluster),
                                      adminPort: nil, dynamicResources: nil, warnings: [])
        #expect(fromYAML.warnings.isEmpty && fromJSON.warnings.isEmpty)
        #expect(fromYAML.listeners == fromXDS.listeners)
        #expect(fromJSON.listeners == fromXDS.listeners)
        #expect(fromYAML.clusters == fromXDS.clusters)
        #expect(fromJSON.clusters == fromXDS.clusters)
        #expect(Self.dump(fromYAML) == Self.dump(fromXDS))
        #expect(Self.dump(fromJSON) == Self.dump(fromXDS))

        // What was read: the first DEFAULT threshold (HIGH is for high-priority routes), the endpoint
        // weights, the timeouts.
        let v1 = try #require(fromYAML.clusters.first)
        #expect(v1.circuitBreakers.maxConnections == 3 && v1.circuitBreakers.maxRequests == 10)
        #expect(v1.connectTimeout == .milliseconds(250))
        #expect(v1.discovery == .endpoints([.init(try SocketAddress(ipAddress: "198.51.100.10", port: 9080), weight: 3),
                                            .init(try SocketAddress(ipAddress: "198.51.100.11", port: 9080))]))
        #expect(Self.dump(fromYAML).contains("\"load_balancing_weight\" : 3"))
        let chain = try #require(fromYAML.listeners.first?.chains.first)
        #expect(chain.idleTimeout == .seconds(30))
        #expect(chain.route == .weighted([("reviews-v1", 90), ("reviews-v2", 10)]))
    }

    @Test func fieldsAcceptedButNotActedOnAreListedAndCounted() throws {
        let config = try BootstrapConfig.parse(Self.yaml, format: .yaml)
        #expect(config.allFieldsNotActedOn == [
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefix: accepted, not acted on: Capstan keeps no tcp.<stat_prefix>.* statistics (its cluster and listener statistics are Envoy's)",
        ])
        #expect(config.listeners.first?.usesOriginalDestination == true)
        let runtime = ProxyRuntime(options: { var options = ProxyOptions(); options.bootstrap = config; return options }(), config: config)
        #expect(runtime.stats.envoyText.contains("config.fields_not_acted_on: 1\n"))
        #expect(runtime.stats.prometheusText.contains("# TYPE envoy_config_fields_not_acted_on gauge\nenvoy_config_fields_not_acted_on 1\n"))
    }

    @Test func filterChainsMatchPortThenLongestPrefix() throws {
        func chain(_ match: String, _ cluster: String) -> String {
            #"{\#(match) "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {"@type": "\#(Self.tcpProxyType)", "cluster": "\#(cluster)"}}]}"#
        }
        let document = """
            {"static_resources": {
              "listeners": [{"name": "out", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
                "filter_chains": [
                  \(chain(#""filter_chain_match": {"destination_port": 80, "prefix_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 8}]},"#, "wide")),
                  \(chain(#""filter_chain_match": {"destination_port": 80, "prefix_ranges": [{"address_prefix": "10.1.0.0", "prefix_len": 16}]},"#, "narrow")),
                  \(chain(#""filter_chain_match": {"prefix_ranges": [{"address_prefix": "2001:db8::", "prefix_len": 32}]},"#, "v6"))
                ],
                "default_filter_chain": \(chain("", "pass"))}],
              "clusters": [{"name": "pass", "type": "ORIGINAL_DST"}, {"name": "v6", "type": "ORIGINAL_DST"},
                           {"name": "wide", "type": "ORIGINAL_DST"}, {"name": "narrow", "type": "ORIGINAL_DST"}]}}
            """
        let listener = try #require(try BootstrapConfig.parse(document, format: .json).listeners.first)
        func address(_ ip: String, _ port: Int) throws -> SocketAddress { try SocketAddress(ipAddress: ip, port: port) }
        #expect(listener.chain(for: try address("10.1.2.3", 80))?.route == .cluster("narrow"))
        #expect(listener.chain(for: try address("10.9.2.3", 80))?.route == .cluster("wide"))
        // A port with no chain of its own falls to the chains without a port, then to the default.
        #expect(listener.chain(for: try address("10.1.2.3", 81))?.route == .cluster("pass"))
        #expect(listener.chain(for: try address("2001:db8::7", 443))?.route == .cluster("v6"))
        #expect(listener.chain(for: try address("::ffff:10.1.2.3", 80))?.route == .cluster("narrow"))
    }

    /// RBAC filters in a bootstrap are read by their types, HTTP and network, with no warning.
    @Test func rbacFiltersInABootstrapAreReadByTheirTypes() throws {
        let rbac = #"{"policies": {"p": {"permissions": [{"destination_port": 8080}], "principals": [{"any": true}]}}}"#
        let document = """
            {"static_resources": {"listeners": [{"name": "in",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": 8080}},
                "filter_chains": [{"filters": [
                  {"name": "envoy.filters.network.rbac", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC", "stat_prefix": "tcp.", "rules": \(rbac)}},
                  {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "in", "route_config": {"name": "in"},
                    "http_filters": [
                      {"name": "envoy.filters.http.rbac", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC", "rules": \(rbac)}},
                      {"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}]}}
            """
        let config = try BootstrapConfig.parse(document, format: .json)
        #expect(config.warnings.isEmpty, "\(config.warnings)")
        let chain = try #require(config.listeners.first?.chains.first)
        #expect(chain.authorization.engines.count == 1)
        #expect(chain.httpConnectionManager?.filters.map(\.name) == ["envoy.filters.http.rbac", "envoy.filters.http.router"])
    }

    @Test func fieldsCapstanDoesNotHaveAreWarningsWithTheirPaths() throws {
        let document = """
            {"stats_sinks": [], "static_resources": {"secrets": [],
              "listeners": [{"name": "in", "per_connection_buffer_limit_bytes": 32768,
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
                "listener_filters": [{"name": "envoy.filters.listener.original_dst", "typed_config": {
                  "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}}],
                "default_filter_chain": {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                  "@type": "\(Self.tcpProxyType)", "cluster": "app", "access_log": []}}]}}],
              "clusters": [{"name": "app", "type": "ORIGINAL_DST", "alt_stat_name": "app;"}]}}
            """
        let config = try BootstrapConfig.parse(document, format: .json)
        #expect(config.warnings.sorted() == [
            "static_resources.clusters[0].alt_stat_name: not supported by Capstan, ignored",
            "static_resources.listeners[0].per_connection_buffer_limit_bytes: not supported by Capstan, ignored",
            "static_resources.secrets: not supported by Capstan, ignored",
            "stats_sinks: not supported by Capstan, ignored",
        ])
        #expect(config.listeners.first?.defaultChain?.route == .cluster("app"))
    }

    @Test(arguments: [
        (#"{"static_resources": {"clusters": [{"name": "a", "connect_timeout": "soon", "type": "ORIGINAL_DST"}]}}"#,
         #"static_resources.clusters[0].connect_timeout: expected a duration such as "1s" or "0.25s", found "soon""#),
        (#"{"static_resources": {"clusters": [{"name": "a", "type": "LOGICAL_DNS", "load_assignment": {"endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "example.org", "port_value": 80}}}}]}]}}]}}"#,
         "static_resources.clusters[0].type: STRICT_DNS and LOGICAL_DNS are supported for clusters from CDS, not in a bootstrap yet"),
        (#"{"static_resources": {"clusters": [{"name": "a", "type": "MAGIC"}]}}"#,
         #"static_resources.clusters[0].type: "MAGIC" is not a value Capstan knows for this field"#),
        (#"{"static_resources": {"clusters": [{"name": "a", "type": "EDS"}]}}"#,
         "static_resources.clusters[0].type: EDS is not supported in a bootstrap: Capstan asks for endpoints only for clusters from CDS"),
        (#"{"static_resources": {"clusters": [{"type": "ORIGINAL_DST"}]}}"#, "static_resources.clusters[0].name: is required"),
        (#"{"static_resources": {"clusters": [{"name": "a", "type": "ORIGINAL_DST"}, {"name": "a", "type": "ORIGINAL_DST"}]}}"#,
         #"static_resources.clusters[1].name: duplicate cluster "a""#),
        (#"{"static_resources": {"clusters": [{"name": "a", "load_assignment": {"endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "192.0.2.1", "port_value": 80}}}, "load_balancing_weight": "heavy"}]}]}}]}}"#,
         #"static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].load_balancing_weight: expected a whole number, found "heavy""#),
        (#"{"static_resources": {"listeners": [{"name": "l", "address": {"socket_address": {"address": "host", "port_value": 1}}}]}}"#,
         #"static_resources.listeners[0].address.socket_address.address: "host" is not an IP address"#),
        (#"{"static_resources": {"listeners": [{"name": "l", "address": {"socket_address": {"address": "10.96.0.5", "port_value": 9080}}}]}}"#,
         #"static_resources.listeners[0].address.socket_address.address: "10.96.0.5" is not supported for a listener that binds: Capstan listens on all addresses (0.0.0.0 or ::)"#),
        (#"{"static_resources": {"listeners": [{"name": "a", "bind_to_port": false, "address": {"socket_address": {"address": "10.96.0.5", "port_value": 9080}}}, {"name": "b", "bind_to_port": false, "address": {"socket_address": {"address": "10.96.0.5", "port_value": 9080}}}]}}"#,
         #"static_resources.listeners[1].address: 10.96.0.5:9080 is also listener "a"'s (neither binds, so a connection handed off could go to either)"#),
        (#"{"static_resources": {"listeners": [{"name": "l", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 1}}, "default_filter_chain": {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", "stat_prefix": "l", "rds": {"config_source": {"ads": {}}, "route_config_name": "80"}, "http_filters": [{"name": "envoy.filters.http.router"}]}}]}}]}}"#,
         "static_resources.listeners[0].default_filter_chain.filters[0].typed_config.rds: needs dynamic_resources: route configurations come over ADS"),
        (#"{"static_resources": {"listeners": [{"name": "l", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 1}}, "default_filter_chain": {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {"cluster": "a"}}]}}]}}"#,
         #"static_resources.listeners[0].default_filter_chain.filters[0].typed_config: needs "@type", the type URL of the message it holds"#),
        (#"{"static_resources": {"listeners": [{"name": "l", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 1}}, "default_filter_chain": {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "cluster": "a", "weighted_clusters": {"clusters": [{"name": "a", "weight": 1}]}}}]}}]}}"#,
         "static_resources.listeners[0].default_filter_chain.filters[0].typed_config: sets more than one field of a oneof: only one of them may be given"),
        (#"{"static_resources": {"listeners": [{"name": "l", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 1}}, "default_filter_chain": {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "cluster": "nowhere"}}]}}]}}"#,
         #"static_resources.listeners[0].default_filter_chain.filters[0].typed_config: routes to unknown cluster "nowhere""#),
        (#"{"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": -1}}}}"#,
         "admin.address.socket_address.port_value: -1 is out of range for this field"),
        (#"{"admin": {"address": {"socket_address": {"address": "0.0.0.0", "port_value": 15000}}}}"#,
         #"admin.address.socket_address.address: "0.0.0.0" is not supported: the admin API is served on 127.0.0.1"#),
        (#"{"dynamic_resources": {"lds_config": {"ads": {}}, "cds_config": {"ads": {}}, "ads_config": {"api_type": "DELTA_GRPC"}}}"#,
         "dynamic_resources.ads_config.api_type: DELTA_GRPC is not supported: Capstan speaks state-of-the-world GRPC"),
        (#"{"dynamic_resources": {"cds_config": {"ads": {}}}}"#,
         "dynamic_resources.lds_config: is required: Capstan takes both listeners and clusters from the control plane"),
        (#"[1, 2]"#, "(document): expected an object, found a list"),
        (#"{"admin": "#, "(document): not valid JSON"),
    ])
    func refusalsNameTheField(json: String, message: String) {
        #expect(throws: ConfigError.self) { try BootstrapConfig.parse(json, format: .json) }
        do {
            _ = try BootstrapConfig.parse(json, format: .json)
        } catch {
            #expect(error.description.hasPrefix(message), "\(error.description)")
        }
    }

    @Test func yamlRefusalsNameTheFieldToo() {
        #expect(throws: ConfigError(path: "static_resources.clusters[0].connect_timeout",
                                    message: #"expected a duration such as "1s" or "0.25s", found 5"#)) {
            try BootstrapConfig.parse("static_resources:\n  clusters:\n  - {name: a, type: ORIGINAL_DST, connect_timeout: 5}\n", format: .yaml)
        }
        #expect(throws: ConfigError.self) { try BootstrapConfig.parse("static_resources: [\n", format: .yaml) }
    }

    @Test func theFormatComesFromTheNameOrTheFirstCharacter() {
        #expect(BootstrapConfig.Format(path: "/etc/envoy.yaml", text: "{}") == .yaml)
        #expect(BootstrapConfig.Format(path: "envoy.YML", text: "") == .yaml)
        #expect(BootstrapConfig.Format(path: "envoy-rev.json", text: "node: {}") == .json)
        #expect(BootstrapConfig.Format(path: "bootstrap", text: "\n  {\"node\": {}}") == .json)
        #expect(BootstrapConfig.Format(path: "bootstrap", text: "node:\n  id: a\n") == .yaml)
    }

    // MARK: Istio's own bootstrap

    /// Istio's `pkg/bootstrap/testdata/default_golden.json`, the bootstrap pilot-agent renders for Envoy.
    static func istioBootstrap() throws -> String {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return try String(contentsOf: repository.appendingPathComponent("../shared/istio-config/bootstrap-default_golden.json"), encoding: .utf8)
    }

    /// Istio's bootstrap is refused only for what each refusal names: the compressor HTTP filters of its
    /// Prometheus listener (Capstan compresses nothing), and delta xDS. Without those, it is accepted,
    /// both HTTP listeners with their inline routes, and every field of it is either read or named in a
    /// warning: re-encoding the message Capstan read shows each field it kept.
    @Test func istiosBootstrapIsRefusedOnlyForTheFieldsItNames() throws {
        var document = try ConfigValue.parse(json: try Self.istioBootstrap())
        let filters = FieldPosition(steps: [.key("static_resources"), .key("listeners"), .index(0), .key("filter_chains"), .index(0),
                                            .key("filters"), .index(0), .key("typed_config"), .key("http_filters")])
        let refusals: [(path: String, message: String, fix: (inout ConfigValue) -> Void)] = [
            ("static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0]",
             #""envoy.filters.http.compressor.brotli" (envoy.extensions.filters.http.compressor.v3.Compressor) is not supported: Capstan has envoy.filters.http.router, envoy.filters.http.fault, envoy.filters.http.cors, envoy.filters.http.jwt_authn, envoy.filters.http.rbac, envoy.filters.http.ext_authz, istio.alpn and, not acted on yet, istio.metadata_exchange, envoy.filters.http.grpc_stats, istio.stats"#,
             { document in
                 // Without the three compressors, only the router is left.
                 guard case .array(let list)? = filters.value(in: document) else { return }
                 filters.replace(in: &document, with: .array(Array(list.suffix(1))))
             }),
            ("dynamic_resources.ads_config.api_type", "DELTA_GRPC is not supported: Capstan speaks state-of-the-world GRPC",
             { FieldPosition(steps: [.key("dynamic_resources"), .key("ads_config"), .key("api_type")]).replace(in: &$0, with: .string("GRPC")) }),
        ]
        for (path, message, fix) in refusals {
            #expect(throws: ConfigError(path: path, message: message)) { try BootstrapConfig.parse(document.jsonText(), format: .json) }
            fix(&document)
        }
        let config = try BootstrapConfig.parse(document.jsonText(), format: .json)
        #expect(config.dynamicResources?.server == .unixSocket(path: "/tmp/XDS"))
        #expect(config.adminPort == 15000)
        #expect(config.clusters.map(\.name) == ["prometheus_stats", "agent", "sds-grpc", "xds-grpc"])
        #expect(config.clusters.map(\.upstreamHTTP) == [.http1, .http1, .http2, .http2])
        #expect(config.warnings.count == 18, "\(config.warnings)")
        // The Prometheus and health endpoints: HTTP, routed inline to their static clusters.
        #expect(config.listeners.map(\.name) == ["0.0.0.0_15090", "0.0.0.0_15021"])
        let managers = config.listeners.compactMap { $0.chains.first?.httpConnectionManager }
        #expect(managers.map(\.statPrefix) == ["stats", "agent"])
        #expect(managers.map { $0.filters.map(\.name) } == [["envoy.filters.http.router"], ["envoy.filters.http.router"]])
        for expected in ["application_log_config", "layered_runtime", "bootstrap_extensions", "stats_config", "overload_manager",
                         "cluster_manager", "deferred_stat_options", "admin.access_log", "admin.profile_path",
                         "static_resources.clusters[3].alt_stat_name",
                         "static_resources.clusters[3].max_requests_per_connection"] {
            #expect(config.warnings.contains("\(expected): not supported by Capstan, ignored"), "\(expected)")
        }
        // xds-grpc's keepalive (Istio's bootstrap: 300 s idle before the first probe) is acted on.
        #expect(config.clusters.first { $0.name == "xds-grpc" }?.tcpKeepalive == TCPKeepalive(time: 300))
        // xds-grpc's circuit breakers are acted on (its HIGH threshold applies to no route of Capstan's).
        #expect(config.clusters.first { $0.name == "xds-grpc" }?.circuitBreakers.maxPendingRequests == 100_000)
        #expect(!config.allFieldsNotActedOn.contains { $0.contains("circuit_breakers") })

        // Never silent: each field of the document is in the message read, or at or under a warned path,
        // or holds its field's default value, which proto3 cannot tell from none.
        var reader = ProtobufJSONReader()
        let message = try reader.decode(document, as: Envoy_Config_Bootstrap_V3_Bootstrap.self, path: "")
        #expect(reader.warnings == config.warnings)
        let read = try ConfigValue.parse(json: try message.jsonString(options: Self.protoNames))
        let warned = reader.warnings.map { String($0.prefix { $0 != ":" }) }
        let silent = Self.fieldPositions(document).filter { position in
            let path = position.path(under: "")
            guard !warned.contains(where: { path == $0 || path.hasPrefix("\($0).") || path.hasPrefix("\($0)[") }),
                  position.value(in: read) == nil else { return false }
            return Self.readAlone(position, in: document, keepingIt: true) != Self.readAlone(position, in: document, keepingIt: false)
        }
        #expect(silent.isEmpty, "fields neither read nor warned about: \(silent.map { $0.path(under: "") })")
    }

    static var protoNames: JSONEncodingOptions {
        var options = JSONEncodingOptions()
        options.preserveProtoFieldNames = true
        return options
    }

    /// The bootstrap read from `document` with only the path to `position` kept (and each `@type` on
    /// it), with or without the field there; nil if it does not decode.
    static func readAlone(_ position: FieldPosition, in document: ConfigValue, keepingIt: Bool) -> String? {
        func build(_ node: ConfigValue, _ steps: ArraySlice<FieldPosition.Step>) -> ConfigValue? {
            guard let step = steps.first else { return node }
            switch (step, node) {
            case (.key(let key), .object(let fields)):
                var kept = fields.filter { $0.key == "@type" }
                if steps.count > 1 || keepingIt { kept[key] = build(fields[key]!, steps.dropFirst()) }
                return .object(kept)
            case (.index(let index), .array(let items)):
                return build(items[index], steps.dropFirst()).map { .array([$0]) } ?? .array([])
            default:
                return nil
            }
        }
        guard let trimmed = build(document, position.steps[...]),
              let message = try? Envoy_Config_Bootstrap_V3_Bootstrap(jsonString: trimmed.jsonText()) else { return nil }
        return try? message.jsonString(options: protoNames)
    }

    /// Every object field in `value`.
    static func fieldPositions(_ value: ConfigValue, at position: FieldPosition = FieldPosition()) -> [FieldPosition] {
        switch value {
        case .object(let fields):
            fields.flatMap { key, child in [position.appending(.key(key))] + fieldPositions(child, at: position.appending(.key(key))) }
        case .array(let items):
            items.indices.flatMap { fieldPositions(items[$0], at: position.appending(.index($0))) }
        default:
            []
        }
    }
}
