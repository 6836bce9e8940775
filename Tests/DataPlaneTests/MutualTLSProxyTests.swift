@testable import DataPlane
import Logging
import NIOCore
import Testing
import XDS

/// The proxy in this process on loopback, configured as istiod configures Envoy, its certificates from
/// a real SDS server, talking real TLS to real sockets.
@Suite(.serialized) struct MutualTLSProxyTests {
    static let paymentsCluster = "outbound|9080||payments.shop.svc.cluster.local"

    /// `virtualOutbound` on `port`, routing everything to the payments cluster, which speaks mTLS to
    /// `upstreamPort` and accepts only `peers`.
    func outbound(_ mesh: MeshFixture, port: Int, upstreamPort: Int, peers: [String] = [MeshFixture.payments]) async throws -> Proxy {
        try await mesh.startProxy(
            listeners: [IstioShapes.listener("virtualOutbound", port: port, inbound: false, inspectsTLS: false,
                                             chains: [IstioShapes.chain("payments", to: Self.paymentsCluster)])],
            clusters: [IstioShapes.cluster(Self.paymentsCluster, port: upstreamPort, tls: try IstioShapes.upstreamSocket(peers: peers))])
    }

    @Test func outboundMutualTLSPresentsTheWorkloadCertificateAndVerifiesTheServersSPIFFEID() async throws {
        let mesh = try await MeshFixture()
        defer { mesh.tearDown() }
        _ = try mesh.publishSecrets(version: "v1")
        let payments = try await mesh.echoServer(tag: "payments:", tls: try mesh.ca.issue(MeshFixture.payments))
        let port = try freeLoopbackPort()
        let proxy = try await outbound(mesh, port: port, upstreamPort: payments.port)
        #expect(proxy.state == .live)

        let client = try await mesh.client(port: port)
        try await client.send("hello")
        #expect(await client.read(14) == "payments:hello")
        #expect(payments.seen.clientIdentities == [MeshFixture.frontend])
        let tls = mesh.runtime.stats.cluster(Self.paymentsCluster).tls
        #expect(tls.handshakes.value == 1)
        #expect(tls.connectionErrors.value == 0)
        #expect(proxy.statsText.contains("cluster.\(Self.paymentsCluster).ssl.handshake: 1\n"))
        #expect(proxy.prometheusText.contains(
            #"istio_tcp_connections_opened_total{reporter="source",source_principal="spiffe://cluster.local/ns/shop/sa/frontend","#
            + #"destination_principal="spiffe://cluster.local/ns/shop/sa/payments",connection_security_policy="mutual_tls"} 1"#))
        #expect(proxy.prometheusText.contains("envoy_cluster_ssl_handshake{envoy_cluster_name=\"\(Self.paymentsCluster)\"} 1"))
        await client.close()
        #expect(await mesh.eventually { proxy.prometheusText.contains(#"istio_tcp_connections_closed_total{reporter="source","#) })

        // The dump shows the transport socket as received, and the secrets without their key.
        let dump = proxy.configDump
        #expect(dump.contains("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"))
        #expect(dump.contains("outbound_.9080_._.payments.shop.svc.cluster.local"))
        #expect(dump.contains("\"tls_certificate_sds_secret_configs\""))
        #expect(dump.contains("type.googleapis.com/envoy.admin.v3.SecretsConfigDump"))
        #expect(dump.contains("\"expiration_time\""))
        #expect(dump.contains("[redacted]"))
        #expect(!dump.contains("PRIVATE KEY"))
    }

