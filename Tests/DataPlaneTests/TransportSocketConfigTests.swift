import Configuration
@testable import DataPlane
import FoundationEssentials
import Logging
import NIOCore
import SwiftProtobuf
import Testing
import XDS

/// Reading TLS transport sockets from xDS and from a bootstrap, SDS secrets, and the TLS contexts built from them.
@Suite struct TransportSocketConfigTests {
    static let inbound = "listener \"virtualInbound\".filter_chains[0].transport_socket"

    func inboundListener(_ socket: Envoy_Config_Core_V3_TransportSocket) throws -> Google_Protobuf_Any {
        try .packed(IstioShapes.listener("virtualInbound", port: 15006, inbound: true, inspectsTLS: true,
                                         chains: [IstioShapes.chain("mtls", to: "inbound|9080||", transportProtocol: "tls", tls: socket)]),
                    as: .listener)
    }

    func refusal(_ resource: Google_Protobuf_Any) -> String? {
        do {
            _ = try XDSResourceDecoder.listeners([resource])
            return nil
        } catch {
            return error.description
        }
    }

    @Test func istiosUpstreamContextNamesItsSDSSecretsPeerSNIAndALPN() throws {
        let cluster = IstioShapes.cluster("outbound|9080||payments.shop.svc.cluster.local", port: 9080,
                                          tls: try IstioShapes.upstreamSocket(peers: [MeshFixture.payments]))
        let socket = try #require(try XDSResourceDecoder.cluster(cluster).cluster.transportSocket)
        #expect(socket.role == .client(serverName: "outbound_.9080_._.payments.shop.svc.cluster.local"))
        #expect(socket.certificate == .secret(SecretReference(name: "default", cluster: "sds-grpc")))
        #expect(socket.trust == .secret(SecretReference(name: "ROOTCA", cluster: "sds-grpc")))
        #expect(socket.subjectAltNames == [SubjectAltNameMatcher(kind: .uri, pattern: .exact(MeshFixture.payments))])
        #expect(socket.applicationProtocols == ["istio-peer-exchange", "istio"])
        #expect(socket.dump["typed_config"]?["sni"] == .string("outbound_.9080_._.payments.shop.svc.cluster.local"))

        let listener = try XDSResourceDecoder.listener(
            IstioShapes.listener("virtualInbound", port: 15006, inbound: true, inspectsTLS: true,
                                 chains: [IstioShapes.chain("mtls", to: "inbound|9080||", transportProtocol: "tls", tls: try IstioShapes.downstreamSocket())]))
        #expect(listener.inspectsTLS)
        #expect(listener.listenerFilters == ["envoy.filters.listener.original_dst", "envoy.filters.listener.tls_inspector"])
        #expect(listener.chains.first?.transportSocket?.role == .server(requireClientCertificate: true))
    }

