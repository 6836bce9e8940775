@testable import ControlPlane
import SwiftProtobuf
import Testing
import XDS

/// Split horizon EDS (istiod's `EndpointsByNetworkFilter`): the mesh networks read from the `istio`
/// ConfigMap's `meshNetworks`, each endpoint's network, and the assignment each proxy gets for its network
/// (node metadata `NETWORK`) from the snapshot store.
@Suite struct NetworkEndpointsTests {
    static let cluster = "outbound|9080||payments.shop.svc.cluster.local"

    static func configMap(networks: String, mesh: String = "{}") -> String {
        func indented(_ text: String) -> String { text.split(separator: "\n", omittingEmptySubsequences: false).map { "    " + $0 }.joined(separator: "\n") }
        return """
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: istio, namespace: istio-system}
            data:
              mesh: |-
            \(indented(mesh))
              meshNetworks: |-
            \(indented(networks))
            """
    }

    /// Two gateways for n2 (so weights scale by 2), one for n1, none for n3; 198.51.100.64/26 is on n2.
    static let networks = """
        networks:
          n1:
            gateways: [{address: 192.0.2.9, port: 15443}]
          n2:
            endpoints: [{fromCidr: 198.51.100.64/26}]
            gateways: [{address: 192.0.2.2, port: 15443}, {address: 192.0.2.1, port: 15443}]
          n3:
            endpoints: [{fromCidr: 203.0.113.0/24}]
        """