    @Test func aServerWithAnotherIdentityIsRefusedBeforeAnyDataIsRelayed() async throws {
        let mesh = try await MeshFixture()
        defer { mesh.tearDown() }
        _ = try mesh.publishSecrets(version: "v1")
        let impostor = try await mesh.echoServer(tag: "impostor:", tls: try mesh.ca.issue("spiffe://cluster.local/ns/shop/sa/impostor"))
        let port = try freeLoopbackPort()
        _ = try await outbound(mesh, port: port, upstreamPort: impostor.port)

        let client = try await mesh.client(port: port)
        // The proxy may have closed first: a refused send is refusal too.
        try? await client.send("secret")
        #expect(await client.closed())
        #expect(await client.read(1, within: 0.2) == "")
        #expect(impostor.seen.bytes == 0)
        let tls = mesh.runtime.stats.cluster(Self.paymentsCluster).tls
        #expect(await mesh.eventually { tls.failedSubjectAltNames.value == 1 })
        #expect(tls.connectionErrors.value == 1)
        #expect(tls.handshakes.value == 0)
    }

    @Test func aServerFromAnUntrustedRootIsRefused() async throws {
        let mesh = try await MeshFixture()
        defer { mesh.tearDown() }
        _ = try mesh.publishSecrets(version: "v1")
        // The same SPIFFE ID, signed by another CA.
        let otherCA = try TestCertificateAuthority()
        let stranger = try await TestEchoServer.start(
            group: mesh.group, tag: "stranger:",
            tls: try otherCA.issue(MeshFixture.payments).context(server: true, roots: [try mesh.ca.root]))
        defer { stranger.close() }
        let port = try freeLoopbackPort()
        _ = try await outbound(mesh, port: port, upstreamPort: stranger.port)

        let client = try await mesh.client(port: port)
        // The proxy may have closed first: a refused send is refusal too.
        try? await client.send("secret")
        #expect(await client.closed())
        #expect(stranger.seen.bytes == 0)
        let tls = mesh.runtime.stats.cluster(Self.paymentsCluster).tls
        #expect(await mesh.eventually { tls.connectionErrors.value == 1 })
        #expect(tls.handshakes.value == 0)
        #expect(tls.failedSubjectAltNames.value == 0)
    }

    /// `virtualInbound` with tls_inspector: an mTLS chain for Istio's ALPN, and (PERMISSIVE) a plaintext one.
    func inbound(_ mesh: MeshFixture, port: Int, mutual: TestEchoServer, plain: TestEchoServer?,
                 configure: (inout ProxyOptions) -> Void = { _ in }) async throws -> Proxy {
        var chains = [try IstioShapes.chain("inbound-mtls", to: "inbound|9080||", transportProtocol: "tls",
                                            alpn: ["istio-peer-exchange", "istio"], tls: try IstioShapes.downstreamSocket())]
        var clusters = [IstioShapes.cluster("inbound|9080||", port: mutual.port)]
        if let plain {
            chains.append(try IstioShapes.chain("inbound-plaintext", to: "inbound-plaintext", transportProtocol: "raw_buffer"))
            clusters.append(IstioShapes.cluster("inbound-plaintext", port: plain.port))
        }
        return try await mesh.startProxy(
            listeners: [IstioShapes.listener("virtualInbound", port: port, inbound: true, inspectsTLS: true, chains: chains)],
            clusters: clusters, configure: configure)
    }

    @Test func permissiveInboundTerminatesMutualTLSAndAcceptsPlaintextOnTheirOwnChains() async throws {
        let mesh = try await MeshFixture()
        defer { mesh.tearDown() }
        _ = try mesh.publishSecrets(version: "v1", identity: MeshFixture.payments)
        let mutual = try await mesh.echoServer(tag: "mtls:")
        let plain = try await mesh.echoServer(tag: "plain:")
        let port = try freeLoopbackPort()
        let proxy = try await inbound(mesh, port: port, mutual: mutual, plain: plain)

        let orders = try mesh.ca.issue(MeshFixture.orders)
        let secure = try await mesh.client(port: port, credentials: orders, alpn: ["istio-peer-exchange", "istio"])
        try await secure.send("hello")
        #expect(await secure.read(10) == "mtls:hello")
        let plaintext = try await mesh.client(port: port)
        // The proxy may have closed first: a refused send is refusal too.
        try? await plaintext.send("hello")
        #expect(await plaintext.read(11) == "plain:hello")
        // The application saw plaintext in both cases.
        #expect(mutual.seen.bytes == 5 && plain.seen.bytes == 5)

        let listener = mesh.runtime.stats.listener("0.0.0.0_\(port)")
        #expect(listener.tls.handshakes.value == 1)
        #expect(proxy.statsText.contains("listener.0.0.0.0_\(port).ssl.handshake: 1\n"))
        let prometheus = proxy.prometheusText
        #expect(prometheus.contains(
            #"istio_tcp_connections_opened_total{reporter="destination",source_principal="spiffe://cluster.local/ns/shop/sa/orders","#
            + #"destination_principal="spiffe://cluster.local/ns/shop/sa/payments",connection_security_policy="mutual_tls"} 1"#))
        #expect(prometheus.contains(
            #"istio_tcp_connections_opened_total{reporter="destination",source_principal="unknown",destination_principal="unknown",connection_security_policy="none"} 1"#))
        await secure.close()
        await plaintext.close()
    }

