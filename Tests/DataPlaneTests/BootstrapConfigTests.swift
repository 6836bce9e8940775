import Configuration
@testable import DataPlane
import NIOCore
import Testing

/// Reading the bootstrap subset, and choosing filter chains and clusters from it.
@Suite struct BootstrapConfigTests {
    static func chain(_ match: String, _ route: String) -> String {
        """
        {\(match) "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {\(route)}}]}
        """
    }

    static let document = """
        {"static_resources": {
          "listeners": [{"name": "out", "traffic_direction": "OUTBOUND",
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
            "filter_chains": [
              \(chain(#""filter_chain_match": {"destination_port": 80, "prefix_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 8}]},"#, #""cluster": "wide""#)),
              \(chain(#""filter_chain_match": {"destination_port": 80, "prefix_ranges": [{"address_prefix": "10.1.0.0", "prefix_len": 16}]},"#, #""cluster": "narrow""#)),
              \(chain(#""filter_chain_match": {"prefix_ranges": [{"address_prefix": "2001:db8::", "prefix_len": 32}]},"#, #""cluster": "v6""#))
            ],
            "default_filter_chain": \(chain("", #""cluster": "pass""#))}],
          "clusters": [
            {"name": "pass", "type": "ORIGINAL_DST"},
            {"name": "v6", "type": "ORIGINAL_DST"},
            {"name": "wide", "load_assignment": {"endpoints": [{"lb_endpoints": [
              {"endpoint": {"address": {"socket_address": {"address": "192.0.2.10", "port_value": 80}}}},
              {"endpoint": {"address": {"socket_address": {"address": "192.0.2.11", "port_value": 80}}}}]}]}},
            {"name": "narrow", "connect_timeout": "0.25s", "circuit_breakers": {"thresholds": [{"max_connections": 3}]},
             "load_assignment": {"endpoints": [{"lb_endpoints": [
              {"endpoint": {"address": {"socket_address": {"address": "192.0.2.20", "port_value": 8080}}}}]}]}}
          ]}}
        """

    func address(_ ip: String, _ port: Int) throws -> SocketAddress { try SocketAddress(ipAddress: ip, port: port) }

    @Test func filterChainsMatchPortThenLongestPrefix() throws {
        let listener = try #require(try BootstrapConfig.parse(json: Self.document).listeners.first)
        #expect(listener.chain(for: try address("10.1.2.3", 80))?.route == .cluster("narrow"))
        #expect(listener.chain(for: try address("10.9.2.3", 80))?.route == .cluster("wide"))
        // A port with no chain of its own falls to the chains without a port, then to the default.
        #expect(listener.chain(for: try address("10.1.2.3", 81))?.route == .cluster("pass"))
        #expect(listener.chain(for: try address("2001:db8::7", 443))?.route == .cluster("v6"))
        #expect(listener.chain(for: try address("::ffff:10.1.2.3", 80))?.route == .cluster("narrow"))
    }

