import Foundation
@testable import ControlPlane
import SwiftProtobuf
import Testing
import XDS

/// `localityLbSetting` and istiod's default locality failover: read with Istio's validation, applied per
/// proxy locality as istiod's `applyLocalityLoadBalancer` does, and served per proxy by the snapshot store.
@Suite struct LocalityLoadBalancingTests {
    func workload(_ name: String, _ address: String, _ locality: String) -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: \(name), namespace: shop}
        spec: {address: \(address), labels: {app: payments, version: v1}, ports: {tcp-payments: 8080}, locality: \(locality)}
        """
    }

    func rule(_ trafficPolicy: String) -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: payments, namespace: shop}
        spec:
          host: payments
          trafficPolicy: \(trafficPolicy)
        """
    }

    func store(_ trafficPolicy: String?) throws -> MeshSnapshotStore {
        var documents = [Documents.serviceEntry, workload("a", "198.51.100.10", "r1/z1/s1"), workload("b", "198.51.100.11", "r1/z1/s2"),
                         workload("c", "198.51.100.12", "r1/z2"), workload("d", "198.51.100.13", "r2/z1"), workload("e", "198.51.100.14", "r3/z1")]
        if let trafficPolicy { documents.append(rule(trafficPolicy)) }
        let reading = MeshConfigReader.read([("mesh.yaml", documents.joined(separator: "\n---\n"))])
        let config = try #require(reading.config, "\(reading.problems)")
        let store = MeshSnapshotStore()
        store.update(try ProxyConfigGenerator().resources(for: config))
        return store
    }

    /// The proxy's view of the service's assignment: "locality@priority×weight" per group.
    func groups(_ store: MeshSnapshotStore, locality: Envoy_Config_Core_V3_Locality? = nil, labels: [String: String] = [:]) throws -> [String] {
        var node = Envoy_Config_Core_V3_Node()
        node.id = "sidecar~198.51.100.50~client.shop~shop.svc.cluster.local"
        if let locality { node.locality = locality }
        if !labels.isEmpty {
            node.metadata.fields["LABELS"] = .init(structValue: .with { $0.fields = labels.mapValues { .init(stringValue: $0) } })
        }
        let resource = try #require(store.snapshot(for: node).types[.endpoint]?.resources.first { $0.name == "outbound|9080||payments.shop.svc.cluster.local" })
        let assignment = try Envoy_Config_Endpoint_V3_ClusterLoadAssignment(serializedBytes: [UInt8](resource.resource.value))
        return assignment.endpoints.map { group in
            "\(group.locality.region)/\(group.locality.zone)/\(group.locality.subZone)@\(group.priority)×\(group.loadBalancingWeight.value)"
                + (group.lbEndpoints.isEmpty ? " empty" : "")
        }
    }

    let here = Envoy_Config_Core_V3_Locality.with { $0.region = "r1"; $0.zone = "z1"; $0.subZone = "s1" }

    @Test func withOutlierDetectionEndpointsArePrioritizedByTheProxysLocality() throws {
        let store = try store("{outlierDetection: {consecutive5xxErrors: 1}}")
        #expect(try groups(store, locality: here) == ["r1/z1/s1@0×1", "r1/z1/s2@1×1", "r1/z2/@2×1", "r2/z1/@3×1", "r3/z1/@3×1"])
        // The locality from the topology labels when the node has none.
        #expect(try groups(store, labels: ["topology.kubernetes.io/region": "r2", "topology.kubernetes.io/zone": "z1"])
                == ["r1/z1/s1@1×1", "r1/z1/s2@1×1", "r1/z2/@1×1", "r2/z1/@0×1", "r3/z1/@1×1"])
        // Or from Istio's locality label (dots for slashes), which comes first.
        #expect(try groups(store, labels: ["istio-locality": "r1.z2", "topology.kubernetes.io/region": "r2"])
                == ["r1/z1/s1@1×1", "r1/z1/s2@1×1", "r1/z2/@0×1", "r2/z1/@2×1", "r3/z1/@2×1"])
        // A proxy without a locality gets the shared assignment, all of priority 0.
        #expect(try groups(store).allSatisfy { $0.contains("@0×") })
        // Without outlier detection, no failover (Envoy would never fail over), as istiod.
        #expect(try groups(try self.store("{loadBalancer: {simple: ROUND_ROBIN}}"), locality: here).allSatisfy { $0.contains("@0×") })
        // Turned off.
        #expect(try groups(try self.store("{loadBalancer: {localityLbSetting: {enabled: false}}, outlierDetection: {consecutive5xxErrors: 1}}"),
                           locality: here).allSatisfy { $0.contains("@0×") })
    }

    @Test func failoverNamesTheRegionToTryFirst() throws {
        let store = try store("{loadBalancer: {localityLbSetting: {failover: [{from: r1, to: r3}]}}, outlierDetection: {consecutive5xxErrors: 1}}")
        #expect(try groups(store, locality: here) == ["r1/z1/s1@0×1", "r1/z1/s2@1×1", "r1/z2/@2×1", "r2/z1/@4×1", "r3/z1/@3×1"])
    }

    @Test func distributeSetsTheLocalityWeights() throws {
        let store = try store("{loadBalancer: {localityLbSetting: {distribute: [{from: r1/z1/*, to: {r1/z1/*: 80, r2/*: 20}}]}}}")
        // r1/z1's two localities share 80; r2's one takes 20; the others take nothing.
        #expect(try groups(store, locality: here) == ["r1/z1/s1@0×40", "r1/z1/s2@0×40", "r1/z2/@0×1 empty", "r2/z1/@0×20", "r3/z1/@0×1 empty"])
        // A proxy no rule is from keeps the assignment as it is.
        #expect(try groups(store, locality: .with { $0.region = "r9" }).allSatisfy { $0.hasSuffix("×1") })
    }

    @Test func failoverPriorityOrdersByLabelsSharedWithTheProxy() throws {
        let store = try store("{loadBalancer: {localityLbSetting: {failoverPriority: [version]}}, outlierDetection: {consecutive5xxErrors: 1}}")
        // Every endpoint is version v1: those share the label with a v1 proxy (priority 0), none with a v2 one.
        #expect(try groups(store, locality: here, labels: ["version": "v1"]).allSatisfy { $0.contains("@0×") })
        #expect(try groups(store, locality: here, labels: ["version": "v2"]).allSatisfy { $0.contains("@0×") })
        // With failover too, by locality within each label priority.
        let both = try self.store("{loadBalancer: {localityLbSetting: {failoverPriority: [version], failover: [{from: r1, to: r3}]}}, outlierDetection: {consecutive5xxErrors: 1}}")
        #expect(try groups(both, locality: here, labels: ["version": "v1"]) == ["r1/z1/s1@0×1", "r1/z1/s2@1×1", "r1/z2/@2×1", "r2/z1/@4×1", "r3/z1/@3×1"])
    }

    @Test(arguments: [
        ("{distribute: [{from: r1/*, to: {r1/*: 70, r2/*: 20}}]}", "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: weights sum to 90, not 100, as Istio requires"),
        ("{distribute: [{from: r1/*, to: {r1/*: 100}}], failover: [{from: r1, to: r2}]}", "spec.trafficPolicy.loadBalancer.localityLbSetting.failover: cannot be given with distribute, as Istio requires"),
        ("{failover: [{from: r1, to: r1}]}", "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]: failover from \"r1\" to itself: the regions must differ"),
        ("{failover: [{from: r1/z1, to: r2}]}", "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]: failover names regions only (no /): \"r1/z1\" to \"r2\""),
        ("{distribute: [{from: r*/z1, to: {r1: 100}}]}", "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from: \"r*/z1\" is not a locality (region, region/zone or region/zone/subzone, * only as a whole last part)"),
    ])
    func badSettingsAreRefusedWithFileDocumentAndField(setting: String, message: String) {
        let reading = MeshConfigReader.read([("dr.yaml", rule("{loadBalancer: {localityLbSetting: \(setting)}}"))])
        #expect(reading.problems.map(\.description) == ["dr.yaml: document 1 (line 1): DestinationRule shop/payments: \(message)"])
    }

    @Test func outboundClustersAreLocalityWeightedAsIstiodMakesThem() throws {
        let reading = MeshConfigReader.read([("mesh.yaml", [Documents.serviceEntry, workload("a", "198.51.100.10", "r1/z1")].joined(separator: "\n---\n"))])
        let resources = try ProxyConfigGenerator().resources(for: try #require(reading.config))
        let cluster = try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](try #require(resources.clusters.first {
            $0.name == "outbound|9080||payments.shop.svc.cluster.local" }).resource.value))
        #expect(cluster.commonLbConfig.localityWeightedLbConfig == .init())
    }
}

