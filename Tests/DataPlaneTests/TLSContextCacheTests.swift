@testable import DataPlane
import NIOSSL
import SwiftProtobuf
import Testing
import XDS

/// The proxy's one TLS context cache: shared by clusters and filter chains with the same settings, kept
/// across pushes, rebuilt when a secret it uses changes, emptied of what the configuration no longer
/// uses; and the Istio series its contexts keep by peer.
@Suite struct TLSContextCacheTests {
    static let payments = "outbound|9080||payments.shop.svc.cluster.local"
    static let canary = "outbound|9080||payments-canary.shop.svc.cluster.local"
    static let other = "outbound|9443||orders.shop.svc.cluster.local"

    /// An istiod-shaped mTLS cluster: `default` and `ROOTCA` over SDS, the payments identity required.
    static func cluster(_ name: String, sni: String, alpn: [String] = ["istio-peer-exchange", "istio"]) throws -> BootstrapConfig.Cluster {
        var context = Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext()
        context.commonTlsContext = IstioShapes.commonContext(peers: [MeshFixture.payments], alpn: alpn)
        context.sni = sni
        return try XDSResourceDecoder.cluster(IstioShapes.cluster(name, port: 9080, tls: try IstioShapes.socket(context))).cluster
    }

    static func inboundListener() throws -> BootstrapConfig.Listener {
        try XDSResourceDecoder.listener(IstioShapes.listener(
            "virtualInbound", port: 15006, inbound: true, inspectsTLS: true,
            chains: [IstioShapes.chain("mtls", to: "inbound|9080||", transportProtocol: "tls", tls: try IstioShapes.downstreamSocket())]))
    }

    /// `default` for `identity` and `ROOTCA`, as SDS delivers them.
    static func secrets(_ ca: TestCertificateAuthority, identity: String = MeshFixture.frontend) throws -> [String: SecretStore.Content] {
        try SecretStore.decode([.packed(TestSDSServer.certificate("default", try ca.issue(identity)), as: .secret),
                                .packed(TestSDSServer.trust("ROOTCA", rootPEM: ca.rootPEM), as: .secret)])
    }

    static func runtime(clusters: [BootstrapConfig.Cluster], listeners: [BootstrapConfig.Listener] = []) -> ProxyRuntime {
        ProxyRuntime(options: ProxyOptions(),
                     config: BootstrapConfig(listeners: listeners, clusters: clusters, adminPort: nil, dynamicResources: nil, warnings: []))
    }

    /// The context a new connection to `cluster` gets now.
    static func context(of cluster: String, in runtime: ProxyRuntime) throws -> TLSContextCache.Built {
        let socket = try #require(runtime.configuration.clusters[cluster]?.config.transportSocket)
        return try runtime.contexts.context(for: socket.contextKey, secrets: runtime.secrets).get()
    }

    @Test func theKeyLeavesOutSNIButNotWhatTheContextIsBuiltFrom() throws {
        let payments = try #require(try Self.cluster(Self.payments, sni: "outbound_.9080_._.payments").transportSocket)
        let canary = try #require(try Self.cluster(Self.canary, sni: "outbound_.9080_._.payments-canary").transportSocket)
        let h2 = try #require(try Self.cluster(Self.other, sni: "outbound_.9080_._.payments", alpn: ["h2"]).transportSocket)
        #expect(payments != canary)
        #expect(payments.contextKey == canary.contextKey)
        #expect(payments.contextKey.hashValue == canary.contextKey.hashValue)
        #expect(payments.contextKey != h2.contextKey)
        let server = try #require(try Self.inboundListener().chains.first?.transportSocket)
        #expect(server.contextKey.role == .server(requireClientCertificate: true))
        #expect(server.contextKey != payments.contextKey)
    }

