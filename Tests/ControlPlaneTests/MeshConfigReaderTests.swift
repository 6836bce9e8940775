import Foundation
@testable import ControlPlane
import Testing

/// Istio-style documents, as in the end-to-end tests: the canary example for TCP.
enum Documents {
    static let serviceEntry = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: payments, namespace: shop}
        spec:
          hosts: [payments]
          addresses: [198.51.100.200, 2001:db8:200::/64]
          ports: [{number: 9080, name: tcp-payments, protocol: TCP}]
          resolution: STATIC
          workloadSelector: {labels: {app: payments}}
        """
    static func workload(_ name: String, _ address: String, _ version: String) -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: \(name), namespace: shop}
        spec: {address: \(address), labels: {app: payments, version: \(version)}, ports: {tcp-payments: 8080}}
        """
    }
    static let destinationRule = """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: payments, namespace: shop}
        spec:
          host: payments
          trafficPolicy:
            loadBalancer: {simple: LEAST_CONN}
            connectionPool: {tcp: {maxConnections: 100, connectTimeout: 250ms}}
          subsets:
          - {name: v1, labels: {version: v1}}
          - {name: v2, labels: {version: v2}, trafficPolicy: {connectionPool: {tcp: {maxConnections: 10}}}}
        """
    static func virtualService(_ v1: Int, _ v2: Int) -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: payments, namespace: shop}
        spec:
          hosts: [payments]
          tcp:
          - match: [{port: 9080}]
            route:
            - {destination: {host: payments, subset: v1}, weight: \(v1)}
            - {destination: {host: payments, subset: v2}, weight: \(v2)}
        """
    }
    static var canary: String {
        [serviceEntry, workload("payments-v1", "198.51.100.10", "v1"), workload("payments-v2", "198.51.100.99", "v2"),
         destinationRule, virtualService(90, 10)].joined(separator: "\n---\n")
    }
}

@Suite struct MeshConfigReaderTests {
    @Test func theCanaryExampleReadsWithQualifiedHosts() throws {
        let reading = MeshConfigReader.read([("mesh.yaml", Documents.canary)])
        #expect(reading.problems.isEmpty, "\(reading.problems)")
        let config = try #require(reading.config)
        #expect(config.serviceEntries.first?.hosts == ["payments.shop.svc.cluster.local"])
        #expect(config.serviceEntries.first?.addresses == ["198.51.100.200", "2001:db8:200::/64"])
        #expect(config.workloadEntries.map(\.endpoint.address) == ["198.51.100.10", "198.51.100.99"])
        let rule = try #require(config.destinationRules.first)
        #expect(rule.trafficPolicy == .init(loadBalancer: .simple("LEAST_REQUEST"),
                                            connectionPool: .init(maxConnections: 100, connectTimeout: .milliseconds(250))))
        // A subset's connectionPool replaces the rule's whole, as istiod merges them.
        #expect(rule.trafficPolicy.overridden(by: rule.subsets[1].trafficPolicy).connectionPool == .init(maxConnections: 10))
        #expect(rule.trafficPolicy.overridden(by: rule.subsets[1].trafficPolicy).loadBalancer == .simple("LEAST_REQUEST"))
        #expect(config.virtualServices.first?.tcp.first?.destinations.map(\.weight) == [90, 10])
        #expect(config.virtualServices.first?.tcp.first?.ports == [9080])
    }

    @Test(arguments: [
        (Documents.virtualService(70, 10), "bad.yaml: document 1 (line 1): VirtualService shop/payments: spec.tcp[0].route: weights add up to 80, not 100"),
        (Documents.virtualService(90, 10).replacingOccurrences(of: "subset: v2", with: "subset: v3"),
         "bad.yaml: document 1 (line 1): VirtualService shop/payments: spec.tcp[0].route[1].destination.subset: no DestinationRule for payments.shop.svc.cluster.local defines subset \"v3\""),
        (Documents.workload("broken", "payments.example", "v1"),
         "bad.yaml: document 1 (line 1): WorkloadEntry shop/broken: spec.address: \"payments.example\" is not an IP address (names are resolved only for a ServiceEntry with resolution DNS or DNS_ROUND_ROBIN)"),
        ("apiVersion: networking.istio.io/v1\nkind: Gateway2\nmetadata: {name: g}\nspec: {}\n",
         "bad.yaml: document 1 (line 1): Gateway2 default/g: kind: \"Gateway2\" is not a kind Capstan reads (ServiceEntry, WorkloadEntry, VirtualService, DestinationRule, Gateway, PeerAuthentication, AuthorizationPolicy, RequestAuthentication)"),
        ("apiVersion: v1\nkind: Secret\nmetadata: {name: c}\n",
         "bad.yaml: document 1 (line 1): Secret default/c: apiVersion: \"v1\" is not an Istio networking or security API"),
        (Documents.destinationRule.replacingOccurrences(of: "LEAST_CONN", with: "PASSTHROUGH"),
         "bad.yaml: document 1 (line 1): DestinationRule shop/payments: spec.trafficPolicy.loadBalancer.simple: \"PASSTHROUGH\" is not supported (ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM)"),
        (Documents.destinationRule.replacingOccurrences(of: "250ms", with: "soon"),
         "bad.yaml: document 1 (line 1): DestinationRule shop/payments: spec.trafficPolicy.connectionPool.tcp.connectTimeout: \"soon\" is not a duration such as \"10s\" or \"500ms\""),
        (Documents.destinationRule.replacingOccurrences(of: "maxConnections: 100", with: "maxConnections: -1"),
         "bad.yaml: document 1 (line 1): DestinationRule shop/payments: spec.trafficPolicy.connectionPool.tcp.maxConnections: -1 is out of range 0-2147483647"),
        (Documents.destinationRule.replacingOccurrences(of: "{tcp: {maxConnections: 100", with: "{http: {idleTimeout: 0s}, tcp: {maxConnections: 100"),
         "bad.yaml: document 1 (line 1): DestinationRule shop/payments: spec.trafficPolicy.connectionPool.http.idleTimeout: must be above 0"),
        (Documents.destinationRule.replacingOccurrences(of: "{simple: LEAST_CONN}", with: "{consistentHash: {useSourceIp: true, httpHeaderName: x-user}}"),
         "bad.yaml: document 1 (line 1): DestinationRule shop/payments: spec.trafficPolicy.loadBalancer.consistentHash: needs exactly one of httpHeaderName, httpCookie, useSourceIp and httpQueryParameterName"),
        (Documents.destinationRule.replacingOccurrences(of: "{simple: LEAST_CONN}", with: "{consistentHash: {httpHeaderName: x-user, maglev: {tableSize: 1000}}}"),
         "bad.yaml: document 1 (line 1): DestinationRule shop/payments: spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: 1000 is not a prime (Envoy's Maglev table size)"),
        ("a: [1\n", "bad.yaml: line 2: not valid YAML: column 1: did not find expected ',' or ']'"),
    ])
    func problemsNameFileDocumentLineResourceAndField(bad: String, message: String) {
        let base = [Documents.serviceEntry, Documents.destinationRule].joined(separator: "\n---\n")
        // The resource under test replaces its namesake, if any, so only the intended problem shows.
        let kind = bad.split(separator: "\n").first { $0.hasPrefix("kind:") } ?? ""
        let others = base.components(separatedBy: "\n---\n").filter { !$0.contains(kind) || kind.isEmpty }
        let reading = MeshConfigReader.read([("base.yaml", others.joined(separator: "\n---\n")), ("bad.yaml", bad)])
        #expect(reading.config == nil)
        #expect(reading.problems.map(\.description) == [message])
    }

    @Test func unsupportedFieldsAndKindsAreWarningsNotProblems() throws {
        let text = Documents.canary.replacingOccurrences(of: "  hosts: [payments]\n  tcp:", with: "  hosts: [payments]\n  trafficRoutes: []\n  tcp:")
            + "\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default}\nspec: {}\n"
        let reading = MeshConfigReader.read([("mesh.yaml", text)])
        #expect(reading.config != nil, "\(reading.problems)")
        #expect(reading.warnings.contains { $0.hasSuffix("VirtualService shop/payments: spec.trafficRoutes: not supported by Capstan, ignored") })
        #expect(reading.warnings.contains { $0.hasSuffix("Sidecar default/default: kind Sidecar is not acted on by Capstan yet, ignored") })
    }
}
