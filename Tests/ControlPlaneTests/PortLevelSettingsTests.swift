import Foundation
@testable import ControlPlane
import SwiftProtobuf
import Testing
import XDS

/// DestinationRule `portLevelSettings` (read, merged as istiod merges them, generated per port) and
/// `connectionPool.tcp.tcpKeepalive`.
@Suite struct PortLevelSettingsTests {
    /// payments with two HTTP ports, 9080 and 9090, and a rule for it given as `spec`.
    static func documents(rule spec: String) -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: payments, namespace: shop}
        spec:
          hosts: [payments]
          addresses: [198.51.100.200]
          ports: [{number: 9080, name: http-a}, {number: 9090, name: http-b}]
          resolution: STATIC
          endpoints: [{address: 198.51.100.10, labels: {version: v1}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: payments, namespace: shop}
        spec:
        \(spec.split(separator: "\n", omittingEmptySubsequences: false).map { "  \($0)" }.joined(separator: "\n"))
        """
    }

    static let rule = """
        host: payments
        trafficPolicy:
          loadBalancer: {simple: ROUND_ROBIN}
          connectionPool: {tcp: {maxConnections: 100, tcpKeepalive: {probes: 3, time: 600s, interval: 75s}}}
          portLevelSettings:
          - port: {number: 9090}
            connectionPool: {tcp: {maxConnections: 5}}
        subsets:
        - name: v1
          labels: {version: v1}
          trafficPolicy:
            outlierDetection: {consecutive5xxErrors: 2}
        - name: v2
          labels: {version: v2}
          trafficPolicy:
            connectionPool: {tcp: {maxConnections: 50}}
            portLevelSettings:
            - port: {number: 9080}
              loadBalancer: {simple: RANDOM}
        """

    func config(_ spec: String = Self.rule) throws -> MeshConfig {
        let reading = MeshConfigReader.read([("mesh.yaml", Self.documents(rule: spec))])
        return try #require(reading.config, "\(reading.problems)")
    }

    @Test func portLevelSettingsAreReadByPort() throws {
        let rule = try #require(try config().destinationRules.first)
        #expect(rule.trafficPolicy.portLevelSettings.keys.sorted() == [9090])
        #expect(rule.trafficPolicy.portLevelSettings[9090]?.connectionPool == .init(maxConnections: 5))
        #expect(rule.trafficPolicy.portLevelSettings[9090]?.loadBalancer == nil)
        #expect(rule.subsets[1].trafficPolicy?.portLevelSettings[9080]?.loadBalancer == .simple("RANDOM"))
        var keepalive = DestinationRule.ConnectionPool(maxConnections: 100)
        keepalive.tcpKeepalive = .init(probes: 3, time: .seconds(600), interval: .seconds(75))
        #expect(rule.trafficPolicy.connectionPool == keepalive)
    }

    @Test func mergingFollowsIstiod() throws {
        let rule = try #require(try config().destinationRules.first)
        func policy(_ subset: Int?, _ port: Int) -> DestinationRule.TrafficPolicy {
            let own = subset.map { rule.subsets[$0].trafficPolicy } ?? nil
            return subset == nil ? rule.trafficPolicy.atPort(port).policy
                : DestinationRule.TrafficPolicy.merged(rule: rule.trafficPolicy, subset: own, port: port)
        }
        // The rule on 9080; on 9090 its port-level entry whole: the load balancer falls back to the
        // default, not to the rule's ROUND_ROBIN.
        #expect(policy(nil, 9080).loadBalancer == .simple("ROUND_ROBIN"))
        #expect(policy(nil, 9080).connectionPool?.maxConnections == 100)
        #expect(policy(nil, 9090).loadBalancer == nil)
        #expect(policy(nil, 9090).connectionPool == .init(maxConnections: 5))
        // v1 adds outlier detection over the rule's (port-level on 9090) components.
        #expect(policy(0, 9080).outlierDetection != nil && policy(0, 9080).loadBalancer == .simple("ROUND_ROBIN"))
        #expect(policy(0, 9090).outlierDetection != nil && policy(0, 9090).loadBalancer == nil)
        #expect(policy(0, 9090).connectionPool == .init(maxConnections: 5))
        // v2's port-level entry on 9080 replaces everything there, its own connectionPool too (default).
        #expect(policy(1, 9080).loadBalancer == .simple("RANDOM"))
        #expect(policy(1, 9080).connectionPool == nil)
        // v2 on 9090: its connectionPool over the rule's port-level entry.
        #expect(policy(1, 9090).connectionPool == .init(maxConnections: 50))
        #expect(policy(1, 9090).loadBalancer == nil)
        #expect(policy(1, 9090).portLevelSettings.isEmpty)
    }

    @Test func eachPortsClustersGetTheirPolicy() throws {
        let resources = try ProxyConfigGenerator.resources(for: config())
        func cluster(_ port: Int, _ subset: String) throws -> Envoy_Config_Cluster_V3_Cluster {
            try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](try #require(
                resources.clusters.first { $0.name == "outbound|\(port)|\(subset)|payments.shop.svc.cluster.local" }).resource.value))
        }
        #expect(try cluster(9080, "").lbPolicy == .roundRobin)
        #expect(try cluster(9080, "").circuitBreakers.thresholds.first?.maxConnections.value == 100)
        // The port's settings replace the rule's whole: no policy there is istiod's default.
        #expect(try cluster(9090, "").lbPolicy == .leastRequest)
        #expect(try cluster(9090, "").circuitBreakers.thresholds.first?.maxConnections.value == 5)
        #expect(try cluster(9090, "v1").hasOutlierDetection)
        #expect(try cluster(9080, "v2").lbPolicy == .random)
        #expect(try cluster(9080, "v2").circuitBreakers.thresholds.first?.maxConnections.value == UInt32.max)
        #expect(try cluster(9090, "v2").circuitBreakers.thresholds.first?.maxConnections.value == 50)
        // tcpKeepalive goes with the connectionPool it is in: on 9080 (the rule's), not on 9090 (the
        // port-level pool has none).
        let keepalive = try cluster(9080, "").upstreamConnectionOptions.tcpKeepalive
        #expect([keepalive.keepaliveProbes.value, keepalive.keepaliveTime.value, keepalive.keepaliveInterval.value] == [3, 600, 75])
        #expect(try cluster(9080, "v1").hasUpstreamConnectionOptions)
        #expect(try !cluster(9090, "").hasUpstreamConnectionOptions)
        #expect(try !cluster(9080, "v2").hasUpstreamConnectionOptions)
    }

    @Test func anEmptyKeepaliveStillTurnsItOn() throws {
        let spec = "host: payments\ntrafficPolicy: {connectionPool: {tcp: {tcpKeepalive: {time: 90500ms}}}}"
        let reading = MeshConfigReader.read([("mesh.yaml", Self.documents(rule: spec))])
        let config = try #require(reading.config, "\(reading.problems)")
        #expect(reading.warnings.contains { $0.hasSuffix("spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time: Envoy takes whole seconds: 90s is used") })
        let cluster = try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](try #require(
            try ProxyConfigGenerator.resources(for: config).clusters.first { $0.name == "outbound|9080||payments.shop.svc.cluster.local" })
            .resource.value))
        #expect(cluster.upstreamConnectionOptions.tcpKeepalive.keepaliveTime.value == 90)
        #expect(!cluster.upstreamConnectionOptions.tcpKeepalive.hasKeepaliveProbes)
        #expect(ProxyConfigGenerator.tcpKeepalive(.init()) == Envoy_Config_Core_V3_TcpKeepalive())
    }

    @Test func theRouteHashPolicyFollowsThePort() throws {
        let spec = """
            host: payments
            trafficPolicy:
              loadBalancer: {consistentHash: {httpHeaderName: x-user}}
              portLevelSettings:
              - port: {number: 9090}
                loadBalancer: {consistentHash: {httpCookie: {name: session, ttl: 10s}}}
            subsets:
            - name: v1
              labels: {version: v1}
              trafficPolicy:
                portLevelSettings:
                - port: {number: 9080}
                  loadBalancer: {consistentHash: {useSourceIp: true}}
            """
        let config = try config(spec)
        let host = "payments.shop.svc.cluster.local"
        #expect(HTTPRouteGenerator.hashPolicy(host: host, subset: nil, port: 9080, config: config)?.header.headerName == "x-user")
        #expect(HTTPRouteGenerator.hashPolicy(host: host, subset: nil, port: 9090, config: config)?.cookie.name == "session")
        #expect(HTTPRouteGenerator.hashPolicy(host: host, subset: "v1", port: 9080, config: config)?.connectionProperties.sourceIp == true)
        #expect(HTTPRouteGenerator.hashPolicy(host: host, subset: "v1", port: 9090, config: config)?.cookie.name == "session")
        // A destination without a port: no port-level hash, as istiod.
        #expect(HTTPRouteGenerator.hashPolicy(host: host, subset: "v1", port: nil, config: config)?.header.headerName == "x-user")
        // The default routes of each port (no VirtualService).
        let resources = try ProxyConfigGenerator.resources(for: config)
        func hash(_ port: Int) throws -> Envoy_Config_Route_V3_RouteAction.HashPolicy? {
            try Envoy_Config_Route_V3_RouteConfiguration(serializedBytes: [UInt8](try #require(
                resources.routes.first { $0.name == String(port) }).resource.value)).virtualHosts.first?.routes.first?.route.hashPolicy.first
        }
        #expect(try hash(9080)?.header.headerName == "x-user")
        #expect(try hash(9090)?.cookie.name == "session")
    }

    @Test(arguments: [
        ("trafficPolicy:\n  portLevelSettings:\n  - loadBalancer: {simple: RANDOM}",
         "spec.trafficPolicy.portLevelSettings[0]: needs a port ({number: N})"),
        ("trafficPolicy:\n  portLevelSettings:\n  - port: {number: 0}\n    loadBalancer: {simple: RANDOM}",
         "spec.trafficPolicy.portLevelSettings[0].port.number: 0 is out of range 1-65535"),
        ("trafficPolicy:\n  portLevelSettings:\n  - port: {}\n    loadBalancer: {simple: RANDOM}",
         "spec.trafficPolicy.portLevelSettings[0].port: needs a number"),
        ("trafficPolicy:\n  portLevelSettings:\n  - port: {number: 9080}\n    loadBalancer: {simple: RANDOM}\n  - port: {number: 9080}\n    tls: {mode: DISABLE}",
         "spec.trafficPolicy.portLevelSettings[1].port.number: port 9080 has settings twice in this list, which Istio refuses"),
        ("trafficPolicy:\n  portLevelSettings:\n  - port: {number: 9080}",
         "spec.trafficPolicy.portLevelSettings[0]: needs at least one of loadBalancer, connectionPool, outlierDetection and tls, as Istio requires"),
        ("subsets:\n- name: v1\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 9080}\n      loadBalancer: {simple: FASTEST}",
         "spec.subsets[0].trafficPolicy.portLevelSettings[0].loadBalancer.simple: \"FASTEST\" is not supported (ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM)"),
        ("trafficPolicy:\n  connectionPool: {tcp: {tcpKeepalive: {probes: 200}}}",
         "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.probes: 200 is out of range 0-127"),
        ("trafficPolicy:\n  connectionPool: {tcp: {tcpKeepalive: {interval: 500ms}}}",
         "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.interval: must be 1s to 32767s (Linux's range for keepalive timing; Envoy takes whole seconds)"),
    ])
    func refusalsNameFileDocumentAndField(spec: String, field: String) {
        let reading = MeshConfigReader.read([("mesh.yaml", Self.documents(rule: "host: payments\n" + spec))])
        #expect(reading.config == nil)
        #expect(reading.problems.map(\.description) == ["mesh.yaml: document 2 (line 10): DestinationRule shop/payments: \(field)"])
    }

    @Test func settingsForAPortTheServiceLacksAreWarned() throws {
        let spec = "host: payments\nsubsets:\n- name: v1\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 7000}\n      loadBalancer: {simple: RANDOM}"
        let reading = MeshConfigReader.read([("mesh.yaml", Self.documents(rule: spec))])
        #expect(reading.config != nil, "\(reading.problems)")
        #expect(reading.warnings.contains { $0.hasSuffix("DestinationRule shop/payments: spec.subsets[0].trafficPolicy.portLevelSettings: payments.shop.svc.cluster.local has no port 7000: these settings apply to nothing") },
                "\(reading.warnings)")
    }

    @Test func portLevelSettingsDoNotNest() throws {
        let spec = "host: payments\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 9080}\n    tls: {mode: ISTIO_MUTUAL}\n    portLevelSettings: []"
        let reading = MeshConfigReader.read([("mesh.yaml", Self.documents(rule: spec))])
        #expect(reading.config != nil)
        #expect(reading.warnings.contains { $0.hasSuffix("spec.trafficPolicy.portLevelSettings[0].portLevelSettings: not supported by Capstan, ignored") })
    }
}
