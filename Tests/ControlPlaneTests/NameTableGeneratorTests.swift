@testable import ControlPlane
import Foundation
import SwiftProtobuf
import Testing
import XDS

/// NDS: the NameTable a proxy's agent answers DNS from, made from the ServiceEntries as istiod makes it.
@Suite struct NameTableGeneratorTests {
    static let documents = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: payments, namespace: shop}
        spec:
          hosts: [payments.shop.svc.cluster.local]
          addresses: [198.51.100.200, 2001:db8:200::/64]
          ports: [{number: 9080, name: tcp-payments, protocol: TCP}]
          resolution: STATIC
          endpoints: [{address: 192.0.2.10}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: auth, namespace: shop}
        spec:
          hosts: [auth.external-service.com, "*.wild.example"]
          addresses: [198.51.100.77]
          ports: [{number: 443, name: tls, protocol: TLS}]
          resolution: STATIC
          endpoints: [{address: 198.51.100.78}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: headless, namespace: shop}
        spec:
          hosts: [db.shop.svc.cluster.local]
          ports: [{number: 5432, name: tcp-db, protocol: TCP}]
          resolution: NONE
          endpoints: [{address: 192.0.2.31}, {address: 192.0.2.32}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: novip, namespace: billing}
        spec:
          hosts: [ledger.example.org, api.example.org]
          ports: [{number: 80, name: http, protocol: HTTP}]
          resolution: STATIC
          endpoints: [{address: 192.0.2.40}]
        """

    func tables() throws -> NameTableGenerator.Tables {
        let reading = MeshConfigReader.read([("mesh.yaml", Self.documents)])
        let config = try #require(reading.config, "\(reading.problems)")
        return NameTableGenerator.tables(for: config.serviceEntries)
    }

    @Test func hostsCarryTheirAddressesAndKubernetesNamesTheirShortForm() throws {
        let table = try tables().plain.table
        let payments = try #require(table["payments.shop.svc.cluster.local"])
        #expect(payments.ips == ["198.51.100.200"], "the CIDR is left out")
        #expect(payments.registry == "Kubernetes" && payments.shortname == "payments" && payments.namespace == "shop")
        let auth = try #require(table["auth.external-service.com"])
        #expect(auth.ips == ["198.51.100.77"] && auth.registry == "External" && auth.shortname.isEmpty)
        #expect(table["*.wild.example"]?.ips == ["198.51.100.77"])
        #expect(table["db.shop.svc.cluster.local"]?.ips == ["192.0.2.31", "192.0.2.32"], "headless: the endpoints")
        #expect(table["ledger.example.org"] == nil, "no address and no auto-allocation")
    }

    @Test func autoAllocationGivesClassEAddressesInHostOrder() throws {
        let allocated = try tables().autoAllocated.table
        #expect(allocated["api.example.org"]?.ips == ["240.240.0.1"])
        #expect(allocated["ledger.example.org"]?.ips == ["240.240.0.2"])
        #expect(allocated["payments.shop.svc.cluster.local"]?.ips == ["198.51.100.200"])
        #expect(allocated["db.shop.svc.cluster.local"]?.ips == ["192.0.2.31", "192.0.2.32"])
        let many = (0..<300).map { index in
            ServiceEntry(origin: ResourceOrigin(file: "m", document: index, line: 1, kind: "ServiceEntry", name: "s\(index)"),
                         namespace: "shop", hosts: [String(format: "h%03d.example", index)], addresses: [], ports: [],
                         resolution: .static, endpoints: [], workloadSelector: nil)
        }
        let vips = NameTableGenerator.allocations(for: many)
        #expect(vips["h000.example"] == "240.240.0.1")
        #expect(vips["h253.example"] == "240.240.0.254")
        #expect(vips["h254.example"] == "240.240.1.1", ".255 and .0 are skipped")
        #expect(Set(vips.values).count == 300)
    }

    @Test func theStoreServesTheVariantTheNodeAsksFor() throws {
        let store = MeshSnapshotStore()
        let reading = MeshConfigReader.read([("mesh.yaml", Self.documents)])
        store.update(try ProxyConfigGenerator().resources(for: try #require(reading.config)))
        var node = Envoy_Config_Core_V3_Node()
        node.id = "sidecar~192.0.2.1~client.shop~shop.svc.cluster.local"
        func table(_ node: Envoy_Config_Core_V3_Node) throws -> Istio_Networking_Nds_V1_NameTable {
            let resource = try #require(store.snapshot(for: node).types[.nameTable]?.resources.first?.resource)
            #expect(resource.typeURL == XDSResourceType.nameTable.typeURL)
            return try Istio_Networking_Nds_V1_NameTable(serializedBytes: resource.value)
        }
        #expect(try table(node).table["api.example.org"] == nil)
        node.metadata.fields["DNS_AUTO_ALLOCATE"] = Google_Protobuf_Value(stringValue: "true")
        #expect(try table(node).table["api.example.org"]?.ips == ["240.240.0.1"])
    }

    /// The listener side of auto-allocation: a proxy that asked for VIPs reaches a TCP service without
    /// addresses at its VIP (a chain for 240.240.0.x), a proxy that did not gets no such chain, and the
    /// allocating proxies' listener version follows their own listeners' content.
    @Test func autoAllocatedVIPsGetOutboundChainsForTheProxiesThatAskedForThem() throws {
        let tcp = """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: mongo, namespace: shop}
            spec:
              hosts: [mongo.example.org]
              ports: [{number: 27017, name: tcp-mongo, protocol: TCP}]
              resolution: STATIC
              endpoints: [{address: 192.0.2.60}]
            """
        let store = MeshSnapshotStore()
        func update(_ documents: String) throws -> [XDSResourceType] {
            store.update(try ProxyConfigGenerator().resources(for: try #require(MeshConfigReader.read([("mesh.yaml", documents)]).config)))
        }
        _ = try update(Self.documents + "\n---\n" + tcp)
        var plain = Envoy_Config_Core_V3_Node()
        plain.id = "sidecar~192.0.2.1~client.shop~shop.svc.cluster.local"
        var allocating = plain
        allocating.metadata.fields["DNS_AUTO_ALLOCATE"] = Google_Protobuf_Value(stringValue: "true")
        func chains(_ node: Envoy_Config_Core_V3_Node) throws -> [(prefix: String, port: UInt32)] {
            let resource = try #require(store.snapshot(for: node).types[.listener]?.resources.first { $0.name == ProxyConfigGenerator.outboundListenerName })
            let listener = try Envoy_Config_Listener_V3_Listener(unpackingAny: resource.resource)
            return listener.filterChains.flatMap { chain in
                chain.filterChainMatch.prefixRanges.map { ($0.addressPrefix, chain.filterChainMatch.destinationPort.value) }
            }
        }
        // mongo.example.org sorts after api. and ledger.example.org: the third VIP.
        let allocated = try chains(allocating)
        #expect(allocated.contains { $0.prefix == "240.240.0.3" && $0.port == 27017 }, "\(allocated)")
        #expect(try !chains(plain).contains { $0.prefix.hasPrefix("240.240.") })
        // Another host without addresses moves mongo's VIP: the allocating proxies' listeners change with it.
        let version = store.snapshot(for: allocating).types[.listener]?.version
        let extra = tcp.replacingOccurrences(of: "name: mongo,", with: "name: cache,").replacingOccurrences(of: "mongo.example.org", with: "cache.example.org")
            .replacingOccurrences(of: "27017", with: "6379").replacingOccurrences(of: "tcp-mongo", with: "tcp-cache")
        #expect(try update(Self.documents + "\n---\n" + tcp + "\n---\n" + extra).contains(.listener))
        #expect(store.snapshot(for: allocating).types[.listener]?.version != version)
        let moved = try chains(allocating)
        #expect(moved.contains { $0.prefix == "240.240.0.4" && $0.port == 27017 }, "\(moved)")
    }
}
