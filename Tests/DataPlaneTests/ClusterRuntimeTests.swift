@testable import DataPlane
import HTTPProxy
import NIOCore
import Testing

/// Choosing an endpoint by `lb_policy` and weight, the circuit breaker, and the statistics they count in.
@Suite struct ClusterRuntimeTests {
    func address(_ ip: String, _ port: Int = 80) throws -> SocketAddress { try SocketAddress(ipAddress: ip, port: port) }

    @Test func roundRobinAlternatesAndTheCircuitBreakerOpensAtMaxConnections() throws {
        let endpoints = [BootstrapConfig.Cluster.Endpoint(try address("192.0.2.10")), .init(try address("192.0.2.11"))]
        let wide = ClusterRuntime(.init(name: "wide", discovery: .endpoints(endpoints)))
        let original = try address("10.0.0.1")
        let picks = (0..<4).compactMap { _ in try? wide.endpoint(originalDestination: original).get().address.ipAddress }
        #expect(picks == ["192.0.2.10", "192.0.2.11", "192.0.2.10", "192.0.2.11"])
        var limits = CircuitBreakers.Limits()
        limits.maxConnections = 3
        let narrow = ClusterRuntime(.init(name: "narrow", discovery: .endpoints(endpoints), circuitBreakers: limits))
        #expect((0..<4).map { _ in narrow.circuitBreakers.tryOpen(.connections) } == [true, true, true, false])
        #expect(narrow.stats.entries.contains { $0 == ("upstream_cx_overflow", 1) })
        // A new version of the cluster brings its limits to the counts kept with its statistics.
        limits.maxConnections = 4
        let wider = ClusterRuntime(.init(name: "narrow", discovery: .endpoints(endpoints), circuitBreakers: limits), stats: narrow.stats)
        #expect(wider.circuitBreakers.tryOpen(.connections) && !wider.circuitBreakers.tryOpen(.connections))
        let pass = ClusterRuntime(.init(name: "pass", discovery: .originalDestination))
        #expect(try pass.endpoint(originalDestination: original).get().address == original)
    }

    @Test func weightedRoundRobinGivesEachEndpointItsShareSpreadOut() throws {
        let endpoints = [BootstrapConfig.Cluster.Endpoint(try address("192.0.2.10"), weight: 5),
                         .init(try address("192.0.2.11"), weight: 2), .init(try address("192.0.2.12"), weight: 1)]
        let cluster = ClusterRuntime(.init(name: "weighted", discovery: .endpoints(endpoints)))
        let original = try address("10.0.0.1")
        let picks = try (0..<80).map { _ in try cluster.endpoint(originalDestination: original).get().address.ipAddress ?? "" }
        #expect(picks.filter { $0 == "192.0.2.10" }.count == 50)
        #expect(picks.filter { $0 == "192.0.2.11" }.count == 20)
        #expect(picks.filter { $0 == "192.0.2.12" }.count == 10)
        // Spread over each run of eight, not five in a row.
        #expect(!picks.prefix(8).joined(separator: ",").contains(Array(repeating: "192.0.2.10", count: 5).joined(separator: ",")))
    }

    @Test func weightedScheduleVisitsEachPlaceOncePerRun() {
        let schedule = WeightedSchedule(weights: [3, 1, 4, 1, 5])
        var counts = [Int](repeating: 0, count: 5)
        for ticket in 0..<UInt(14 * 3) { counts[schedule.endpoint(for: ticket)] += 1 }
        #expect(counts == [9, 3, 12, 3, 15])
        // Far past where a counter wraps, the schedule stays exact.
        let large = WeightedSchedule(weights: [Int(UInt32.max), Int(UInt32.max), 1])
        #expect(large.endpoint(for: UInt.max) < 3)
    }

    @Test func leastRequestPrefersTheLessBusyEndpointAndRandomUsesAll() throws {
        let endpoints = [BootstrapConfig.Cluster.Endpoint(try address("192.0.2.10")), .init(try address("192.0.2.11"))]
        let least = ClusterRuntime(.init(name: "least", discovery: .endpoints(endpoints), loadBalancing: .leastRequest))
        let original = try address("10.0.0.1")
        // Two picks can never both go to one endpoint while the other is idle: each pick compares both.
        let first = try least.endpoint(originalDestination: original).get()
        let second = try least.endpoint(originalDestination: original).get()
        #expect(first.index != second.index)
        least.released(first.index)
        let third = try least.endpoint(originalDestination: original).get()
        #expect(third.index == first.index)
        let random = ClusterRuntime(.init(name: "random", discovery: .endpoints(endpoints), loadBalancing: .random))
        let picked = Set(try (0..<200).map { _ in try random.endpoint(originalDestination: original).get().address })
        #expect(picked == Set(endpoints.map(\.address)))
    }

    @Test func weightedLeastRequestWeighsOpenConnectionsAgainstWeights() throws {
        let heavy = try address("192.0.2.10"), light = try address("192.0.2.11")
        let cluster = ClusterRuntime(.init(name: "least", discovery: .endpoints([.init(heavy, weight: 3), .init(light)]),
                                           loadBalancing: .leastRequest))
        let original = try address("10.0.0.1")
        // Held open, connections settle at three to the heavy endpoint for each to the light one.
        let picks = try (0..<40).map { _ in try cluster.endpoint(originalDestination: original).get().address }
        #expect((29...31).contains(picks.filter { $0 == heavy }.count))
    }

    @Test func weightedPicksFollowTheWeights() {
        var counts: [String: Int] = [:]
        for _ in 0..<20_000 { counts[ProxyRuntime.pick([("v1", 90), ("v2", 10), ("never", 0)]), default: 0] += 1 }
        #expect(counts["never"] == nil)
        #expect((17_500...18_500).contains(counts["v1"] ?? 0), "\(counts)")
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