    @Test func aClientThatSendsNothingIsPlaintextOnceTheListenerFiltersTimeoutPasses() async throws {
        let mesh = try await MeshFixture()
        defer { mesh.tearDown() }
        _ = try mesh.publishSecrets(version: "v1", identity: MeshFixture.payments)
        let mutual = try await mesh.echoServer(tag: "mtls:")
        let plain = try await mesh.echoServer(tag: "plain:")
        let port = try freeLoopbackPort()
        _ = try await inbound(mesh, port: port, mutual: mutual, plain: plain) { $0.listenerFiltersTimeout = .milliseconds(300) }

        // A server-first protocol: the client waits. The proxy waits for the first bytes, then gives up.
        let clock = ContinuousClock()
        let connecting = clock.now
        let waiting = try await mesh.client(port: port)
        #expect(await mesh.eventually { plain.seen.connections == 1 })
        // Counted from before the connect, so never less than the proxy's own wait for the first bytes.
        #expect(connecting.duration(to: clock.now) >= .milliseconds(300), "plaintext only once the listener filters' timeout passed")
        try await waiting.send("late")
        #expect(await waiting.read(10) == "plain:late")
        #expect(mutual.seen.connections == 0)
        await waiting.close()
    }

    @Test func strictInboundRefusesPlaintextAndClientsWithoutCertificates() async throws {
        let mesh = try await MeshFixture()
        defer { mesh.tearDown() }
        _ = try mesh.publishSecrets(version: "v1", identity: MeshFixture.payments)
        let mutual = try await mesh.echoServer(tag: "mtls:")
        let port = try freeLoopbackPort()
        _ = try await inbound(mesh, port: port, mutual: mutual, plain: nil)
        let listener = mesh.runtime.stats.listener("0.0.0.0_\(port)")

        let plaintext = try await mesh.client(port: port)
        // The proxy may have closed first: a refused send is refusal too.
        try? await plaintext.send("hello")
        #expect(await plaintext.closed())
        #expect(listener.noFilterChainMatch.value == 1)

        // TLS with Istio's ALPN but no client certificate: the handshake fails.
        let anonymous = try await TestClient.connect(
            group: mesh.group, port: port,
            tls: try mesh.ca.issue(MeshFixture.orders).context(server: false, roots: [try mesh.ca.root], alpn: ["istio"], presentsCertificate: false))
        // The proxy may have closed first: a refused send is refusal too.
        try? await anonymous.send("hello")
        #expect(await anonymous.closed())
        #expect(await mesh.eventually { listener.tls.connectionErrors.value == 1 })
        #expect(mutual.seen.bytes == 0)

        let secure = try await mesh.client(port: port, credentials: try mesh.ca.issue(MeshFixture.orders), alpn: ["istio"])
        try await secure.send("hello")
        #expect(await secure.read(10) == "mtls:hello")
        await secure.close()
    }

