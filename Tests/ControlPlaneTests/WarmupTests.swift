@testable import ControlPlane
import SwiftProtobuf
import Testing
import XDS

/// A DestinationRule's `loadBalancer.warmup` and `warmupDurationSecs`, generated as istiod's
/// `applyRoundRobinLoadBalancer` / `applyLeastRequestLoadBalancer` write Envoy's slow start, field by field.
@Suite struct WarmupTests {
    func clusters(_ trafficPolicy: String, subsets: String = "") throws -> (reading: MeshConfigReading, clusters: [String: Envoy_Config_Cluster_V3_Cluster]) {
        let rule = """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: payments, namespace: shop}
            spec:
              host: payments
              trafficPolicy: \(trafficPolicy)
            \(subsets)
            """
        let reading = MeshConfigReader.read([("mesh.yaml", [Documents.serviceEntry, rule].joined(separator: "\n---\n"))])
        let resources = try ProxyConfigGenerator().resources(for: try #require(reading.config, "\(reading.problems)"))
        var clusters: [String: Envoy_Config_Cluster_V3_Cluster] = [:]
        for resource in resources.clusters {
            clusters[resource.name] = try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](resource.resource.value))
        }
        return (reading, clusters)
    }

    let name = "outbound|9080||payments.shop.svc.cluster.local"

    @Test func warmupDurationSecsIsTheSlowStartWindowAlone() throws {
        let (reading, clusters) = try clusters("{loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 30s}}")
        #expect(!reading.warnings.contains { $0.contains("warmup") }, "\(reading.warnings)")
        let cluster = try #require(clusters[name])
        #expect(cluster.lbPolicy == .roundRobin)
        guard case .roundRobinLbConfig(let config)? = cluster.lbConfig else { Issue.record("no round_robin_lb_config"); return }
        // setSlowStartConfig: the window only (Envoy's aggression 1.0 and minimum 10 % apply).
        var expected = Envoy_Config_Cluster_V3_Cluster.SlowStartConfig()
        expected.slowStartWindow = Google_Protobuf_Duration(seconds: 30)
        #expect(config.slowStartConfig == expected)
        #expect(!config.slowStartConfig.hasAggression && !config.slowStartConfig.hasMinWeightPercent)
        // LEAST_REQUEST (and LEAST_CONN) take it on their own lb config.
        let least = try #require(try self.clusters("{loadBalancer: {simple: LEAST_CONN, warmupDurationSecs: 30s}}").clusters[name])
        #expect(least.lbPolicy == .leastRequest && least.leastRequestLbConfig.slowStartConfig == expected)
        // No policy given: istiod's default policy, LEAST_REQUEST, takes it.
        let unset = try #require(try self.clusters("{loadBalancer: {warmupDurationSecs: 30s}}").clusters[name])
        #expect(unset.lbPolicy == .leastRequest && unset.leastRequestLbConfig.slowStartConfig == expected)
    }

    @Test func warmupHasItsAggressionAndMinimumAlwaysWithIstiodsRuntimeKey() throws {
        let cluster = try #require(try clusters("{loadBalancer: {simple: LEAST_REQUEST, warmup: {duration: 45s}}}").clusters[name])
        var expected = Envoy_Config_Cluster_V3_Cluster.SlowStartConfig()
        expected.slowStartWindow = Google_Protobuf_Duration(seconds: 45)
        expected.aggression.defaultValue = 1
        expected.aggression.runtimeKey = "("
        expected.minWeightPercent.value = 10
        #expect(cluster.leastRequestLbConfig.slowStartConfig == expected)
        // Given values; `warmup` wins over `warmupDurationSecs`.
        let given = try #require(try clusters("{loadBalancer: {warmup: {duration: 45s, aggression: 2.5, minimumPercent: 30}, warmupDurationSecs: 10s}}")
            .clusters[name])
        expected.aggression.defaultValue = 2.5
        expected.minWeightPercent.value = 30
        #expect(given.leastRequestLbConfig.slowStartConfig == expected)
    }

    @Test func subsetsMergeItWithTheLoadBalancerAndHashingPoliciesGetNone() throws {
        let (_, clusters) = try clusters("{loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 30s}}", subsets: """
              subsets:
              - name: v1
                labels: {version: v1}
              - name: v2
                labels: {version: v2}
                trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
            """)
        // v1 keeps the rule's load balancer, warmup included; v2's load balancer replaces it whole.
        #expect(try #require(clusters["outbound|9080|v1|payments.shop.svc.cluster.local"]).roundRobinLbConfig.slowStartConfig.slowStartWindow.seconds == 30)
        #expect(try #require(clusters["outbound|9080|v2|payments.shop.svc.cluster.local"]).lbConfig == nil)
        let hashed = try self.clusters("{loadBalancer: {consistentHash: {httpHeaderName: x-user}, warmupDurationSecs: 30s}}")
        #expect(try #require(hashed.clusters[name]).lbPolicy == .ringHash)
        #expect(hashed.reading.warnings.contains { $0.contains("warmup with consistentHash") }, "\(hashed.reading.warnings)")
        let bad = MeshConfigReader.read([("mesh.yaml", [Documents.serviceEntry, """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: payments, namespace: shop}
            spec: {host: payments, trafficPolicy: {loadBalancer: {warmup: {duration: 10s, minimumPercent: 120}}}}
            """].joined(separator: "\n---\n"))])
        #expect(bad.problems.contains { $0.description.contains("loadBalancer.warmup.minimumPercent: 120") }, "\(bad.problems)")
    }
}