    static func workload(_ name: String, _ address: String, network: String? = nil, weight: Int? = nil, labels: String = "") -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: \(name), namespace: shop}
        spec:
          address: \(address)
          labels: {app: payments, security.istio.io/tlsMode: istio\(labels)}
          ports: {tcp-payments: 8080}
        \(network.map { "  network: \($0)" } ?? "")
        \(weight.map { "  weight: \($0)" } ?? "")
        """
    }

    /// a on n1, b on n2 (weight 3), c on n3 (no gateway), d on none, e on n2 by label, f on n2 by range.
    static let workloads = [
        workload("a", "198.51.100.10", network: "n1"), workload("b", "198.51.100.11", network: "n2", weight: 3),
        workload("c", "198.51.100.12", network: "n3"), workload("d", "198.51.100.13"),
        workload("e", "198.51.100.14", labels: ", topology.istio.io/network: n2"), workload("f", "198.51.100.70"),
    ]

    static func store(_ documents: [String]) throws -> (MeshSnapshotStore, MeshResources) {
        let reading = MeshConfigReader.read([("mesh.yaml", documents.joined(separator: "\n---\n"))])
        let config = try #require(reading.config, "\(reading.problems)")
        let resources = try ProxyConfigGenerator().resources(for: config)
        let store = MeshSnapshotStore()
        store.update(resources)
        return (store, resources)
    }

    /// The proxy's view of the service's assignment: "address:port×weight" per endpoint, groups split by " | ".
    static func endpoints(_ store: MeshSnapshotStore, network: String? = nil, view: String? = nil,
                          locality: Envoy_Config_Core_V3_Locality? = nil) throws -> String {
        var node = Envoy_Config_Core_V3_Node()
        node.id = "sidecar~192.0.2.50~client.shop~shop.svc.cluster.local"
        if let network { node.metadata.fields["NETWORK"] = .init(stringValue: network) }
        if let view { node.metadata.fields["REQUESTED_NETWORK_VIEW"] = .init(stringValue: view) }
        if let locality { node.locality = locality }
        let resource = try #require(store.snapshot(for: node).types[.endpoint]?.resources.first { $0.name == cluster })
        let assignment = try Envoy_Config_Endpoint_V3_ClusterLoadAssignment(serializedBytes: [UInt8](resource.resource.value))
        return assignment.endpoints.map { group in
            group.lbEndpoints.map { endpoint in
                let address = endpoint.endpoint.address.socketAddress
                return "\(address.address):\(address.portValue)×\(endpoint.hasLoadBalancingWeight ? endpoint.loadBalancingWeight.value : 1)"
            }.joined(separator: " ") + (group.hasLoadBalancingWeight ? " =\(group.loadBalancingWeight.value)" : "") + (group.priority > 0 ? " @\(group.priority)" : "")
        }.joined(separator: " | ")
    }

    @Test func eachProxyGetsItsNetworksEndpointsAndOtherNetworksGateways() throws {
        let (store, resources) = try Self.store([Documents.serviceEntry, Self.configMap(networks: Self.networks)] + Self.workloads)
        #expect(resources.networks.weightScale == 2)
        // On n1: a (its own network), c (n3 has no gateway) and d (no network) directly, weights doubled; b, e
        // and f (n2) through n2's two gateways, sorted, each taking half of their weights: (6 + 2 + 2) / 2.
        #expect(try Self.endpoints(store, network: "n1")
                == "198.51.100.10:8080×2 198.51.100.12:8080×2 198.51.100.13:8080×2 192.0.2.1:15443×5 192.0.2.2:15443×5 =16")
        // On n2: a through n1's gateway; the rest directly.
        #expect(try Self.endpoints(store, network: "n2")
                == "198.51.100.11:8080×6 198.51.100.12:8080×2 198.51.100.13:8080×2 198.51.100.14:8080×2 198.51.100.70:8080×2 192.0.2.9:15443×2 =16")
        // On n3, which has no gateway of its own: others' endpoints still go through theirs.
        #expect(try Self.endpoints(store, network: "n3")
                == "198.51.100.12:8080×2 198.51.100.13:8080×2 192.0.2.1:15443×5 192.0.2.2:15443×5 192.0.2.9:15443×2 =16")
        // A proxy on no network reaches every endpoint directly, as istiod does (weights scaled all the same).
        let direct = "198.51.100.10:8080×2 198.51.100.11:8080×6 198.51.100.12:8080×2 198.51.100.13:8080×2 198.51.100.14:8080×2 198.51.100.70:8080×2 =16"
        #expect(try Self.endpoints(store) == direct)
        #expect(try Self.endpoints(store, network: "") == direct)
        // REQUESTED_NETWORK_VIEW: endpoints on networks outside it are not sent at all (those on none are).
        #expect(try Self.endpoints(store, network: "n1", view: "n1") == "198.51.100.10:8080×2 198.51.100.13:8080×2 =4")
        #expect(try Self.endpoints(store, network: "n1", view: "n1, n2")
                == "198.51.100.10:8080×2 198.51.100.13:8080×2 192.0.2.1:15443×5 192.0.2.2:15443×5 =14")
        #expect(try Self.endpoints(store, view: "n3") == "198.51.100.12:8080×2 198.51.100.13:8080×2 =4")
        // Proxies of a network share one list, made once per generation.
        var node = Envoy_Config_Core_V3_Node()
        node.id = "sidecar~192.0.2.51~other.shop~shop.svc.cluster.local"
        node.metadata.fields["NETWORK"] = .init(stringValue: "n1")
        let first = store.snapshot(for: node).types[.endpoint]?.list
        node.id = "sidecar~192.0.2.52~third.shop~shop.svc.cluster.local"
        #expect(store.snapshot(for: node).types[.endpoint]?.list === first)
    }

    @Test func withoutMutualTLSEndpointsOnOtherNetworksAreDropped() throws {
        let rule = """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: payments, namespace: shop}
            spec: {host: payments, trafficPolicy: {tls: {mode: DISABLE}}}
            """
        let (store, _) = try Self.store([Documents.serviceEntry, Self.configMap(networks: Self.networks), rule] + Self.workloads)
        // Plaintext cannot cross a gateway that routes by the SNI of Istio's mTLS: b, e and f are not sent.
        #expect(try Self.endpoints(store, network: "n1") == "198.51.100.10:8080×2 198.51.100.12:8080×2 198.51.100.13:8080×2 =6")
        // An endpoint without a sidecar keeps auto mTLS off for the whole cluster (Capstan's one transport socket per cluster).
        let plain = Self.workload("g", "198.51.100.15", network: "n2").replacingOccurrences(of: ", security.istio.io/tlsMode: istio", with: "")
        let (auto, _) = try Self.store([Documents.serviceEntry, Self.configMap(networks: Self.networks), plain] + Self.workloads)
        #expect(try Self.endpoints(auto, network: "n1") == "198.51.100.10:8080×2 198.51.100.12:8080×2 198.51.100.13:8080×2 =6")
    }

    @Test func aGatewayProxyOnANetworkGetsItsNetworksViewOfTheServiceAndOfItsSNIDNATCluster() throws {
        let gateway = """
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata: {name: cross-network-gateway, namespace: istio-system}
            spec:
              selector: {istio: eastwestgateway}
              servers:
              - port: {number: 15443, name: tls, protocol: TLS}
                tls: {mode: AUTO_PASSTHROUGH}
                hosts: ["*.local"]
            """
        let (store, _) = try Self.store([Documents.serviceEntry, Self.configMap(networks: Self.networks), gateway] + Self.workloads)
        func endpoints(_ name: String, network: String?) throws -> String {
            var node = Envoy_Config_Core_V3_Node()
            node.id = "router~192.0.2.60~eastwest.istio-system~istio-system.svc.cluster.local"
            node.metadata.fields["LABELS"] = .init(structValue: .with { $0.fields = ["istio": .init(stringValue: "eastwestgateway")] })
            if let network { node.metadata.fields["NETWORK"] = .init(stringValue: network) }
            let resource = try #require(store.snapshot(for: node).types[.endpoint]?.resources.first { $0.name == name }, "\(name)")
            let assignment = try Envoy_Config_Endpoint_V3_ClusterLoadAssignment(serializedBytes: [UInt8](resource.resource.value))
            return assignment.endpoints.flatMap(\.lbEndpoints).map { "\($0.endpoint.address.socketAddress.address):\($0.endpoint.address.socketAddress.portValue)" }
                .joined(separator: " ")
        }
        let dnat = "outbound_.9080_._.payments.shop.svc.cluster.local"
        // On n2: a (n1) through n1's gateway, the rest directly; its SNI-DNAT cluster alike.
        let n2 = "198.51.100.11:8080 198.51.100.12:8080 198.51.100.13:8080 198.51.100.14:8080 198.51.100.70:8080 192.0.2.9:15443"
        #expect(try endpoints(Self.cluster, network: "n2") == n2)
        #expect(try endpoints(dnat, network: "n2") == n2)
        // On no network: every endpoint directly.
        #expect(try endpoints(dnat, network: nil) == "198.51.100.10:8080 198.51.100.11:8080 198.51.100.12:8080 198.51.100.13:8080 198.51.100.14:8080 198.51.100.70:8080")
    }

    @Test func aGroupLeftEmptyHasNoWeightAndLocalitiesApplyAfterwards() throws {
        let located = [Self.workload("a", "198.51.100.10", network: "n1") + "\n  locality: r1/z1",
                       Self.workload("b", "198.51.100.11", network: "n2") + "\n  locality: r2/z1"]
        let rule = """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: payments, namespace: shop}
            spec: {host: payments, trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, outlierDetection: {consecutive5xxErrors: 1}}}
            """
        let (store, _) = try Self.store([Documents.serviceEntry, Self.configMap(networks: Self.networks), rule] + located)
        let here = Envoy_Config_Core_V3_Locality.with { $0.region = "r2"; $0.zone = "z1" }
        // b's group holds n2's gateways in its place; its locality is still the one failover ranks first for r2.
        #expect(try Self.endpoints(store, network: "n1", locality: here) == "198.51.100.10:8080×2 =2 @1 | 192.0.2.1:15443×1 192.0.2.2:15443×1 =2")
        // On n3: both groups hold only gateways, each in the place of its endpoint.
        #expect(try Self.endpoints(store, network: "n3") == "192.0.2.9:15443×2 =2 | 192.0.2.1:15443×1 192.0.2.2:15443×1 =2")
        // No gateway for the endpoint's network and no mTLS: a group can be left empty, with no weight.
        let plain = [Self.workload("b", "198.51.100.11", network: "n2") + "\n  locality: r2/z1"]
        let disabled = rule.replacingOccurrences(of: "ISTIO_MUTUAL", with: "DISABLE")
        let (empty, _) = try Self.store([Documents.serviceEntry, Self.configMap(networks: Self.networks), disabled, located[0]] + plain)
        #expect(try Self.endpoints(empty, network: "n1") == "198.51.100.10:8080×2 =2 | ")
    }

    @Test func withoutGatewaysEveryProxySharesTheAssignmentAsItIs() throws {
        // Networks named on endpoints but no gateway anywhere: istiod's multi-network is off.
        let (store, resources) = try Self.store([Documents.serviceEntry, Self.configMap(networks: "networks: {n3: {endpoints: [{fromCidr: 203.0.113.0/24}]}}")]
                                                + Self.workloads)
        #expect(resources.networkAware.isEmpty)
        let shared = "198.51.100.10:8080×1 198.51.100.11:8080×3 198.51.100.12:8080×1 198.51.100.13:8080×1 198.51.100.14:8080×1 198.51.100.70:8080×1 =8"
        #expect(try Self.endpoints(store, network: "n1") == shared)
        #expect(try Self.endpoints(store) == shared)
        // With gateways but no endpoint on any network: one gateway per network scales nothing, nothing is per network.
        let (plain, plainResources) = try Self.store([Documents.serviceEntry, Self.configMap(networks: "networks: {n1: {gateways: [{address: 192.0.2.9, port: 15443}]}}"),
                                                      Self.workload("d", "198.51.100.13")])
        #expect(plainResources.networkAware.isEmpty)
        #expect(try Self.endpoints(plain, network: "n1") == "198.51.100.13:8080×1 =1")
    }

    @Test func meshNetworksAreReadWithTheirGatewaysSortedAndTheirRanges() throws {
        let reading = MeshConfigReader.read([("istio.yaml", Self.configMap(networks: """
            networks:
              n2:
                endpoints: [{fromRegistry: Kubernetes}, {fromCidr: 198.51.100.64/26}]
                gateways: [{address: 192.0.2.2, port: 15443, locality: r1}, {address: 192.0.2.1, port: 15443}]
              n1: {}
            """))])
        let networks = try #require(reading.config, "\(reading.problems)").mesh.networks
        #expect(networks.gateways == ["n2": [.init(network: "n2", address: "192.0.2.1", port: 15443), .init(network: "n2", address: "192.0.2.2", port: 15443)]])
        #expect(networks.network(of: WorkloadEndpoint(address: "198.51.100.127", labels: [:], ports: [:])) == "n2")
        #expect(networks.network(of: WorkloadEndpoint(address: "198.51.100.128", labels: [:], ports: [:])) == nil)
        #expect(reading.warnings.contains { $0.contains("data.meshNetworks.networks.n2.endpoints[0].fromRegistry: not acted on") }, "\(reading.warnings)")
        #expect(reading.warnings.contains { $0.contains("data.meshNetworks.networks.n2.gateways[0].locality: not acted on") }, "\(reading.warnings)")
        // An endpoint's own network is kept (and no longer warned about).
        let entry = MeshConfigReader.read([("mesh.yaml", Self.workload("a", "198.51.100.10", network: "n1"))])
        #expect(try #require(entry.config).workloadEntries.first?.endpoint.network == "n1")
        #expect(entry.warnings == ["endpoint 198.51.100.10: network \"n1\" has no effect: the mesh config's meshNetworks names no gateway, so every proxy reaches every endpoint directly (as istiod)"],
                "\(entry.warnings)")
        let withGateway = MeshConfigReader.read([("mesh.yaml", Self.workload("a", "198.51.100.10", network: "n1") + "\n---\n"
                                                   + Self.configMap(networks: "networks: {n1: {gateways: [{address: 192.0.2.9, port: 15443}]}}"))])
        #expect(withGateway.config != nil && !withGateway.warnings.contains { $0.contains("network") }, "\(withGateway.warnings)")
    }

    @Test(arguments: [
        ("networks: {n1: {gateways: [{address: gw.example.com, port: 15443}]}}",
         "data.meshNetworks.networks.n1.gateways[0].address: \"gw.example.com\" is not an IP address"),
        ("networks: {n1: {gateways: [{address: 192.0.2.0/24, port: 15443}]}}",
         "data.meshNetworks.networks.n1.gateways[0].address: \"192.0.2.0/24\" is not an IP address"),
        ("networks: {n1: {gateways: [{registryServiceName: istio-eastwestgateway.istio-system.svc.cluster.local, port: 15443}]}}",
         "data.meshNetworks.networks.n1.gateways[0].registryServiceName: is not supported by Capstan: give the gateway's address"),
        ("networks: {n1: {gateways: [{address: 192.0.2.9, port: 0}]}}", "data.meshNetworks.networks.n1.gateways[0].port: 0 is out of range"),
        ("networks: {n1: {gateways: [{address: 192.0.2.9}]}}", "data.meshNetworks.networks.n1.gateways[0].port: is required"),
        ("networks: {n1: {endpoints: [{fromCidr: 10.0.0.0/33}]}}", "data.meshNetworks.networks.n1.endpoints[0].fromCidr: \"10.0.0.0/33\" is not an IP address range"),
        ("networks: {n1: {endpoints: [{fromCidr: 10.0.0.0/8, fromRegistry: Kubernetes}]}}",
         "data.meshNetworks.networks.n1.endpoints[0]: needs exactly one of fromCidr, fromRegistry"),
        ("networks: {n1: {endpoints: [{fromRegistry: -bad}]}}", "data.meshNetworks.networks.n1.endpoints[0].fromRegistry: \"-bad\" is not a registry name"),
        ("networks: [n1]", "data.meshNetworks.networks: expected an object"),
        ("networks: {n1: {gateways: [", "data.meshNetworks: not valid YAML"),
    ])
    func refusalsNameTheField(networks: String, message: String) {
        let reading = MeshConfigReader.read([("istio.yaml", Self.configMap(networks: networks))])
        #expect(reading.config == nil, "nothing is half-applied")
        let problem = reading.problems.first?.description ?? ""
        #expect(problem.contains("ConfigMap istio-system/istio: \(message)"), "\(problem)")
    }
}