    @Test func rotatedCertificatesServeNewConnectionsWhileOpenOnesKeepWorking() async throws {
        let mesh = try await MeshFixture()
        defer { mesh.tearDown() }
        let first = try mesh.publishSecrets(version: "v1")
        let payments = try await mesh.echoServer(tag: "payments:", tls: try mesh.ca.issue(MeshFixture.payments))
        let port = try freeLoopbackPort()
        _ = try await outbound(mesh, port: port, upstreamPort: payments.port)

        let old = try await mesh.client(port: port)
        try await old.send("one")
        #expect(await old.read(12) == "payments:one")
        #expect(payments.seen.clientSerials == [first.serial])

        let second = try mesh.publishSecrets(version: "v2")
        #expect(await mesh.eventually { mesh.runtime.secrets["default"]?.version == "v2" })
        let new = try await mesh.client(port: port)
        try await new.send("two")
        #expect(await new.read(12) == "payments:two")
        #expect(payments.seen.clientSerials == [first.serial, second.serial])

        // The connection opened before the rotation is untouched.
        old.clear()
        try await old.send("three")
        #expect(await old.read(5) == "three")

        // A secret that is not PEM is NACKed with the reason; the rotated certificate stays in force.
        var broken = TestSDSServer.certificate("default", second)
        broken.tlsCertificate.certificateChain.inlineString = "not a certificate"
        try mesh.sds.publish(version: "v3", [broken, TestSDSServer.trust("ROOTCA", rootPEM: mesh.ca.rootPEM)])
        #expect(await mesh.eventually { mesh.sds.server.stats.nacks.load(ordering: .relaxed) >= 1 })
        #expect(mesh.sds.server.stats.lastRejection?.hasPrefix("secret \"default\".tls_certificate.certificate_chain: is not PEM certificates") == true)
        #expect(mesh.runtime.secrets["default"]?.version == "v2")
        let third = try await mesh.client(port: port)
        try await third.send("four")
        #expect(await third.read(13) == "payments:four")
        for client in [old, new, third] { await client.close() }
    }

    @Test func clustersFromTheControlPlaneOpenTheSDSStreamAndSecretsFromUnknownClustersAreRefused() async throws {
        let mesh = try await MeshFixture()
        defer { mesh.tearDown() }
        _ = try mesh.publishSecrets(version: "v1")
        let bootstrap = BootstrapConfig(listeners: [], clusters: [try mesh.sdsClusterConfig], adminPort: nil, dynamicResources: nil, warnings: [])
        var options = ProxyOptions()
        options.bootstrap = bootstrap
        options.controlPlaneBackoff = .init(initial: .milliseconds(50), maximum: .milliseconds(500))
        let proxy = Proxy(options: options)
        mesh.adopt(proxy)
        let resources = DynamicResources(proxy: proxy, bootstrap: bootstrap, logger: Logger(label: "test"))
        let ads = ADSClient(server: .unixSocket(path: "/nonexistent/xds.sock"), node: .init(), logger: Logger(label: "test"))
        func clusters(_ version: String, sdsCluster: String) throws -> DiscoveryResponse {
            var response = DiscoveryResponse()
            response.versionInfo = version
            response.typeURL = XDSResourceType.cluster.typeURL
            response.resources = [try .packed(IstioShapes.cluster(Self.paymentsCluster, port: 9080,
                                                                  tls: try IstioShapes.upstreamSocket(peers: [MeshFixture.payments], sdsCluster: sdsCluster)),
                                              as: .cluster)]
            return response
        }
        #expect(await resources.apply(try clusters("1", sdsCluster: "elsewhere"), type: .cluster, client: ads) == .reject(
            "cluster \"\(Self.paymentsCluster)\".transport_socket: SDS secret \"default\" comes from cluster \"elsewhere\", which is not a static cluster of the bootstrap with an endpoint"))
        #expect(proxy.runtime.secrets["default"] == nil)
        #expect(await resources.apply(try clusters("2", sdsCluster: IstioShapes.sdsCluster), type: .cluster, client: ads) == .accept)
        #expect(await mesh.eventually { proxy.runtime.secrets["default"] != nil && proxy.runtime.secrets["ROOTCA"] != nil })
        #expect(proxy.runtime.secrets["default"]?.version == "v1")
    }
}
