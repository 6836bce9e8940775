@testable import ControlPlane
import Testing
import XDS

/// The generator's exact output for a mesh that uses every mutual TLS level at once, pinned as one
/// fingerprint per resource: refactors of the generator must leave every byte the proxies get as it was.
/// Recorded from the generator that resolved PeerAuthentications per cluster and packed the inbound TLS
/// context per chain; a deliberate change of output re-records them from this test's failure messages
/// (last: istiod's default `lb_policy`, LEAST_REQUEST, on outbound clusters without a policy).
@Suite struct GeneratedResourcesGoldenTests {
    typealias PA = MutualTLSDocuments

    /// A ledger service in `billing` whose endpoint is inline (namespace from the ServiceEntry).
    static let ledger = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: ledger, namespace: billing}
        spec:
          hosts: [ledger]
          addresses: [198.51.100.201]
          ports: [{number: 7070, name: tcp-ledger, protocol: TCP, targetPort: 7071}]
          resolution: STATIC
          endpoints:
          - {address: 198.51.100.50, labels: {app: ledger, security.istio.io/tlsMode: istio}, serviceAccount: ledger}
        """

    /// STRICT mesh-wide, PERMISSIVE for billing, shop's v1 PERMISSIVE with 8080 DISABLE and 9901 (no
    /// service's port) STRICT; subset v2 ISTIO_MUTUAL, the rest by auto mTLS.
    static let documents = PA.mesh(v2TLS: "ISTIO_MUTUAL") + [
        ledger,
        PA.peerAuthentication("default", namespace: "istio-system", mode: "STRICT"),
        PA.peerAuthentication("default", namespace: "billing", mode: "PERMISSIVE"),
        PA.peerAuthentication("v1", namespace: "shop", mode: "PERMISSIVE", selector: "{version: v1}",
                              portLevel: "{8080: {mode: DISABLE}, 9901: {mode: STRICT}}"),
    ]

    /// FNV-1a, 64 bits: enough to tell one encoding from another, and printable in a failure message.
    static func fingerprint(_ bytes: some Sequence<UInt8>) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// Every resource the proxies of this mesh get, by a readable key, as its fingerprint.
    static func fingerprints() throws -> [String: String] {
        let reading = MeshConfigReader.read([("mesh.yaml", documents.joined(separator: "\n---\n"))])
        let config = try #require(reading.config, "\(reading.problems)")
        let resources = try ProxyConfigGenerator().resources(for: config)
        var result: [String: String] = [:]
        let kinds: [(XDSResourceType, [MeshResources.Resource])] =
            [(.cluster, resources.clusters), (.endpoint, resources.endpoints), (.listener, [resources.outboundListener])]
        for (type, list) in kinds {
            for resource in list {
                let key = "\(type.service) \(resource.name)"
                #expect(resource.resource.typeURL == type.typeURL, "\(key)")
                #expect(result[key] == nil, "\(key) twice")
                result[key] = fingerprint(resource.resource.value)
            }
        }
        // v1 (port-level modes), v2 (mesh STRICT), the inline ledger endpoint (billing PERMISSIVE), and
        // proxies the configuration does not describe, in a namespace with a policy and in one without.
        let proxies = [("198.51.100.10", "shop"), ("198.51.100.99", "shop"), ("198.51.100.50", "billing"),
                       ("192.0.2.1", "billing"), ("192.0.2.1", "web")]
        for (ip, namespace) in proxies {
            for transparent in [false, true] {
                let listener = try ProxyConfigGenerator.inboundListener(resources.inbound(ip: ip, namespace: namespace), transparent: transparent)
                #expect(listener.resource.typeURL == XDSResourceType.listener.typeURL)
                result["LDS \(listener.name) \(ip) \(namespace)\(transparent ? " tproxy" : "")"] = fingerprint(listener.resource.value)
            }
        }
        return result
    }

    @Test func theGeneratedResourcesAreByteForByteThoseRecorded() throws {
        let recorded: [String: String] = [
            "CDS BlackHoleCluster": "b54427d8d9e24854",
            "CDS InboundPassthroughCluster": "162d1e240e0a9042",
            "CDS PassthroughCluster": "ea2d3c22fcba827c",
            "CDS inbound|7071||": "c4cf20febed7983a",
            "CDS inbound|8080||": "28865bef4315b24d",
            "CDS outbound|7070||ledger.billing.svc.cluster.local": "3998ffa1d65c034c",
            "CDS outbound|9080|v1|payments.shop.svc.cluster.local": "b8c11a88c091f411",
            "CDS outbound|9080|v2|payments.shop.svc.cluster.local": "1fd38540a0a76c62",
            "CDS outbound|9080||payments.shop.svc.cluster.local": "5332bedb3308285b",
            "EDS outbound|7070||ledger.billing.svc.cluster.local": "9070610ec6cbe032",
            "EDS outbound|9080|v1|payments.shop.svc.cluster.local": "529a268b56133c0d",
            "EDS outbound|9080|v2|payments.shop.svc.cluster.local": "c88e5a09553c53bd",
            "EDS outbound|9080||payments.shop.svc.cluster.local": "18bc0e3bfc60dae1",
            "LDS virtualInbound 192.0.2.1 billing": "800b0eccc5f90ce8",
            "LDS virtualInbound 192.0.2.1 billing tproxy": "fae6d96eba9bf5e1",
            "LDS virtualInbound 192.0.2.1 web": "0e57c2f4f9b89f21",
            "LDS virtualInbound 192.0.2.1 web tproxy": "d52cd58edd19179c",
            "LDS virtualInbound 198.51.100.10 shop": "55a948a0b20a30d0",
            "LDS virtualInbound 198.51.100.10 shop tproxy": "81df45cb5f121b59",
            "LDS virtualInbound 198.51.100.50 billing": "0ad6ac0a16522e3b",
            "LDS virtualInbound 198.51.100.50 billing tproxy": "25512d6db5b7c626",
            "LDS virtualInbound 198.51.100.99 shop": "1a28422bb75fb828",
            "LDS virtualInbound 198.51.100.99 shop tproxy": "6aed426eb9af62a1",
            "LDS virtualOutbound": "269187a3e59aea1a",
        ]
        let generated = try Self.fingerprints()
        #expect(generated.keys.sorted() == recorded.keys.sorted())
        for key in generated.keys.sorted() {
            #expect(generated[key] == recorded[key], "\(key)")
        }
    }

    /// The pinned mesh exercises what it claims to: each policy level shows in some resource.
    @Test func theRecordedMeshUsesEveryModeAndAPortLevelOverride() throws {
        let reading = MeshConfigReader.read([("mesh.yaml", Self.documents.joined(separator: "\n---\n"))])
        let resources = try ProxyConfigGenerator().resources(for: try #require(reading.config, "\(reading.problems)"))
        func chains(_ ip: String, _ namespace: String) throws -> [String] {
            let listener = try ProxyConfigGenerator.inboundListener(resources.inbound(ip: ip, namespace: namespace), transparent: false)
            return try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](listener.resource.value)).filterChains.map(\.name)
        }
        #expect(try chains("198.51.100.10", "shop") == ["inbound|8080||-raw_buffer", "InboundPassthroughFilterChain-9901-tls",
                                                        "InboundPassthroughFilterChain-tls", "InboundPassthroughFilterChain-raw_buffer"])
        #expect(try chains("198.51.100.99", "shop") == ["inbound|8080||-tls", "InboundPassthroughFilterChain-tls"])
        #expect(try chains("198.51.100.50", "billing") == ["inbound|7071||-tls", "inbound|7071||-raw_buffer",
                                                           "InboundPassthroughFilterChain-tls", "InboundPassthroughFilterChain-raw_buffer"])
        #expect(try chains("192.0.2.1", "web") == ["InboundPassthroughFilterChain-tls"])
        func secured(_ name: String) throws -> Bool {
            let resource = try #require(resources.clusters.first { $0.name == name })
            return try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](resource.resource.value)).hasTransportSocket
        }
        // v1 DISABLEs 8080, so auto mTLS leaves clusters including it plaintext; v2's rule and ledger's sidecar secure theirs.
        #expect(try !secured("outbound|9080||payments.shop.svc.cluster.local"))
        #expect(try !secured("outbound|9080|v1|payments.shop.svc.cluster.local"))
        #expect(try secured("outbound|9080|v2|payments.shop.svc.cluster.local"))
        #expect(try secured("outbound|7070||ledger.billing.svc.cluster.local"))
    }

    @Test func theFingerprintTellsEncodingsApart() {
        #expect(Self.fingerprint([]) == "cbf29ce484222325")
        #expect(Self.fingerprint(Array("a".utf8)) == "af63dc4c8601ec8c")
        #expect(Self.fingerprint([1, 2]) != Self.fingerprint([2, 1]))
    }
}