    @Test func clustersWithTheSameSettingsShareOneContextThatOutlivesAPush() throws {
        let ca = try TestCertificateAuthority()
        let runtime = Self.runtime(clusters: [try Self.cluster(Self.payments, sni: "outbound_.9080_._.payments"),
                                              try Self.cluster(Self.canary, sni: "outbound_.9080_._.payments-canary"),
                                              try Self.cluster(Self.other, sni: "outbound_.9443_._.orders", alpn: ["h2"])])
        runtime.secrets.update(try Self.secrets(ca), version: "v1")
        let payments = try Self.context(of: Self.payments, in: runtime)
        #expect(payments.localIdentity == MeshFixture.frontend)
        #expect(payments.subjectAltNames == [SubjectAltNameMatcher(kind: .uri, pattern: .exact(MeshFixture.payments))])
        #expect(try Self.context(of: Self.canary, in: runtime).context === payments.context)
        #expect(try Self.context(of: Self.payments, in: runtime).context === payments.context)
        // Another ALPN list is another context.
        #expect(try Self.context(of: Self.other, in: runtime).context !== payments.context)
        #expect(runtime.contexts.count == 2)

        // A push sends the same settings again, decoded anew: the context built before serves on.
        runtime.replaceClusters([try Self.cluster(Self.payments, sni: "outbound_.9080_._.payments"),
                                 try Self.cluster(Self.canary, sni: "outbound_.9080_._.payments-canary"),
                                 try Self.cluster(Self.other, sni: "outbound_.9443_._.orders", alpn: ["h2"])])
        #expect(try Self.context(of: Self.payments, in: runtime).context === payments.context)
        #expect(try Self.context(of: Self.canary, in: runtime).context === payments.context)
    }