    @Test func clustersRoundRobinAndBreakCircuits() throws {
        let config = try BootstrapConfig.parse(json: Self.document)
        let wide = ClusterRuntime(try #require(config.clusters.first { $0.name == "wide" }))
        let original = try address("10.0.0.1", 80)
        let picks = (0..<4).compactMap { _ in try? wide.endpoint(originalDestination: original).get().address.ipAddress }
        #expect(picks == ["192.0.2.10", "192.0.2.11", "192.0.2.10", "192.0.2.11"])
        let narrow = ClusterRuntime(try #require(config.clusters.first { $0.name == "narrow" }))
        #expect(narrow.config.connectTimeout == .milliseconds(250))
        for _ in 0..<3 { narrow.stats.connectionsActive.increment() }
        #expect(throws: ProxyRuntime.RouteFailure.overflow) { try narrow.endpoint(originalDestination: original).get() }
        #expect(narrow.stats.overflows.value == 1)
        let pass = ClusterRuntime(try #require(config.clusters.first { $0.name == "pass" }))
        #expect(try pass.endpoint(originalDestination: original).get().address == original)
    }

    @Test func leastRequestPrefersTheLessBusyEndpointAndRandomUsesAll() throws {
        let endpoints = [try address("192.0.2.10", 80), try address("192.0.2.11", 80)]
        let least = ClusterRuntime(.init(name: "least", discovery: .endpoints(endpoints), loadBalancing: .leastRequest))
        let original = try address("10.0.0.1", 80)
        // Two picks can never both go to one endpoint while the other is idle: each pick compares both.
        let first = try least.endpoint(originalDestination: original).get()
        let second = try least.endpoint(originalDestination: original).get()
        #expect(first.index != second.index)
        least.released(first.index)
        let third = try least.endpoint(originalDestination: original).get()
        #expect(third.index == first.index)
        let random = ClusterRuntime(.init(name: "random", discovery: .endpoints(endpoints), loadBalancing: .random))
        let picked = Set(try (0..<200).map { _ in try random.endpoint(originalDestination: original).get().address })
        #expect(picked == Set(endpoints))
    }

    @Test func weightedPicksFollowTheWeights() {
        var counts: [String: Int] = [:]
        for _ in 0..<20_000 { counts[ProxyRuntime.pick([("v1", 90), ("v2", 10), ("never", 0)]), default: 0] += 1 }
        #expect(counts["never"] == nil)
        #expect((17_500...18_500).contains(counts["v1"] ?? 0), "\(counts)")
    }

    @Test func unknownFieldsBecomeWarningsWithPaths() throws {
        let config = try BootstrapConfig.parse(json: #"{"stats_sinks": [], "static_resources": {"listeners": [], "clusters": [], "secrets": []}}"#)
        #expect(config.warnings == ["stats_sinks: not supported by Capstan, ignored",
                                    "static_resources.secrets: not supported by Capstan, ignored"])
    }

    @Test(arguments: [
        (#"{"static_resources": {"clusters": [{"name": "a", "type": "EDS"}]}}"#, "static_resources.clusters[0].type: \"EDS\" is not STATIC or ORIGINAL_DST"),
        (#"{"static_resources": {"clusters": [{"name": "a", "type": "STATIC", "load_assignment": {"endpoints": []}}]}}"#, "static_resources.clusters[0].load_assignment: a STATIC cluster needs at least one endpoint"),
        (#"{"static_resources": {"clusters": [{"type": "ORIGINAL_DST"}]}}"#, "static_resources.clusters[0].name: is required"),
        (#"{"static_resources": {"clusters": [{"name": "a", "type": "ORIGINAL_DST"}, {"name": "a", "type": "ORIGINAL_DST"}]}}"#, "static_resources.clusters[1].name: duplicate cluster \"a\""),
        (#"{"static_resources": {"listeners": [{"name": "l", "address": {"socket_address": {"address": "host", "port_value": 1}}}]}}"#, "static_resources.listeners[0].address.socket_address.address: \"host\" is not an IP address"),
        (#"{"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": -1}}}}"#, "admin.address.socket_address.port_value: -1 is out of range 0-65535"),
        (#"[1, 2]"#, "(document): expected an object, found a list"),
    ])
    func invalidDocumentsNameTheField(json: String, message: String) {
        #expect(throws: ConfigError.self) { try BootstrapConfig.parse(json: json) }
        do {
            _ = try BootstrapConfig.parse(json: json)
        } catch {
            #expect(error.description == message)
        }
    }

    @Test func statsRenderAsEnvoyAndPrometheus() {
        let stats = ProxyStats()
        stats.listener("0.0.0.0_15001").connectionsTotal.increment(by: 3)
        stats.cluster("PassthroughCluster").bytesSent.increment(by: 42)
        stats.listenerUpdates.successes.increment()
        #expect(stats.envoyText.contains("listener.0.0.0.0_15001.downstream_cx_total: 3\n"))
        #expect(stats.envoyText.contains("cluster.PassthroughCluster.upstream_cx_tx_bytes_total: 42\n"))
        #expect(stats.prometheusText.contains("# TYPE envoy_cluster_upstream_cx_active gauge\n"))
        #expect(stats.prometheusText.contains("envoy_listener_downstream_cx_total{envoy_listener_address=\"0.0.0.0_15001\"} 3"))
        // Istio's readiness reads these two by Envoy's names.
        #expect(stats.envoyText.contains("listener_manager.lds.update_success: 1\n"))
        #expect(stats.prometheusText.contains("envoy_cluster_manager_cds_update_success 0\n"))
    }
}
