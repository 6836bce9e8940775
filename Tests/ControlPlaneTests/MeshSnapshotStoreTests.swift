@testable import ControlPlane
import SwiftProtobuf
import Testing
import XDS

/// When the store moves a type's version: exactly when what some proxy is sent of that type changes,
/// judged on the values (packed resources, inbound listener inputs), not on how they print.
@Suite struct MeshSnapshotStoreTests {
    typealias PA = MutualTLSDocuments

    func resources(_ documents: [String]) throws -> MeshResources {
        let reading = MeshConfigReader.read([("mesh.yaml", documents.joined(separator: "\n---\n"))])
        return try ProxyConfigGenerator().resources(for: try #require(reading.config, "\(reading.problems)"))
    }

    func versions(_ store: MeshSnapshotStore) -> [String] {
        var node = Envoy_Config_Core_V3_Node()
        node.id = "sidecar~198.51.100.10~payments-v1.shop~shop.svc.cluster.local"
        let snapshot = store.snapshot(for: node)
        return [XDSResourceType.cluster, .endpoint, .listener].map { snapshot.types[$0]?.version ?? "none" }
    }

    @Test func anUnchangedConfigurationKeepsEveryVersionAndAChangedOneMovesItsTypes() throws {
        let store = MeshSnapshotStore()
        let base = PA.mesh() + [PA.peerAuthentication("default", namespace: "istio-system", mode: "STRICT")]
        #expect(store.update(try resources(base)) == [.cluster, .endpoint, .listener, .route, .nameTable])
        #expect(versions(store) == ["1", "1", "1"])

        // The same documents again, and the same policy moved to another place in the files (its
        // origin differs, its content does not): nothing to push.
        #expect(store.update(try resources(base)).isEmpty)
        #expect(store.update(try resources([base[4]] + base[0..<4])).isEmpty)
        #expect(store.version == 3)
        #expect(versions(store) == ["1", "1", "1"])

        // A port-level mode: v1's listener changes, nothing else.
        let override = PA.mesh() + [PA.peerAuthentication("default", namespace: "istio-system", mode: "STRICT"),
                                    PA.peerAuthentication("v1", namespace: "shop", mode: nil, selector: "{version: v1}",
                                                          portLevel: "{8080: {mode: PERMISSIVE}}")]
        #expect(store.update(try resources(override)) == [.listener])
        #expect(versions(store) == ["1", "1", "4"])
        // Back: the listener moves again, to this generation's number.
        #expect(store.update(try resources(base)) == [.listener])
        #expect(versions(store) == ["1", "1", "5"])
    }

    /// Proxies are sent the same encoded lists, not copies: what a connected proxy costs the control plane
    /// must not grow with the mesh.
    @Test func proxiesShareTheEncodedListsOfAGeneration() throws {
        let store = MeshSnapshotStore()
        store.update(try resources(PA.mesh()))
        func snapshot(_ ip: String) -> XDSSnapshot {
            var node = Envoy_Config_Core_V3_Node()
            node.id = "sidecar~\(ip)~payments-v1.shop~shop.svc.cluster.local"
            return store.snapshot(for: node)
        }
        let first = snapshot("198.51.100.10"), again = snapshot("198.51.100.10"), other = snapshot("198.51.100.11")
        for type in [XDSResourceType.cluster, .endpoint, .route, .nameTable] {
            #expect(first.types[type]?.list === other.types[type]?.list, "\(type.service)")
        }
        // Listeners hold the proxy's own inbound listener: shared by asks of the same proxy only.
        #expect(first.types[.listener]?.list === again.types[.listener]?.list)
        #expect(first.types[.listener]?.list !== other.types[.listener]?.list)

        // A change to listeners only: the other lists stay the ones already encoded.
        store.update(try resources(PA.mesh() + [PA.peerAuthentication("default", namespace: "istio-system", mode: "STRICT")]))
        let changed = snapshot("198.51.100.10")
        #expect(changed.types[.cluster]?.list === first.types[.cluster]?.list)
        #expect(changed.types[.listener]?.list !== first.types[.listener]?.list)
    }

    @Test func policiesThatChangeNoListenerPushNothing() throws {
        let store = MeshSnapshotStore()
        let base = PA.mesh() + [PA.peerAuthentication("default", namespace: "istio-system", mode: "STRICT")]
        store.update(try resources(base))
        // A namespace policy repeating the mesh's mode, and a port-level mode repeating the workload's
        // on its own port: every proxy's listener stays byte for byte the same.
        let repeating = base + [PA.peerAuthentication("default", namespace: "shop", mode: "STRICT"),
                                PA.peerAuthentication("v1", namespace: "shop", mode: nil, selector: "{version: v1}",
                                                      portLevel: "{8080: {mode: STRICT}}")]
        #expect(store.update(try resources(repeating)).isEmpty)
        // The same port-level mode on a port no service declares adds v1 a chain of its own.
        let ownChain = base + [PA.peerAuthentication("v1", namespace: "shop", mode: nil, selector: "{version: v1}",
                                                     portLevel: "{9901: {mode: STRICT}}")]
        #expect(store.update(try resources(ownChain)) == [.listener])
        // A namespace no workload is in: a policy repeating the mesh's mode moves nothing, one that
        // differs moves listeners (a proxy outside the configuration there gets it).
        #expect(store.update(try resources(ownChain + [PA.peerAuthentication("default", namespace: "web", mode: "STRICT")])).isEmpty)
        #expect(store.update(try resources(ownChain + [PA.peerAuthentication("default", namespace: "web", mode: "DISABLE")])) == [.listener])
    }

    /// The values the store compares for a described workload are equal exactly when the listeners
    /// made from them are, over every mode, port set and port-level override of a small space.
    @Test func inboundWorkloadsAreEqualExactlyWhenTheirListenersAre() throws {
        let modes: [PeerAuthentication.Mode] = [.strict, .permissive, .disable]
        var workloads: [MeshResources.InboundWorkload] = []
        for ports in [[], [8080], [8080, 9090]] {
            for mode in modes {
                let overrides: [[Int: PeerAuthentication.Mode]] = [[:], [9901: .strict]] + modes.map { [8080: $0] }
                for portModes in overrides {
                    workloads.append(.init(ports: ports, tls: .init(mode: mode, portModes: portModes)))
                }
            }
        }
        let listeners = try workloads.map { try ProxyConfigGenerator.inboundListener($0, transparent: false).resource.value }
        var equalPairs = 0
        for i in workloads.indices {
            for j in workloads.indices {
                #expect((workloads[i] == workloads[j]) == (listeners[i] == listeners[j]), "\(workloads[i]) vs \(workloads[j])")
                if i != j && listeners[i] == listeners[j] { equalPairs += 1 }
            }
        }
        // The space holds different values that make the same listener (a repeated port-level mode).
        #expect(equalPairs > 0)
    }

    /// The same for proxies the configuration does not describe: the compared value is equal exactly
    /// when such proxies get the same modes in every namespace (here: those named, and one that is not).
    @Test func undescribedProxiesAreEqualExactlyWhenEveryNamespaceGetsTheSameModes() {
        func policy(_ namespace: String, _ mode: PeerAuthentication.Mode?, selector: [String: String]? = nil,
                    ports: [Int: PeerAuthentication.Mode] = [:]) -> PeerAuthentication {
            PeerAuthentication(origin: ResourceOrigin(file: "mesh.yaml", document: 0, line: 1, kind: "PeerAuthentication", name: namespace),
                               namespace: namespace, selector: selector, mode: mode, portLevelModes: ports)
        }
        let sets: [[PeerAuthentication]] = [
            [],
            [policy("istio-system", .permissive)],
            [policy("istio-system", .strict)],
            [policy("istio-system", .strict), policy("shop", .strict)],
            [policy("istio-system", .strict), policy("shop", .disable)],
            [policy("shop", .permissive)],
            [policy("shop", .disable)],
            [policy("shop", .disable), policy("shop", .strict, selector: ["version": "v1"])],
            // An empty selector (only possible when built in code) reaches proxies without labels.
            [policy("shop", .strict, selector: [:])],
            [policy("shop", nil, selector: [:], ports: [9901: .disable])],
            [policy("shop", .permissive, selector: [:])],
        ]
        let namespaces = ["istio-system", "shop", "web"]
        for a in sets {
            for b in sets {
                let (first, second) = (MutualTLSPolicy(a), MutualTLSPolicy(b))
                let sameModes = namespaces.allSatisfy { first.inbound(namespace: $0) == second.inbound(namespace: $0) }
                #expect((first.undescribedProxies == second.undescribedProxies) == sameModes, "\(a.map(\.namespace)) vs \(b.map(\.namespace))")
            }
        }
    }
}