/// The mesh config's `localityLbSetting`: the default of DestinationRules without their own, as istiod's
/// `GetLocalityLbSetting` takes it (a rule's own setting wins, `enabled: false` in the mesh turns off the
/// default failover).
extension LocalityLoadBalancingTests {
    func store(_ trafficPolicy: String?, mesh: String) throws -> MeshSnapshotStore {
        var documents = [Documents.serviceEntry, workload("a", "198.51.100.10", "r1/z1/s1"), workload("b", "198.51.100.11", "r1/z1/s2"),
                         workload("c", "198.51.100.12", "r1/z2"), workload("d", "198.51.100.13", "r2/z1"), workload("e", "198.51.100.14", "r3/z1"),
                         MeshSettingsTests.configMap(mesh)]
        if let trafficPolicy { documents.append(rule(trafficPolicy)) }
        let reading = MeshConfigReader.read([("mesh.yaml", documents.joined(separator: "\n---\n"))])
        let config = try #require(reading.config, "\(reading.problems)")
        #expect(!reading.warnings.contains { $0.contains("localityLbSetting") }, "\(reading.warnings)")
        let store = MeshSnapshotStore()
        store.update(try ProxyConfigGenerator().resources(for: config))
        return store
    }

    @Test func theMeshWideSettingIsTheDefaultOfRulesWithoutOne() throws {
        let outlier = "{outlierDetection: {consecutive5xxErrors: 1}}"
        // The mesh's failover applies to a rule that gives none.
        let failover = try store(outlier, mesh: "localityLbSetting: {failover: [{from: r1, to: r3}]}")
        #expect(try groups(failover, locality: here) == ["r1/z1/s1@0×1", "r1/z1/s2@1×1", "r1/z2/@2×1", "r2/z1/@4×1", "r3/z1/@3×1"])
        // Its distribute too, with or without outlier detection, and to services without a rule.
        let distribute = "localityLbSetting: {distribute: [{from: r1/z1/*, to: {r1/z1/*: 80, r2/*: 20}}]}"
        let expected = ["r1/z1/s1@0×40", "r1/z1/s2@0×40", "r1/z2/@0×1 empty", "r2/z1/@0×20", "r3/z1/@0×1 empty"]
        #expect(try groups(try store(nil, mesh: distribute), locality: here) == expected)
        #expect(try groups(try store("{connectionPool: {tcp: {maxConnections: 10}}}", mesh: distribute), locality: here) == expected)
        // Off in the mesh: no default failover, even with outlier detection.
        let off = try store(outlier, mesh: "localityLbSetting: {enabled: false}")
        #expect(try groups(off, locality: here).allSatisfy { $0.contains("@0×") })
        // A rule's own setting wins over the mesh's, whether the mesh's is off or another.
        let own = try store("{loadBalancer: {localityLbSetting: {enabled: true}}, outlierDetection: {consecutive5xxErrors: 1}}",
                            mesh: "localityLbSetting: {enabled: false}")
        #expect(try groups(own, locality: here) == ["r1/z1/s1@0×1", "r1/z1/s2@1×1", "r1/z2/@2×1", "r2/z1/@3×1", "r3/z1/@3×1"])
        let ruleOff = try store("{loadBalancer: {localityLbSetting: {enabled: false}}, outlierDetection: {consecutive5xxErrors: 1}}",
                                mesh: "localityLbSetting: {failover: [{from: r1, to: r3}]}")
        #expect(try groups(ruleOff, locality: here).allSatisfy { $0.contains("@0×") })
    }

    @Test func theMeshWideSettingIsCheckedAsARulesIs() {
        let reading = MeshConfigReader.read([("istio.yaml", MeshSettingsTests.configMap("localityLbSetting: {failover: [{from: r1, to: r1}]}"))])
        #expect(reading.config == nil)
        #expect(reading.problems.contains { $0.description.contains("data.mesh.localityLbSetting.failover[0]: failover from \"r1\" to itself") },
                "\(reading.problems)")
    }
}
