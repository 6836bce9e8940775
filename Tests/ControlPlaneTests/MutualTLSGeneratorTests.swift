@testable import ControlPlane
@testable import DataPlane
import SwiftProtobuf
import Testing
import XDS

/// Mutual TLS in the generated xDS: `virtualInbound` chains by PeerAuthentication, the transport
/// socket of outbound clusters by DestinationRule and auto mTLS, and the versions a change moves.
@Suite struct MutualTLSGeneratorTests {
    typealias PA = MutualTLSDocuments
    static let v1 = "198.51.100.10"
    static let v2 = "198.51.100.99"
    static let host = "payments.shop.svc.cluster.local"

    func resources(_ documents: [String], trustDomain: String = "cluster.local") throws -> MeshResources {
        let reading = MeshConfigReader.read([("mesh.yaml", documents.joined(separator: "\n---\n"))])
        let config = try #require(reading.config, "\(reading.problems)")
        return try ProxyConfigGenerator(trustDomain: trustDomain).resources(for: config)
    }

    func inbound(_ resources: MeshResources, ip: String, namespace: String = "shop") throws -> Envoy_Config_Listener_V3_Listener {
        let listener = try ProxyConfigGenerator.inboundListener(resources.inbound(ip: ip, namespace: namespace), transparent: false)
        return try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](listener.resource.value))
    }

    /// Each chain as `PORT/TRANSPORT` (`*` for any port), checking on the way that exactly the `tls`
    /// chains terminate TLS and that each goes to the cluster its port calls for.
    func chains(_ listener: Envoy_Config_Listener_V3_Listener) throws -> [String] {
        try listener.filterChains.map { chain in
            let match = chain.filterChainMatch
            let port = match.hasDestinationPort ? String(match.destinationPort.value) : "*"
            #expect(chain.hasTransportSocket == (match.transportProtocol == "tls"), "\(chain.name)")
            let proxy = try Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy(unpackingAny: chain.filters[0].typedConfig)
            let declared = chain.name.hasPrefix("inbound|")
            #expect(proxy.cluster == (declared ? "inbound|\(port)||" : "InboundPassthroughCluster"), "\(chain.name)")
            #expect(chain.name == "\(proxy.statPrefix)-\(match.transportProtocol)")
            return "\(port)/\(match.transportProtocol)"
        }
    }

    func cluster(_ resources: MeshResources, _ name: String) throws -> Envoy_Config_Cluster_V3_Cluster {
        let resource = try #require(resources.clusters.first { $0.name == name }, "no cluster \(name)")
        return try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](resource.resource.value))
    }

    func upstreamTLS(_ cluster: Envoy_Config_Cluster_V3_Cluster) throws -> Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext {
        #expect(cluster.transportSocket.name == "envoy.transport_sockets.tls")
        return try Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext(unpackingAny: cluster.transportSocket.typedConfig)
    }

    /// An SDS secret as Istio's sidecars fetch it: by name, from the agent's `sds-grpc` cluster.
    func expectSDS(_ secret: Envoy_Extensions_TransportSockets_Tls_V3_SdsSecretConfig, _ name: String) {
        #expect(secret.name == name)
        let source = secret.sdsConfig.apiConfigSource
        #expect(source.apiType == .grpc)
        #expect(source.grpcServices.map(\.envoyGrpc.clusterName) == ["sds-grpc"])
        #expect(source.transportApiVersion == .v3)
        #expect(secret.sdsConfig.resourceApiVersion == .v3)
    }

    // MARK: Inbound

    @Test func strictAcceptsMutualTLSOnlyPermissiveBothAndDisablePlaintextOnly() throws {
        let expected: [(String?, [String])] = [
            ("STRICT", ["8080/tls", "*/tls"]),
            ("PERMISSIVE", ["8080/tls", "8080/raw_buffer", "*/tls", "*/raw_buffer"]),
            ("DISABLE", ["8080/raw_buffer", "*/raw_buffer"]),
            // No policy at all: Istio's default, PERMISSIVE.
            (nil, ["8080/tls", "8080/raw_buffer", "*/tls", "*/raw_buffer"]),
        ]
        for (mode, chains) in expected {
            let policies = mode.map { [PA.peerAuthentication("default", namespace: "istio-system", mode: $0)] } ?? []
            let listener = try inbound(try resources(PA.mesh() + policies), ip: Self.v1)
            #expect(try self.chains(listener) == chains, "\(mode ?? "no policy")")
            #expect(listener.listenerFilters.map(\.name) == ["envoy.filters.listener.tls_inspector"])
            #expect(listener.listenerFilters.first?.typedConfig.typeURL == "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector")
            // No catch-all: under STRICT a plaintext connection matches no chain and is closed.
            #expect(!listener.hasDefaultFilterChain)
        }
    }

    @Test func theInboundTLSChainTerminatesIstioMutualTLS() throws {
        let listener = try inbound(try resources(PA.mesh() + [PA.peerAuthentication("default", namespace: "istio-system", mode: "STRICT")]), ip: Self.v1)
        let chain = try #require(listener.filterChains.first)
        #expect(chain.name == "inbound|8080||-tls")
        #expect(chain.filterChainMatch.destinationPort.value == 8080)
        #expect(chain.filterChainMatch.transportProtocol == "tls")
        #expect(chain.transportSocket.name == "envoy.transport_sockets.tls")
        let context = try Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext(unpackingAny: chain.transportSocket.typedConfig)
        #expect(context.requireClientCertificate.value)
        let common = context.commonTlsContext
        #expect(common.tlsCertificateSdsSecretConfigs.count == 1)
        expectSDS(common.tlsCertificateSdsSecretConfigs[0], "default")
        expectSDS(common.combinedValidationContext.validationContextSdsSecretConfig, "ROOTCA")
        #expect(common.combinedValidationContext.hasDefaultValidationContext)
        #expect(common.combinedValidationContext.defaultValidationContext.matchTypedSubjectAltNames.isEmpty)
        #expect(common.alpnProtocols == ["istio-peer-exchange", "h2", "http/1.1"])
    }

    @Test func aWorkloadPolicyOverridesItsNamespacesWhichOverridesTheMeshs() throws {
        let resources = try resources(PA.mesh() + [
            PA.peerAuthentication("default", namespace: "istio-system", mode: "STRICT"),
            PA.peerAuthentication("default", namespace: "shop", mode: "DISABLE"),
            PA.peerAuthentication("v1", namespace: "shop", mode: "PERMISSIVE", selector: "{version: v1}"),
        ])
        #expect(try chains(inbound(resources, ip: Self.v1)) == ["8080/tls", "8080/raw_buffer", "*/tls", "*/raw_buffer"])
        #expect(try chains(inbound(resources, ip: Self.v2)) == ["8080/raw_buffer", "*/raw_buffer"])
        // Proxies the configuration does not describe get their namespace's policy, else the mesh's.
        #expect(try chains(inbound(resources, ip: "192.0.2.1", namespace: "shop")) == ["*/raw_buffer"])
        #expect(try chains(inbound(resources, ip: "192.0.2.1", namespace: "billing")) == ["*/tls"])
        // A policy in another namespace does not select shop's workloads, whatever its labels.
        let elsewhere = try self.resources(PA.mesh() + [PA.peerAuthentication("v1", namespace: "billing", mode: "STRICT", selector: "{version: v1}")])
        #expect(try chains(inbound(elsewhere, ip: Self.v1)) == ["8080/tls", "8080/raw_buffer", "*/tls", "*/raw_buffer"])
    }

    @Test func unsetInheritsAndPortLevelModesOverrideOnePort() throws {
        let resources = try resources(PA.mesh() + [
            PA.peerAuthentication("default", namespace: "shop", mode: "STRICT"),
            // UNSET: the workload keeps the namespace's STRICT, except on the ports named.
            PA.peerAuthentication("v1", namespace: "shop", mode: "UNSET", selector: "{version: v1}",
                                  portLevel: "{8080: {mode: PERMISSIVE}, 9901: {mode: DISABLE}}"),
        ])
        let listener = try inbound(resources, ip: Self.v1)
        // 9901 is no service's port: it passes through, in plaintext, on its own chain.
        #expect(try chains(listener) == ["8080/tls", "8080/raw_buffer", "9901/raw_buffer", "*/tls"])
        #expect(listener.filterChains.map(\.name) == ["inbound|8080||-tls", "inbound|8080||-raw_buffer",
                                                      "InboundPassthroughFilterChain-9901-raw_buffer", "InboundPassthroughFilterChain-tls"])
        #expect(try chains(inbound(resources, ip: Self.v2)) == ["8080/tls", "*/tls"])
    }

    // MARK: Outbound

    @Test func anIstioMutualClusterVerifiesItsEndpointsIdentitiesSortedWithIstiosSNI() throws {
        let resources = try resources(PA.mesh(tls: "ISTIO_MUTUAL", sidecars: false))
        let all = try upstreamTLS(cluster(resources, "outbound|9080||\(Self.host)"))
        #expect(all.sni == "outbound_.9080_._.\(Self.host)")
        // v1 names its service account, v2 has the default one; listed sorted, whatever the endpoint order.
        #expect(all.commonTlsContext.combinedValidationContext.defaultValidationContext.matchTypedSubjectAltNames.map {
            "\($0.sanType) \($0.matcher.exact)"
        } == ["uri spiffe://cluster.local/ns/shop/sa/default", "uri spiffe://cluster.local/ns/shop/sa/payments-v1"])
        #expect(all.commonTlsContext.tlsCertificateSdsSecretConfigs.count == 1)
        expectSDS(all.commonTlsContext.tlsCertificateSdsSecretConfigs[0], "default")
        expectSDS(all.commonTlsContext.combinedValidationContext.validationContextSdsSecretConfig, "ROOTCA")
        #expect(all.commonTlsContext.alpnProtocols == ["istio-peer-exchange", "istio"])

        let v1 = try upstreamTLS(cluster(resources, "outbound|9080|v1|\(Self.host)"))
        #expect(v1.sni == "outbound_.9080_.v1_.\(Self.host)")
        #expect(v1.commonTlsContext.combinedValidationContext.defaultValidationContext.matchTypedSubjectAltNames.map(\.matcher.exact)
            == ["spiffe://cluster.local/ns/shop/sa/payments-v1"])
        // The pass-through and inbound clusters stay plaintext.
        for name in ["PassthroughCluster", "InboundPassthroughCluster", "inbound|8080||"] {
            #expect(try !cluster(resources, name).hasTransportSocket, "\(name)")
        }
    }

    @Test func theTrustDomainIsTheGeneratorsAndAnInvalidOneIsRefused() throws {
        let resources = try resources(PA.mesh(tls: "ISTIO_MUTUAL"), trustDomain: "Example.ORG")
        let context = try upstreamTLS(cluster(resources, "outbound|9080|v2|\(Self.host)"))
        #expect(context.commonTlsContext.combinedValidationContext.defaultValidationContext.matchTypedSubjectAltNames.map(\.matcher.exact)
            == ["spiffe://example.org/ns/shop/sa/default"])
        // A space or a slash could not stand in a SPIFFE ID: refused as a bad trust domain, the value named.
        for invalid in ["cluster local", "cluster/local"] {
            do {
                _ = try ProxyConfigGenerator(trustDomain: invalid)
                Issue.record("the trust domain \"\(invalid)\" was accepted")
            } catch {
                #expect(error == .badName("trust domain", invalid))
                #expect("\(error)".contains("\"\(invalid)\""))
            }
        }
    }

    @Test func aSubsetOverridesTheRulesTLSModeAndDisableMeansPlaintextEvenToSidecars() throws {
        let resources = try resources(PA.mesh(tls: "ISTIO_MUTUAL", v2TLS: "DISABLE"))
        #expect(try cluster(resources, "outbound|9080||\(Self.host)").hasTransportSocket)
        #expect(try cluster(resources, "outbound|9080|v1|\(Self.host)").hasTransportSocket)
        #expect(try !cluster(resources, "outbound|9080|v2|\(Self.host)").hasTransportSocket)
        let disabled = try self.resources(PA.mesh(tls: "DISABLE"))
        for subset in ["", "v1", "v2"] {
            #expect(try !cluster(disabled, "outbound|9080|\(subset)|\(Self.host)").hasTransportSocket, "\(subset)")
        }
    }

    @Test func autoMutualTLSGoesToClustersWhoseEndpointsAllHaveSidecarsThatAcceptIt() throws {
        func secured(_ documents: [String]) throws -> [String] {
            let resources = try resources(documents)
            return try ["", "v1", "v2"].filter { try cluster(resources, "outbound|9080|\($0)|\(Self.host)").hasTransportSocket }
        }
        #expect(try secured(PA.mesh()) == ["", "v1", "v2"])
        #expect(try secured(PA.mesh(sidecars: false)).isEmpty)
        // v2 without a sidecar: its subset, and the service cluster that includes it, stay plaintext.
        let mixed = [Documents.serviceEntry,
                     PA.workload("payments-v1", Self.v1, "v1"), PA.workload("payments-v2", Self.v2, "v2", sidecar: false),
                     PA.destinationRule()]
        #expect(try secured(mixed) == ["v1"])
        // A sidecar whose policy disables mTLS on the endpoint's port gets plaintext, as in Istio.
        #expect(try secured(PA.mesh() + [PA.peerAuthentication("v1", namespace: "shop", mode: "STRICT", selector: "{version: v1}",
                                                               portLevel: "{8080: {mode: DISABLE}}")]) == ["v2"])
        #expect(try secured(PA.mesh() + [PA.peerAuthentication("default", namespace: "istio-system", mode: "DISABLE")]).isEmpty)
    }

    // MARK: Consumers

    @Test func theProxysDecoderAcceptsWhatTheGeneratorMakes() throws {
        for mode in ["STRICT", "PERMISSIVE", "DISABLE"] {
            let resources = try resources(PA.mesh(tls: "ISTIO_MUTUAL", v2TLS: "DISABLE")
                + [PA.peerAuthentication("default", namespace: "istio-system", mode: mode),
                   PA.peerAuthentication("v1", namespace: "shop", mode: nil, selector: "{version: v1}", portLevel: "{9901: {mode: STRICT}}")])
            let inbound = try ProxyConfigGenerator.inboundListener(resources.inbound(ip: Self.v1, namespace: "shop"), transparent: true)
            let listeners = try XDSResourceDecoder.listeners([resources.outboundListener.resource, inbound.resource])
            #expect(listeners.map(\.name) == ["virtualOutbound", "virtualInbound"])
            let clusters = try XDSResourceDecoder.clusters(resources.clusters.map(\.resource))
            #expect(clusters.count == resources.clusters.count)
        }
    }

    @Test func aPeerAuthenticationChangeMovesTheListenerVersionOnly() throws {
        let store = MeshSnapshotStore()
        let base = PA.mesh(sidecars: false)
        #expect(store.update(try resources(base)) == [.cluster, .endpoint, .listener, .route, .nameTable])
        var node = Envoy_Config_Core_V3_Node()
        node.id = "sidecar~\(Self.v1)~payments-v1.shop~shop.svc.cluster.local"
        func inboundChains() throws -> [String] {
            let resource = try #require(store.snapshot(for: node).types[.listener]?.resources.last).resource
            return try chains(Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](resource.value)))
        }
        #expect(try inboundChains() == ["8080/tls", "8080/raw_buffer", "*/tls", "*/raw_buffer"])

        let strict = base + [PA.peerAuthentication("default", namespace: "istio-system", mode: "STRICT")]
        #expect(store.update(try resources(strict)) == [.listener])
        #expect(try inboundChains() == ["8080/tls", "*/tls"])
        #expect(store.snapshot(for: node).types[.listener]?.version == "2")
        #expect(store.snapshot(for: node).types[.cluster]?.version == "1")
        // Unrelated kinds change nothing; a namespace with no workload still moves listeners, since a
        // proxy outside the configuration in that namespace gets its policy.
        let ignored = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: shop}\nspec: {}"
        #expect(store.update(try resources(strict + [ignored])).isEmpty)
        let billing = strict + [PA.peerAuthentication("default", namespace: "billing", mode: "DISABLE")]
        #expect(store.update(try resources(billing)) == [.listener])
        node.id = "sidecar~192.0.2.1~client.billing~billing.svc.cluster.local"
        #expect(try inboundChains() == ["*/raw_buffer"])
        // A DestinationRule's TLS moves the clusters only.
        #expect(store.update(try resources(PA.mesh(tls: "ISTIO_MUTUAL", sidecars: false)
            + [PA.peerAuthentication("default", namespace: "istio-system", mode: "STRICT"),
               PA.peerAuthentication("default", namespace: "billing", mode: "DISABLE")])) == [.cluster])
    }
}