    @Test func aChangedSecretRebuildsTheContextsThatUseItAndNoOtherUpdateDoes() throws {
        let ca = try TestCertificateAuthority()
        let runtime = Self.runtime(clusters: [try Self.cluster(Self.payments, sni: "outbound_.9080_._.payments"),
                                              try Self.cluster(Self.canary, sni: "outbound_.9080_._.payments-canary")])
        let secrets = try Self.secrets(ca)
        runtime.secrets.update(secrets, version: "v1")
        let before = try Self.context(of: Self.payments, in: runtime)

        // The same secrets sent again (an SDS reconnect), or a secret these contexts do not use: no rebuild.
        runtime.secrets.update(secrets, version: "v1")
        runtime.secrets.update(["unrelated": try #require(secrets["ROOTCA"])], version: "v2")
        #expect(try Self.context(of: Self.payments, in: runtime).context === before.context)

        // A rotated certificate: a new context, still one for both clusters.
        let rotated = try Self.secrets(ca)
        runtime.secrets.update(["default": try #require(rotated["default"])], version: "v3")
        let after = try Self.context(of: Self.payments, in: runtime)
        #expect(after.context !== before.context)
        #expect(try Self.context(of: Self.canary, in: runtime).context === after.context)
        #expect(runtime.contexts.count == 1)
    }

    @Test func contextsNoLongerInForceAreDropped() throws {
        let ca = try TestCertificateAuthority()
        let payments = try Self.cluster(Self.payments, sni: "outbound_.9080_._.payments")
        let h2 = try Self.cluster(Self.other, sni: "outbound_.9443_._.orders", alpn: ["h2"])
        let listener = try Self.inboundListener()
        let runtime = Self.runtime(clusters: [payments, h2], listeners: [listener])
        runtime.secrets.update(try Self.secrets(ca), version: "v1")
        let kept = try Self.context(of: Self.payments, in: runtime)
        _ = try Self.context(of: Self.other, in: runtime)
        let server = try #require(listener.chains.first?.transportSocket)
        _ = try runtime.contexts.context(for: server.contextKey, secrets: runtime.secrets).get()
        #expect(runtime.contexts.count == 3)

        runtime.replaceClusters([payments])
        #expect(runtime.contexts.count == 2)
        runtime.replaceListeners([])
        #expect(runtime.contexts.count == 1)
        #expect(try Self.context(of: Self.payments, in: runtime).context === kept.context)
        runtime.replaceClusters([])
        #expect(runtime.contexts.count == 0)
        #expect(runtime.configuration.contextKeys.isEmpty)
        #expect(runtime.secretReferences.isEmpty)
    }

    @Test func theReferencedSecretsAreGatheredWhenTheConfigurationChanges() throws {
        let runtime = Self.runtime(clusters: [try Self.cluster(Self.payments, sni: "outbound_.9080_._.payments")])
        let expected: Set = [SecretReference(name: "default", cluster: IstioShapes.sdsCluster),
                             SecretReference(name: "ROOTCA", cluster: IstioShapes.sdsCluster)]
        #expect(runtime.secretReferences == expected)
        runtime.replaceClusters([])
        #expect(runtime.secretReferences.isEmpty)
        runtime.replaceListeners([try Self.inboundListener()])
        #expect(runtime.secretReferences == expected)
    }

    @Test func connectionsArrivingTogetherGetOneContext() async throws {
        let ca = try TestCertificateAuthority()
        let runtime = Self.runtime(clusters: [try Self.cluster(Self.payments, sni: "outbound_.9080_._.payments")])
        runtime.secrets.update(try Self.secrets(ca), version: "v1")
        let contexts = try await withThrowingTaskGroup(of: ObjectIdentifier.self) { group in
            for _ in 0..<16 {
                group.addTask { ObjectIdentifier(try Self.context(of: Self.payments, in: runtime).context) }
            }
            return try await group.reduce(into: Set<ObjectIdentifier>()) { $0.insert($1) }
        }
        #expect(contexts.count == 1)
    }

    @Test func aMissingSecretIsReportedUntilItArrives() throws {
        let ca = try TestCertificateAuthority()
        let runtime = Self.runtime(clusters: [try Self.cluster(Self.payments, sni: "outbound_.9080_._.payments")])
        let socket = try #require(runtime.configuration.clusters[Self.payments]?.config.transportSocket)
        guard case .failure(let unavailable) = runtime.contexts.context(for: socket.contextKey, secrets: runtime.secrets) else {
            Issue.record("a context was built without its secrets")
            return
        }
        #expect(unavailable.description == "secret \"default\" has not arrived; secret \"ROOTCA\" has not arrived")
        runtime.secrets.update(try Self.secrets(ca), version: "v1")
        #expect(try Self.context(of: Self.payments, in: runtime).verifiesPeer)
    }

    @Test func aContextKeepsItsIstioSeriesByPeerAndTheyAreTheMetricsOwn() {
        let metrics = IstioTCPMetrics()
        let local = IstioPeerSeries(local: MeshFixture.frontend, metrics: metrics)
        let outbound = local.series(.source, peer: MeshFixture.payments, mutualTLS: true)
        #expect(outbound === metrics.series(.source, source: MeshFixture.frontend, destination: MeshFixture.payments, mutualTLS: true))
        #expect(local.series(.source, peer: MeshFixture.payments, mutualTLS: true) === outbound)
        let inbound = local.series(.destination, peer: MeshFixture.orders, mutualTLS: true)
        #expect(inbound.labels == IstioTCPMetrics.Labels(reporter: .destination, sourcePrincipal: MeshFixture.orders,
                                                         destinationPrincipal: MeshFixture.frontend, mutualTLS: true))
        #expect(local.series(.source, peer: nil, mutualTLS: false).labels.sourcePrincipal == MeshFixture.frontend)
        // TLS without identities on either side counts as plaintext, as before.
        #expect(IstioPeerSeries(local: nil, metrics: metrics).series(.destination, peer: nil, mutualTLS: false) === metrics.plaintext(.destination))

        outbound.opened.increment()
        #expect(metrics.prometheusText.contains(
            #"istio_tcp_connections_opened_total{reporter="source",source_principal="spiffe://cluster.local/ns/shop/sa/frontend","#
            + #"destination_principal="spiffe://cluster.local/ns/shop/sa/payments",connection_security_policy="mutual_tls"} 1"#))
    }
}