    @Test func aTLSContextWithoutACertificateIsRefusedNamingTheField() throws {
        var context = Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext()
        context.commonTlsContext = IstioShapes.commonContext()
        context.commonTlsContext.tlsCertificateSdsSecretConfigs = []
        #expect(refusal(try inboundListener(try IstioShapes.socket(context)))
            == "\(Self.inbound).typed_config.common_tls_context: needs a certificate to present: tls_certificates or tls_certificate_sds_secret_configs")
    }

    /// istiod's gateway credentials: `sds_config: {ads: {}}`, fetched on the ADS stream itself.
    @Test func aSecretOverADSIsTakenAsTheADSStreams() throws {
        var overADS = Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext()
        overADS.commonTlsContext = IstioShapes.commonContext()
        overADS.commonTlsContext.tlsCertificateSdsSecretConfigs[0].sdsConfig.ads = .init()
        let socket = try #require(try TransportSocketConfig.downstream(try IstioShapes.socket(overADS), path: "socket"))
        #expect(socket.certificate == .secret(SecretReference(name: "default", cluster: nil)))
    }

    @Test func otherBadContextsAreRefusedNamingTheField() throws {

        var untrusted = Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext()
        untrusted.commonTlsContext.tlsCertificateSdsSecretConfigs = [IstioShapes.sdsSecret("default")]
        untrusted.requireClientCertificate = Google_Protobuf_BoolValue(true)
        #expect(refusal(try inboundListener(try IstioShapes.socket(untrusted)))?.hasPrefix(
            "\(Self.inbound).typed_config.require_client_certificate: needs a validation context") == true)

        var namesWithoutRoots = untrusted
        namesWithoutRoots.requireClientCertificate = Google_Protobuf_BoolValue(false)
        namesWithoutRoots.commonTlsContext.validationContext.matchSubjectAltNames = [.with { $0.prefix = "spiffe://cluster.local/" }]
        #expect(refusal(try inboundListener(try IstioShapes.socket(namesWithoutRoots)))
            == "\(Self.inbound).typed_config.common_tls_context.validation_context: subject alt names need a trusted CA to verify the peer against")

        var badPEM = Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext()
        badPEM.commonTlsContext.tlsCertificates = [.with {
            $0.certificateChain.inlineString = "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"
            $0.privateKey.inlineString = "secret"
        }]
        #expect(refusal(try inboundListener(try IstioShapes.socket(badPEM)))?.hasPrefix(
            "\(Self.inbound).typed_config.common_tls_context.tls_certificates[0].certificate_chain: is not PEM certificates") == true)

        var unknown = Envoy_Config_Core_V3_TransportSocket()
        unknown.name = "envoy.transport_sockets.alts"
        #expect(refusal(try inboundListener(unknown))
            == "\(Self.inbound).name: \"envoy.transport_sockets.alts\" is not supported (envoy.transport_sockets.tls, envoy.transport_sockets.raw_buffer)")

        var proxyProtocol = try IstioShapes.listener("virtualInbound", port: 15006, inbound: true, inspectsTLS: false, chains: [])
        proxyProtocol.listenerFilters = [.with { $0.name = "envoy.filters.listener.proxy_protocol" }]
        #expect(refusal(try .packed(proxyProtocol, as: .listener))?.hasPrefix(
            "listener \"virtualInbound\".listener_filters[0].name: \"envoy.filters.listener.proxy_protocol\" is not supported") == true)
    }

    @Test func inlineCertificatesWorkInABootstrapAndTheDumpHidesTheKey() throws {
        let ca = try TestCertificateAuthority()
        let frontend = try ca.issue(MeshFixture.frontend)
        func text(_ pem: String) -> String { ConfigValue.string(pem).jsonText() }
        let json = """
            {"static_resources": {
              "listeners": [{"name": "virtualInbound", "traffic_direction": "INBOUND",
                "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
                "listener_filters": [{"name": "envoy.filters.listener.tls_inspector"}],
                "filter_chains": [{"filter_chain_match": {"transport_protocol": "tls", "application_protocols": ["istio"]},
                  "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "require_client_certificate": true,
                    "common_tls_context": {
                      "tls_certificates": [{"certificate_chain": {"inline_string": \(text(frontend.chainPEM))},
                                            "private_key": {"inline_string": \(text(frontend.keyPEM))}}],
                      "validation_context": {"trusted_ca": {"inline_string": \(text(ca.rootPEM))}}},
                    "disable_stateless_session_resumption": true}},
                  "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "cluster": "app"}}]}]}],
              "clusters": [{"name": "app", "load_assignment": {"endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 8080}}}}]}]}}]}}
            """
        let config = try BootstrapConfig.parse(json, format: .json)
        let listener = try #require(config.listeners.first)
        #expect(listener.inspectsTLS)
        let chain = try #require(listener.chains.first)
        #expect(chain.transportProtocol == "tls")
        #expect(chain.applicationProtocols == ["istio"])
        let socket = try #require(chain.transportSocket)
        guard case .inline(let credentials)? = socket.certificate else {
            Issue.record("expected an inline certificate, got \(String(describing: socket.certificate))")
            return
        }
        #expect(credentials.identity == MeshFixture.frontend)
        // A field Capstan does not implement is a warning with its path, not a failure.
        #expect(config.warnings == ["static_resources.listeners[0].filter_chains[0].transport_socket.typed_config.disable_stateless_session_resumption: not supported by Capstan, ignored"])
        let dump = socket.dump.jsonText()
        #expect(dump.contains("[redacted]"))
        #expect(!dump.contains("PRIVATE KEY"))
        #expect(dump.contains("BEGIN CERTIFICATE"))

        // The TLS context builds from the inline material, without SDS.
        let built = try TLSContextCache(metrics: IstioTCPMetrics()).context(for: socket.contextKey, secrets: SecretStore()).get()
        #expect(built.localIdentity == MeshFixture.frontend)
        #expect(built.verifiesPeer)
    }

    @Test func aBootstrapSecretFromAClusterItDoesNotHaveIsRefused() throws {
        let json = """
            {"static_resources": {"clusters": [{"name": "payments", "transport_socket": {"name": "envoy.transport_sockets.tls",
              "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {"tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": {"api_config_source": {
                  "api_type": "GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]}}}]}}},
              "load_assignment": {"endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9080}}}}]}]}}]}}
            """
        #expect(throws: ConfigError(path: "static_resources.clusters[0].transport_socket",
                                    message: "SDS secret \"default\" comes from cluster \"sds-grpc\", which is not a static cluster of the bootstrap with an endpoint")) {
            try BootstrapConfig.parse(json, format: .json)
        }
    }

    @Test func sdsRefusesSecretsThatAreNotPEMAndContextsFollowRotations() async throws {
        let ca = try TestCertificateAuthority()
        let store = SecretStore()
        let discovery = SecretDiscovery(store: store, node: .init(), servers: { _ in nil }, backoff: .init(), logger: Logger(label: "test"))
        let client = ADSClient(server: .unixSocket(path: "/nonexistent/sds.sock"), node: .init(), api: .secrets, logger: Logger(label: "test"))
        func response(_ version: String, _ secrets: [Envoy_Extensions_TransportSockets_Tls_V3_Secret]) throws -> DiscoveryResponse {
            var response = DiscoveryResponse()
            response.versionInfo = version
            response.typeURL = XDSResourceType.secret.typeURL
            response.resources = try secrets.map { try .packed($0, as: .secret) }
            return response
        }
        let first = try ca.issue(MeshFixture.frontend)
        let valid = try response("v1", [TestSDSServer.certificate("default", first), TestSDSServer.trust("ROOTCA", rootPEM: ca.rootPEM)])
        #expect(await discovery.apply(valid, type: .secret, client: client) == .accept)
        #expect(store["default"]?.version == "v1")

        // The contexts of a transport socket using these secrets: the same object until a secret changes.
        let socket = try #require(try XDSResourceDecoder.cluster(IstioShapes.cluster(
            "payments", port: 9080, tls: try IstioShapes.upstreamSocket(peers: [MeshFixture.payments]))).cluster.transportSocket)
        let contexts = TLSContextCache(metrics: IstioTCPMetrics())
        let before = try contexts.context(for: socket.contextKey, secrets: store).get()
        #expect(try contexts.context(for: socket.contextKey, secrets: store).get().context === before.context)

        var notPEM = TestSDSServer.certificate("default", first)
        notPEM.tlsCertificate.certificateChain.inlineString = "hello"
        let refused = await discovery.apply(try response("v2", [notPEM]), type: .secret, client: client)
        guard case .reject(let reason) = refused else {
            Issue.record("a secret that is not PEM was accepted")
            return
        }
        #expect(reason.hasPrefix("secret \"default\".tls_certificate.certificate_chain: has no PEM CERTIFICATE block")
                || reason.hasPrefix("secret \"default\".tls_certificate.certificate_chain: is not PEM certificates"))

        var mismatched = TestSDSServer.certificate("default", first)
        mismatched.tlsCertificate.privateKey.inlineString = try ca.issue(MeshFixture.frontend).keyPEM
        guard case .reject(let keyReason) = await discovery.apply(try response("v2", [mismatched]), type: .secret, client: client) else {
            Issue.record("a key that is not the certificate's was accepted")
            return
        }
        #expect(keyReason.hasPrefix("secret \"default\".tls_certificate.private_key: is not the key of the certificate chain's first certificate"))
        #expect(store["default"]?.version == "v1")

        let rotated = try response("v2", [TestSDSServer.certificate("default", try ca.issue(MeshFixture.frontend))])
        #expect(await discovery.apply(rotated, type: .secret, client: client) == .accept)
        #expect(store["default"]?.version == "v2")
        #expect(store["ROOTCA"]?.version == "v1")
        #expect(try contexts.context(for: socket.contextKey, secrets: store).get().context !== before.context)
    }
}
