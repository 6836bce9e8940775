import Configuration
@testable import ControlPlane
@testable import DataPlane
import Foundation
import NIOCore
import Routing
import HTTPTypes
import SwiftProtobuf
import Testing
import XDS

/// Gateways and the VirtualServices bound to them, as a gateway proxy (`router~` node) gets them,
/// field by field against istiod 1.20's istio-ingressgateway (`../shared/istio-config/`, read by path).
@Suite struct GatewayGeneratorTests {
    static let istioDump = "/work/shared/istio-config/ingressgateway-istio1.20.8.config_dump.json"

    /// istiod's example in the dump: hello-openshift behind a Gateway on 8080 for every host, `/dani` routed.
    static let helloOpenShift = """
        apiVersion: networking.istio.io/v1beta1
        kind: Gateway
        metadata: {name: external-traffic-gateway, namespace: vanilla-playground}
        spec:
          selector: {istio: ingressgateway}
          servers:
          - port: {number: 8080, name: http, protocol: HTTP}
            hosts: ["*"]
        ---
        apiVersion: networking.istio.io/v1beta1
        kind: VirtualService
        metadata: {name: external-traffic-vs, namespace: vanilla-playground}
        spec:
          hosts: ["*"]
          gateways: [external-traffic-gateway]
          http:
          - match: [{uri: {exact: /dani}}]
            route:
            - destination: {host: hello-openshift, port: {number: 8080}}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: hello-openshift, namespace: vanilla-playground}
        spec:
          hosts: [hello-openshift.vanilla-playground.svc.cluster.local]
          addresses: [172.30.10.10]
          ports: [{number: 8080, name: http}]
          resolution: STATIC
          endpoints: [{address: 10.130.0.40}]
        """

    /// The seed's ingress example: api.myapp.com on 80 (redirecting to https when `redirect`) and on
    /// 443 with a certificate, only /status and /delay of httpbin exposed.
    static func seed(redirect: Bool = false, tls: String = "") -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: api-gateway, namespace: shop}
        spec:
          selector: {istio: ingressgateway}
          servers:
          - port: {number: 80, name: http, protocol: HTTP}
            hosts: [api.myapp.com]
        \(redirect ? "    tls: {httpsRedirect: true}\n" : "")\(tls)
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: httpbin, namespace: shop}
        spec:
          hosts: [api.myapp.com]
          gateways: [api-gateway]
          http:
          - match: [{uri: {prefix: /status}}, {uri: {prefix: /delay}}]
            route:
            - destination: {host: httpbin, port: {number: 8000}}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: httpbin, namespace: shop}
        spec:
          hosts: [httpbin.shop.svc.cluster.local]
          ports: [{number: 8000, name: http}]
          resolution: STATIC
          endpoints: [{address: 192.0.2.20}]
        """
    }

    static let httpsServer = """
          - port: {number: 443, name: https, protocol: HTTPS}
            hosts: [api.myapp.com]
            tls: {mode: SIMPLE, credentialName: api-cert}
        """

    func config(_ text: String) throws -> MeshConfig {
        let reading = MeshConfigReader.read([("mesh.yaml", text)])
        return try #require(reading.config, "\(reading.problems)")
    }

    func router(_ text: String, labels: [String: String] = ["istio": "ingressgateway"]) throws -> GatewayGenerator.RouterResources {
        let config = try config(text)
        return try GatewayGenerator.resources(for: GatewayGenerator.gateways(in: config, selecting: labels), config: config)
    }

    static func istiod(_ kind: String) throws -> [[String: Any]] {
        let dump = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: istioDump))) as! [String: Any]
        let configs = dump["configs"] as! [[String: Any]]
        if kind == "listeners" {
            let section = configs.first { ($0["@type"] as? String)?.hasSuffix("ListenersConfigDump") == true }!
            return (section["dynamic_listeners"] as! [[String: Any]]).compactMap { ($0["active_state"] as? [String: Any])?["listener"] as? [String: Any] }
        }
        let section = configs.first { ($0["@type"] as? String)?.hasSuffix(".RoutesConfigDump") == true }!
        return (section["dynamic_route_configs"] as! [[String: Any]]).map { $0["route_config"] as! [String: Any] }
    }

    func listener(_ resources: GatewayGenerator.RouterResources, _ name: String) throws -> Envoy_Config_Listener_V3_Listener {
        let resource = try #require(resources.listeners.first { $0.name == name }, "no \(name) in \(resources.listeners.map(\.name))")
        return try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](resource.resource.value))
    }

    func routes(_ resources: GatewayGenerator.RouterResources, _ name: String) throws -> Envoy_Config_Route_V3_RouteConfiguration {
        let resource = try #require(resources.routes.first { $0.name == name }, "no \(name) in \(resources.routes.map(\.name))")
        return try Envoy_Config_Route_V3_RouteConfiguration(serializedBytes: [UInt8](resource.resource.value))
    }

    @Test func theListenerIsIstiodsFieldByField() throws {
        let resources = try router(Self.helloOpenShift)
        #expect(resources.listeners.map(\.name) == ["0.0.0.0_8080"])
        let listener = try listener(resources, "0.0.0.0_8080")
        let istiod = try #require(try Self.istiod("listeners").first { $0["name"] as? String == "0.0.0.0_8080" })
        let address = (istiod["address"] as! [String: Any])["socket_address"] as! [String: Any]
        #expect(listener.address.socketAddress.address == address["address"] as? String)
        #expect(Int(listener.address.socketAddress.portValue) == address["port_value"] as? Int)
        // Bound on its port (the default), and no original destination: nothing is captured on a gateway.
        #expect(!listener.hasBindToPort && istiod["bind_to_port"] == nil)
        #expect(!listener.hasUseOriginalDst && istiod["use_original_dst"] == nil)
        #expect(listener.trafficDirection == .outbound && istiod["traffic_direction"] as? String == "OUTBOUND")
        #expect(listener.listenerFilters.isEmpty && istiod["listener_filters"] == nil)
        let istiodChains = istiod["filter_chains"] as! [[String: Any]]
        #expect(listener.filterChains.count == istiodChains.count)
        #expect(!listener.filterChains[0].hasFilterChainMatch && istiodChains[0]["filter_chain_match"] == nil)
        let manager = try Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager(
            unpackingAny: listener.filterChains[0].filters[0].typedConfig)
        let istiodManager = ((istiodChains[0]["filters"] as! [[String: Any]])[0]["typed_config"]) as! [String: Any]
        #expect(manager.statPrefix == istiodManager["stat_prefix"] as? String)
        let rds = istiodManager["rds"] as! [String: Any]
        #expect(manager.rds.routeConfigName == rds["route_config_name"] as? String)
        #expect(manager.rds.configSource.ads == Envoy_Config_Core_V3_AggregatedConfigSource())
        #expect(manager.serverName == istiodManager["server_name"] as? String)
        #expect(manager.useRemoteAddress.value == istiodManager["use_remote_address"] as? Bool)
        #expect(istiodManager["forward_client_cert_details"] as? String == "SANITIZE_SET" && manager.forwardClientCertDetails == .sanitizeSet)
        let certDetails = istiodManager["set_current_client_cert_details"] as! [String: Any]
        #expect(manager.setCurrentClientCertDetails.subject.value == certDetails["subject"] as? Bool)
        #expect(manager.setCurrentClientCertDetails.cert == certDetails["cert"] as? Bool)
        #expect(manager.setCurrentClientCertDetails.dns == certDetails["dns"] as? Bool)
        #expect(manager.setCurrentClientCertDetails.uri == certDetails["uri"] as? Bool)
        #expect(manager.normalizePath.value == istiodManager["normalize_path"] as? Bool)
        #expect(istiodManager["path_with_escaped_slashes_action"] as? String == "KEEP_UNCHANGED" && manager.pathWithEscapedSlashesAction == .keepUnchanged)
        #expect(manager.streamIdleTimeout == Google_Protobuf_Duration(seconds: 0) && istiodManager["stream_idle_timeout"] as? String == "0s")
        #expect(manager.upgradeConfigs.map(\.upgradeType) == (istiodManager["upgrade_configs"] as! [[String: Any]]).map { $0["upgrade_type"] as! String })
        // istiod's filters, of those the proxy acts on, in istiod's order.
        let istiodFilters = (istiodManager["http_filters"] as! [[String: Any]]).map { $0["name"] as! String }
        #expect(manager.httpFilters.map(\.name) == istiodFilters.filter { ["istio.alpn", "envoy.filters.http.fault", "envoy.filters.http.cors", "envoy.filters.http.router"].contains($0) })

        // The proxy takes it whole.
        let decoded = try XDSResourceDecoder.listeners(resources.listeners.map(\.resource))
        #expect(decoded.map(\.name) == ["0.0.0.0_8080"] && decoded[0].bindsToPort && !decoded[0].usesOriginalDestination)
        _ = try XDSResourceDecoder.routeConfigurations(resources.routes.map(\.resource))
    }

    @Test func theRouteConfigurationIsIstiodsFieldByField() throws {
        let routes = try routes(try router(Self.helloOpenShift), "http.8080")
        let istiod = try #require(try Self.istiod("routes").first { $0["name"] as? String == "http.8080" })
        #expect(routes.validateClusters.value == istiod["validate_clusters"] as? Bool)
        #expect(Int(routes.maxDirectResponseBodySizeBytes.value) == istiod["max_direct_response_body_size_bytes"] as? Int)
        #expect(routes.ignorePortInHostMatching == istiod["ignore_port_in_host_matching"] as? Bool)
        let istiodHosts = istiod["virtual_hosts"] as! [[String: Any]]
        #expect(routes.virtualHosts.map(\.name) == istiodHosts.map { $0["name"] as! String })
        #expect(routes.virtualHosts.map(\.domains) == istiodHosts.map { $0["domains"] as! [String] })
        #expect(routes.virtualHosts[0].includeRequestAttemptCount == istiodHosts[0]["include_request_attempt_count"] as? Bool)
        let istiodRoute = (istiodHosts[0]["routes"] as! [[String: Any]])[0]
        let route = routes.virtualHosts[0].routes[0]
        #expect(route.match.path == (istiodRoute["match"] as! [String: Any])["path"] as? String)
        let istiodAction = istiodRoute["route"] as! [String: Any]
        #expect(route.route.cluster == istiodAction["cluster"] as? String)
        #expect(istiodAction["timeout"] as? String == "0s" && route.route.timeout == Google_Protobuf_Duration(seconds: 0))
        let istiodRetry = istiodAction["retry_policy"] as! [String: Any]
        #expect(route.route.retryPolicy.retryOn == istiodRetry["retry_on"] as? String)
        #expect(Int(route.route.retryPolicy.numRetries.value) == istiodRetry["num_retries"] as? Int)
    }

    @Test func theSeedExposesOnlyItsPrefixesOnItsHost() throws {
        let resources = try router(Self.seed())
        let table = try RouteTable(try routes(resources, "http.80"))
        func cluster(_ authority: String, _ path: String) -> String? {
            table.route(HTTPRequest(method: .get, scheme: "http", authority: authority, path: path), randomValue: 0)?.cluster
        }
        #expect(cluster("api.myapp.com", "/status/418") == "outbound|8000||httpbin.shop.svc.cluster.local")
        #expect(cluster("api.myapp.com:80", "/delay/1") == "outbound|8000||httpbin.shop.svc.cluster.local")
        #expect(cluster("api.myapp.com", "/headers") == nil)
        #expect(cluster("other.example.com", "/status/418") == nil)
        let routes = try routes(resources, "http.80")
        #expect(routes.virtualHosts.map(\.name) == ["api.myapp.com:80"])
        #expect(routes.virtualHosts[0].domains == ["api.myapp.com"])
    }

    @Test func aVirtualServiceBoundOnlyToAGatewayDoesNotReachSidecars() throws {
        let config = try config(Self.seed())
        let resources = try ProxyConfigGenerator.resources(for: config)
        // Sidecars get the service's default route, not the gateway's prefixes.
        let sidecar = try Envoy_Config_Route_V3_RouteConfiguration(serializedBytes: [UInt8](try #require(resources.routes.first { $0.name == "8000" }).resource.value))
        #expect(sidecar.virtualHosts.first?.routes.map(\.name) == ["default"])
        #expect(config.virtualServices[0].gateways == ["shop/api-gateway"])
        // And a proxy whose labels no Gateway selects gets no listener.
        #expect(try router(Self.seed(), labels: ["app": "web"]).listeners.isEmpty)
    }

    @Test func httpsRedirectAndSimpleTLSAreIstiods() throws {
        let resources = try router(Self.seed(redirect: true, tls: Self.httpsServer))
        #expect(resources.listeners.map(\.name) == ["0.0.0.0_80", "0.0.0.0_443"])
        #expect(resources.routes.map(\.name) == ["http.80", "https.443.https.api-gateway.shop"])
        #expect(resources.credentials == ["api-cert"])
        let redirect = try routes(resources, "http.80").virtualHosts[0].routes
        #expect(redirect.count == 1 && redirect[0].redirect.httpsRedirect && redirect[0].redirect.responseCode == .movedPermanently)
        let secure = try routes(resources, "https.443.https.api-gateway.shop").virtualHosts[0]
        #expect(secure.name == "api.myapp.com:443" && secure.routes.count == 2)
        let listener = try listener(resources, "0.0.0.0_443")
        #expect(listener.listenerFilters.map(\.name) == ["envoy.filters.listener.tls_inspector"])
        let context = try Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext(unpackingAny: listener.filterChains[0].transportSocket.typedConfig)
        #expect(context.commonTlsContext.tlsCertificateSdsSecretConfigs.map(\.name) == ["kubernetes://api-cert"])
        #expect(context.commonTlsContext.tlsCertificateSdsSecretConfigs[0].sdsConfig.ads == Envoy_Config_Core_V3_AggregatedConfigSource())
        #expect(context.commonTlsContext.alpnProtocols == ["h2", "http/1.1"])
        #expect(context.requireClientCertificate.value == false)
        let decoded = try XDSResourceDecoder.listeners(resources.listeners.map(\.resource))
        #expect(decoded.count == 2)
    }

    /// Two HTTPS servers on 443 for different hosts: a filter chain each, told apart by SNI
    /// (`server_names`), each with its certificate and route configuration; the proxy picks by the
    /// ClientHello's name. Servers for the same names on one port are refused.
    @Test func tlsServersShareAPortByServerName() throws {
        let two = Self.httpsServer + """

              - port: {number: 443, name: https-admin, protocol: HTTPS}
                hosts: [admin.myapp.com]
                tls: {mode: SIMPLE, credentialName: admin-cert}
            """
        let resources = try router(Self.seed(tls: two))
        #expect(resources.listeners.map(\.name) == ["0.0.0.0_80", "0.0.0.0_443"])
        #expect(resources.routes.map(\.name) == ["http.80", "https.443.https.api-gateway.shop", "https.443.https-admin.api-gateway.shop"])
        #expect(resources.credentials == ["api-cert", "admin-cert"])
        let listener = try listener(resources, "0.0.0.0_443")
        #expect(listener.filterChains.map(\.filterChainMatch.serverNames) == [["api.myapp.com"], ["admin.myapp.com"]])
        let decoded = try XDSResourceDecoder.listeners(resources.listeners.map(\.resource))
        let secure = try #require(decoded.first { $0.port == 443 })
        let address = try SocketAddress(ipAddress: "10.0.0.7", port: 443)
        func routeName(_ sni: String?) -> String? {
            secure.chain(for: address, detected: .init(transportProtocol: "tls", serverName: sni))?.httpConnectionManager?.discoveredRouteName
        }
        #expect(routeName("api.myapp.com") == "https.443.https.api-gateway.shop")
        #expect(routeName("admin.myapp.com") == "https.443.https-admin.api-gateway.shop")
        #expect(routeName("other.myapp.com") == nil && routeName(nil) == nil)

        let clash = Self.seed(tls: Self.httpsServer + "\n  - port: {number: 443, name: https-2, protocol: HTTPS}\n    hosts: [\"*/api.myapp.com\"]\n    tls: {mode: SIMPLE, credentialName: other}\n")
        let problems = MeshConfigReader.read([("mesh.yaml", clash)]).problems
        #expect(problems.map(\.field) == ["spec.servers[2].hosts"], "\(problems)")
    }

    @Test func aMatchsGatewaysChooseWhereItApplies() throws {
        let text = Self.seed().replacingOccurrences(of: "  gateways: [api-gateway]\n  http:\n  - match: [{uri: {prefix: /status}}, {uri: {prefix: /delay}}]",
                                                    with: "  gateways: [api-gateway, mesh]\n  http:\n  - match: [{uri: {prefix: /status}, gateways: [api-gateway]}, {uri: {prefix: /delay}, gateways: [mesh]}]")
        #expect(text != Self.seed())
        let config = try config(text.replacingOccurrences(of: "hosts: [api.myapp.com]\n  gateways", with: "hosts: [api.myapp.com, httpbin]\n  gateways"))
        #expect(config.virtualServices[0].http[0].matches.map(\.gateways) == [["shop/api-gateway"], ["mesh"]])
        let gateway = try GatewayGenerator.resources(for: config.gateways, config: config)
        let table = try RouteTable(try routes(gateway, "http.80"))
        let request = { (path: String) in HTTPRequest(method: .get, scheme: "http", authority: "api.myapp.com", path: path) }
        #expect(table.route(request("/status/200"), randomValue: 0)?.cluster == "outbound|8000||httpbin.shop.svc.cluster.local")
        #expect(table.route(request("/delay/1"), randomValue: 0) == nil)
        let sidecar = try ProxyConfigGenerator.resources(for: config)
        let sidecarRoutes = try Envoy_Config_Route_V3_RouteConfiguration(serializedBytes: [UInt8](try #require(sidecar.routes.first { $0.name == "8000" }).resource.value))
        #expect(sidecarRoutes.virtualHosts.first?.routes.map(\.match.prefix) == ["/delay"])
    }

    @Test func gatewayReferencesResolveAsIstioDoes() throws {
        #expect(try MeshConfigReader.gatewayReference("mesh", namespace: "shop", path: "p") == "mesh")
        #expect(try MeshConfigReader.gatewayReference("api-gateway", namespace: "shop", path: "p") == "shop/api-gateway")
        #expect(try MeshConfigReader.gatewayReference("istio-system/ingress", namespace: "shop", path: "p") == "istio-system/ingress")
        #expect(try MeshConfigReader.gatewayReference("ingress.istio-system.svc.cluster.local", namespace: "shop", path: "p") == "istio-system/ingress")
        #expect(throws: ConfigError.self) { try MeshConfigReader.gatewayReference("a/b/c", namespace: "shop", path: "p") }
    }

    @Test func serverHostsBindByNamespaceAndWildcard() {
        let any = Gateway.Host(namespace: nil, host: "*")
        #expect(any.domain(forVirtualServiceHost: "api.myapp.com", namespace: "shop", gatewayNamespace: "istio-system") == "api.myapp.com")
        let wildcard = Gateway.Host(namespace: "shop", host: "*.myapp.com")
        #expect(wildcard.domain(forVirtualServiceHost: "api.myapp.com", namespace: "shop", gatewayNamespace: "x") == "api.myapp.com")
        #expect(wildcard.domain(forVirtualServiceHost: "api.myapp.com", namespace: "web", gatewayNamespace: "x") == nil)
        #expect(wildcard.domain(forVirtualServiceHost: "*", namespace: "shop", gatewayNamespace: "x") == "*.myapp.com")
        let own = Gateway.Host(namespace: ".", host: "api.myapp.com")
        #expect(own.domain(forVirtualServiceHost: "api.myapp.com", namespace: "x", gatewayNamespace: "x") == "api.myapp.com")
        #expect(own.domain(forVirtualServiceHost: "api.myapp.com", namespace: "y", gatewayNamespace: "x") == nil)
        #expect(own.domain(forVirtualServiceHost: "web.myapp.com", namespace: "x", gatewayNamespace: "x") == nil)
    }

    @Test(arguments: [
        ("    tls: {mode: PASSTHROUGH, credentialName: api-cert}\n", "spec.servers[0].tls.credentialName", "is not used with PASSTHROUGH"),
        ("    tls: {mode: OPTIONAL_MUTUAL}\n", "spec.servers[0].tls.credentialName", "is required"),
        ("    tls: {mode: AUTO_PASSTHROUGH, credentialName: api-cert}\n", "spec.servers[0].tls.credentialName", "is not used with AUTO_PASSTHROUGH"),
        ("    tls: {mode: ISTIO_MUTUAL, credentialName: api-cert}\n", "spec.servers[0].tls.credentialName", "cannot be given with ISTIO_MUTUAL"),
        ("    tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/shop/sa/client]}\n", "spec.servers[0].tls.subjectAltNames",
         "is not supported by Capstan's gateway yet"),
    ])
    func unsupportedModesAreRefusedNamingTheField(tls: String, field: String, message: String) throws {
        let text = Self.seed().replacingOccurrences(of: "protocol: HTTP}\n    hosts: [api.myapp.com]\n",
                                                    with: "protocol: HTTPS}\n    hosts: [api.myapp.com]\n\(tls)")
        let reading = MeshConfigReader.read([("mesh.yaml", text)])
        #expect(reading.config == nil)
        #expect(reading.problems.contains { $0.field == field && $0.message.hasPrefix(message) }, "\(reading.problems)")
    }

    @Test func aTCPServerRelaysToItsBoundTCPRoute() throws {
        let text = Self.seed(tls: "  - port: {number: 9000, name: tcp-echo, protocol: TCP}\n    hosts: [\"*\"]\n") + """

            ---
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: echo, namespace: shop}
            spec:
              hosts: [echo.shop.svc.cluster.local]
              ports: [{number: 7000, name: tcp-echo, protocol: TCP}]
              resolution: STATIC
              endpoints: [{address: 192.0.2.20}]
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: echo, namespace: shop}
            spec:
              hosts: [echo.shop.svc.cluster.local]
              gateways: [api-gateway]
              tcp:
              - match: [{port: 9000}]
                route: [{destination: {host: echo}}]
            """
        let resources = try router(text)
        #expect(resources.listeners.map(\.name) == ["0.0.0.0_80", "0.0.0.0_9000"])
        let listener = try listener(resources, "0.0.0.0_9000")
        let proxy = try Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy(unpackingAny: listener.filterChains[0].filters[0].typedConfig)
        #expect(proxy.cluster == "outbound|7000||echo.shop.svc.cluster.local" && proxy.statPrefix == proxy.cluster)
        #expect(!listener.hasBindToPort && !listener.hasUseOriginalDst)
        _ = try XDSResourceDecoder.listeners(resources.listeners.map(\.resource))
        // No tcp route bound for the port: no listener, as istiod.
        #expect(try router(Self.seed(tls: "  - port: {number: 9000, name: tcp-echo, protocol: TCP}\n    hosts: [\"*\"]\n")).listeners.map(\.name) == ["0.0.0.0_80"])
    }

    @Test func tlsServersAndMissingCredentialsAreRefused() {
        let tls = Self.seed().replacingOccurrences(of: "protocol: HTTP}", with: "protocol: TLS}")
        #expect(MeshConfigReader.read([("mesh.yaml", tls)]).problems.map(\.field) == ["spec.servers[0].tls.mode"])
        // Mongo is not served.
        let mongo = Self.seed().replacingOccurrences(of: "protocol: HTTP}", with: "protocol: MONGO}")
        #expect(MeshConfigReader.read([("mesh.yaml", mongo)]).problems.map(\.field) == ["spec.servers[0].port.protocol"])
        let noCredential = Self.seed(tls: "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [api.myapp.com]\n    tls: {mode: SIMPLE}\n")
        #expect(MeshConfigReader.read([("mesh.yaml", noCredential)]).problems.map(\.field) == ["spec.servers[1].tls.credentialName"])
        // Named, but nowhere to read it from.
        let config = try? config(Self.seed(tls: Self.httpsServer))
        let read = GatewaySecrets.read(for: config ?? MeshConfig(), directory: nil)
        #expect(read.problems.map(\.field) == ["spec.servers[1].tls.credentialName"])
    }

    @Test func aRouterNodeGetsItsGatewaysAndCredentialsOnly() throws {
        let config = try config(Self.seed(tls: Self.httpsServer))
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-gateway-secrets-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let secrets = GatewaySecrets.read(for: config, directory: directory.path)
        // The directory has no such secret yet: refused naming the secret.
        #expect(secrets.problems.first?.message.contains("secret \"api-cert\"") == true, "\(secrets.problems)")
        var resources = try ProxyConfigGenerator.resources(for: config)
        resources.gatewaySecrets = GatewaySecrets()
        let store = MeshSnapshotStore()
        store.update(resources)
        var node = Envoy_Config_Core_V3_Node()
        node.id = "router~192.0.2.10~ingress-7d9f.shop~shop.svc.cluster.local"
        node.metadata.fields["LABELS"] = Google_Protobuf_Value(structValue: Google_Protobuf_Struct(fields: ["istio": Google_Protobuf_Value(stringValue: "ingressgateway")]))
        let snapshot = store.snapshot(for: node)
        #expect(snapshot.types[.listener]?.resources.map(\.name) == ["0.0.0.0_80", "0.0.0.0_443"])
        #expect(snapshot.types[.route]?.resources.map(\.name).contains("https.443.https.api-gateway.shop") == true)
        node.id = "sidecar~192.0.2.1~client-7d9f.shop~shop.svc.cluster.local"
        #expect(store.snapshot(for: node).types[.listener]?.resources.map(\.name).contains("0.0.0.0_443") == false)
    }

    /// A gateway takes the VirtualServices bound to it that are exported to its own namespace, as istiod's
    /// VirtualServicesForGateway does: one kept in `shop` reaches shop's gateway only.
    @Test func aRouterTakesTheVirtualServicesExportedToItsNamespace() throws {
        func hosts(_ exportTo: String?, gatewayNamespace: String) throws -> [String] {
            var text = Self.seed()
            if let exportTo {
                text = text.replacingOccurrences(of: "  gateways: [api-gateway]\n", with: "  gateways: [api-gateway]\n  exportTo: \(exportTo)\n")
                #expect(text.contains("exportTo"))
            }
            let store = MeshSnapshotStore()
            store.update(try ProxyConfigGenerator.resources(for: try config(text)))
            var node = Envoy_Config_Core_V3_Node()
            node.id = "router~192.0.2.10~ingress-7d9f.\(gatewayNamespace)~\(gatewayNamespace).svc.cluster.local"
            node.metadata.fields["LABELS"] = Google_Protobuf_Value(structValue: Google_Protobuf_Struct(fields: ["istio": Google_Protobuf_Value(stringValue: "ingressgateway")]))
            let routes = try #require(store.snapshot(for: node).types[.route]?.resources.first { $0.name == "http.80" })
            let configuration = try Envoy_Config_Route_V3_RouteConfiguration(serializedBytes: [UInt8](routes.resource.value))
            return configuration.virtualHosts.flatMap(\.domains).filter { $0.hasPrefix("api.myapp.com") }
        }
        #expect(try hosts(nil, gatewayNamespace: "istio-system") == ["api.myapp.com"])
        #expect(try hosts("['.']", gatewayNamespace: "shop") == ["api.myapp.com"])
        #expect(try hosts("['.']", gatewayNamespace: "istio-system").isEmpty)
        #expect(try hosts("[istio-system]", gatewayNamespace: "istio-system") == ["api.myapp.com"])

        // A service kept in shop: only shop's gateway gets its cluster and endpoints.
        let kept = Self.seed().replacingOccurrences(of: "  endpoints: [{address: 192.0.2.20}]", with: "  endpoints: [{address: 192.0.2.20}]\n  exportTo: ['.']")
        #expect(kept != Self.seed())
        let store = MeshSnapshotStore()
        store.update(try ProxyConfigGenerator.resources(for: try config(kept)))
        for (namespace, sees) in [("shop", true), ("istio-system", false)] {
            var node = Envoy_Config_Core_V3_Node()
            node.id = "router~192.0.2.10~ingress-7d9f.\(namespace)~\(namespace).svc.cluster.local"
            node.metadata.fields["LABELS"] = Google_Protobuf_Value(structValue: Google_Protobuf_Struct(fields: ["istio": Google_Protobuf_Value(stringValue: "ingressgateway")]))
            let snapshot = store.snapshot(for: node)
            let name = "outbound|8000||httpbin.shop.svc.cluster.local"
            #expect(snapshot.types[.cluster]?.resources.contains { $0.name == name } == sees, "\(namespace)")
            #expect(snapshot.types[.endpoint]?.resources.contains { $0.name == name } == sees, "\(namespace)")
        }
    }

    // MARK: The egress gateway task (ISTIO_MUTUAL)

    static let sidecarDump = "/work/shared/istio-config/sidecar-istio1.20.8-hello-openshift.config_dump.json"

    /// Istio's egress gateway task, HTTP variant: the Gateway on 80 (HTTPS, ISTIO_MUTUAL) for the external
    /// host, the rule giving the sidecar's cluster to the gateway's subset ISTIO_MUTUAL with the host as SNI,
    /// and one VirtualService bound to the sidecars (to the gateway) and to the gateway (out).
    static let egressTask = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: cnn, namespace: shop}
        spec:
          hosts: [edition.cnn.com]
          ports: [{number: 80, name: http-port, protocol: HTTP}, {number: 443, name: https, protocol: HTTPS}]
          resolution: DNS
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: istio-egressgateway, namespace: shop}
        spec:
          hosts: [istio-egressgateway.shop.svc.cluster.local]
          ports: [{number: 80, name: http2, protocol: HTTP2}]
          resolution: STATIC
          endpoints: [{address: 192.0.2.40, labels: {istio: egressgateway}, serviceAccount: istio-egressgateway}]
        ---
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: istio-egressgateway, namespace: shop}
        spec:
          selector: {istio: egressgateway}
          servers:
          - port: {number: 80, name: https, protocol: HTTPS}
            hosts: [edition.cnn.com]
            tls: {mode: ISTIO_MUTUAL}
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: egressgateway-for-cnn, namespace: shop}
        spec:
          host: istio-egressgateway.shop.svc.cluster.local
          subsets:
          - name: cnn
            trafficPolicy:
              loadBalancer: {simple: ROUND_ROBIN}
              portLevelSettings:
              - port: {number: 80}
                tls: {mode: ISTIO_MUTUAL, sni: edition.cnn.com}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: direct-cnn-through-egress-gateway, namespace: shop}
        spec:
          hosts: [edition.cnn.com]
          gateways: [istio-egressgateway, mesh]
          http:
          - match: [{gateways: [mesh], port: 80}]
            route: [{destination: {host: istio-egressgateway.shop.svc.cluster.local, subset: cnn, port: {number: 80}}, weight: 100}]
          - match: [{gateways: [istio-egressgateway], port: 80}]
            route: [{destination: {host: edition.cnn.com, port: {number: 80}}, weight: 100}]
        """

    /// The downstream TLS of istiod's sidecar inbound chain `virtualInbound-catchall-http` in the dump:
    /// istiod builds ISTIO_MUTUAL gateway servers with the same function (`ApplyToCommonTLSContext`).
    static func istiodInboundTLS() throws -> [String: Any] {
        let dump = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: sidecarDump))) as! [String: Any]
        let section = (dump["configs"] as! [[String: Any]]).first { ($0["@type"] as? String)?.hasSuffix("ListenersConfigDump") == true }!
        let listeners = (section["dynamic_listeners"] as! [[String: Any]]).compactMap { ($0["active_state"] as? [String: Any])?["listener"] as? [String: Any] }
        let inbound = listeners.first { $0["name"] as? String == "virtualInbound" }!
        let chain = (inbound["filter_chains"] as! [[String: Any]]).first { $0["name"] as? String == "virtualInbound-catchall-http" }!
        return (chain["transport_socket"] as! [String: Any])["typed_config"] as! [String: Any]
    }

    @Test func anIstioMutualServerTerminatesMeshTLSAsIstiodDoes() throws {
        let resources = try router(Self.egressTask, labels: ["istio": "egressgateway"])
        #expect(resources.listeners.map(\.name) == ["0.0.0.0_80"])
        #expect(resources.routes.map(\.name) == ["https.80.https.istio-egressgateway.shop"])
        #expect(resources.credentials.isEmpty, "no secret: the gateway's workload certificate")
        let listener = try listener(resources, "0.0.0.0_80")
        #expect(listener.listenerFilters.map(\.name) == ["envoy.filters.listener.tls_inspector"])
        #expect(listener.filterChains.map(\.filterChainMatch.serverNames) == [["edition.cnn.com"]])
        let socket = listener.filterChains[0].transportSocket
        #expect(socket.name == "envoy.transport_sockets.tls")
        let context = try Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext(unpackingAny: socket.typedConfig)

        // Field by field against istiod's inbound mTLS context (the same SDS secrets from the agent).
        let istiod = try Self.istiodInboundTLS()
        let common = istiod["common_tls_context"] as! [String: Any]
        #expect(context.requireClientCertificate.value == istiod["require_client_certificate"] as? Bool)
        #expect(context.commonTlsContext.alpnProtocols == common["alpn_protocols"] as? [String])
        let istiodCertificate = (common["tls_certificate_sds_secret_configs"] as! [[String: Any]])[0]
        let certificate = try #require(context.commonTlsContext.tlsCertificateSdsSecretConfigs.first)
        #expect(context.commonTlsContext.tlsCertificateSdsSecretConfigs.count == 1)
        let combined = common["combined_validation_context"] as! [String: Any]
        let istiodRoot = combined["validation_context_sds_secret_config"] as! [String: Any]
        let root = context.commonTlsContext.combinedValidationContext.validationContextSdsSecretConfig
        for (ours, theirs) in [(certificate, istiodCertificate), (root, istiodRoot)] {
            #expect(ours.name == theirs["name"] as? String)
            let source = (theirs["sds_config"] as! [String: Any])["api_config_source"] as! [String: Any]
            let api = ours.sdsConfig.apiConfigSource
            #expect(source["api_type"] as? String == "GRPC" && api.apiType == .grpc)
            let cluster = ((source["grpc_services"] as! [[String: Any]])[0]["envoy_grpc"] as! [String: Any])["cluster_name"] as? String
            #expect(api.grpcServices.map(\.envoyGrpc.clusterName) == [cluster].compactMap { $0 })
            #expect(api.setNodeOnFirstMessageOnly == source["set_node_on_first_message_only"] as? Bool)
            #expect(source["transport_api_version"] as? String == "V3" && api.transportApiVersion == .v3)
            #expect((theirs["sds_config"] as! [String: Any])["resource_api_version"] as? String == "V3" && ours.sdsConfig.resourceApiVersion == .v3)
        }

        // The gateway's routes: only the VirtualService's gateway match, out to the external host.
        let table = try RouteTable(try routes(resources, "https.80.https.istio-egressgateway.shop"))
        let request = HTTPRequest(method: .get, scheme: "https", authority: "edition.cnn.com", path: "/politics")
        #expect(table.route(request, randomValue: 0)?.cluster == "outbound|80||edition.cnn.com")
        #expect(try routes(resources, "https.80.https.istio-egressgateway.shop").virtualHosts.map(\.name) == ["edition.cnn.com:80"])

        // The proxy takes it, and picks the chain by the SNI the sidecar sends.
        let decoded = try XDSResourceDecoder.listeners(resources.listeners.map(\.resource))
        let address = try SocketAddress(ipAddress: "192.0.2.40", port: 80)
        #expect(decoded[0].chain(for: address, detected: .init(transportProtocol: "tls", serverName: "edition.cnn.com")) != nil)
        #expect(decoded[0].chain(for: address, detected: .init(transportProtocol: "tls", serverName: "outbound_.80_.cnn_.istio-egressgateway.shop.svc.cluster.local")) == nil)
        #expect(decoded[0].chain(for: address, detected: .init(transportProtocol: "raw_buffer", serverName: nil)) == nil)
    }

    @Test func theSidecarSendsTheExternalHostToTheGatewayOverMutualTLSWithItsName() throws {
        let config = try config(Self.egressTask)
        let resources = try ProxyConfigGenerator.resources(for: config)
        func cluster(_ name: String) throws -> Envoy_Config_Cluster_V3_Cluster {
            try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](try #require(resources.clusters.first { $0.name == name }, "no \(name)").resource.value))
        }
        let subset = try cluster("outbound|80|cnn|istio-egressgateway.shop.svc.cluster.local")
        let tls = try Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext(unpackingAny: subset.transportSocket.typedConfig)
        // The rule's SNI, not istiod's `outbound_.80_.cnn_.…`: the gateway's chain matches the host's name.
        #expect(tls.sni == "edition.cnn.com")
        #expect(tls.commonTlsContext.tlsCertificateSdsSecretConfigs.map(\.name) == ["default"])
        #expect(tls.commonTlsContext.combinedValidationContext.validationContextSdsSecretConfig.name == "ROOTCA")
        #expect(tls.commonTlsContext.combinedValidationContext.defaultValidationContext.matchTypedSubjectAltNames.map(\.matcher.exact)
                == ["spiffe://cluster.local/ns/shop/sa/istio-egressgateway"])
        // The service's own cluster (no rule for its port) stays plaintext: the gateway's endpoint has no sidecar label.
        #expect(!(try cluster("outbound|80||istio-egressgateway.shop.svc.cluster.local")).hasTransportSocket)
        // The sidecar's route for the host: to the gateway's subset, the gateway's own match left out.
        let sidecar = try Envoy_Config_Route_V3_RouteConfiguration(serializedBytes: [UInt8](try #require(resources.routes.first { $0.name == "80" }).resource.value))
        let table = try RouteTable(sidecar)
        let request = HTTPRequest(method: .get, scheme: "http", authority: "edition.cnn.com", path: "/politics")
        #expect(table.route(request, randomValue: 0)?.cluster == "outbound|80|cnn|istio-egressgateway.shop.svc.cluster.local")
        // Without `sni`, istiod's name for the cluster.
        let plain = try ProxyConfigGenerator.resources(for: try self.config(Self.egressTask.replacingOccurrences(of: ", sni: edition.cnn.com", with: "")))
        let plainCluster = try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](try #require(plain.clusters.first {
            $0.name == "outbound|80|cnn|istio-egressgateway.shop.svc.cluster.local" }).resource.value))
        #expect(try Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext(unpackingAny: plainCluster.transportSocket.typedConfig).sni
                == "outbound_.80_.cnn_.istio-egressgateway.shop.svc.cluster.local")
        // Its other settings are still said to be unused.
        let reading = MeshConfigReader.read([("mesh.yaml", Self.egressTask.replacingOccurrences(of: "sni: edition.cnn.com", with: "sni: edition.cnn.com, caCertificates: /etc/ca.pem"))])
        #expect(reading.warnings.contains { $0.contains("tls.caCertificates: not acted on with mode ISTIO_MUTUAL") }, "\(reading.warnings)")
        #expect(!reading.warnings.contains { $0.contains("tls.sni") }, "\(reading.warnings)")
    }

    @Test func theMeshAccessLogFileIsWrittenByEveryHTTPConnectionManager() throws {
        let mesh = """

            ---
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: istio, namespace: istio-system}
            data:
              mesh: |-
                accessLogFile: /dev/stdout
            """
        let listener = try listener(try router(Self.egressTask + mesh, labels: ["istio": "egressgateway"]), "0.0.0.0_80")
        let manager = try Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager(
            unpackingAny: listener.filterChains[0].filters[0].typedConfig)
        #expect(manager.accessLog.map(\.name) == ["envoy.access_loggers.file"])
        let file = try Envoy_Extensions_AccessLoggers_File_V3_FileAccessLog(unpackingAny: manager.accessLog[0].typedConfig)
        #expect(file.path == "/dev/stdout" && file.logFormat.textFormatSource.inlineString == MeshSettings.istioTextLogFormat)
        // The proxy compiles the format.
        _ = try XDSResourceDecoder.listeners([try Google_Protobuf_Any.packed(listener, as: .listener)])
        // Without it, no access log, as istiod.
        let quiet = try self.listener(try router(Self.egressTask, labels: ["istio": "egressgateway"]), "0.0.0.0_80")
        #expect(try Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager(
            unpackingAny: quiet.filterChains[0].filters[0].typedConfig).accessLog.isEmpty)
        // Sidecars' connection managers too: the outbound listener of an HTTP port, and inbound HTTP chains.
        let sidecar = try ProxyConfigGenerator.resources(for: try config(Self.egressTask + mesh))
        let outbound = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](try #require(sidecar.outboundListeners.first { $0.name == "0.0.0.0_80" }).resource.value))
        let outboundManagers = try outbound.filterChains.filter { $0.filters.first?.name == "envoy.filters.network.http_connection_manager" }.map {
            try Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager(unpackingAny: $0.filters[0].typedConfig)
        }
        #expect(!outboundManagers.isEmpty && outboundManagers.allSatisfy { $0.accessLog == manager.accessLog })
        let inbound = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](try ProxyConfigGenerator.inboundListener(
            sidecar.inbound(ip: "192.0.2.40", namespace: "shop"), transparent: false, accessLog: sidecar.accessLog).resource.value))
        let inboundManagers = try inbound.filterChains.filter { $0.filters.last?.name == "envoy.filters.network.http_connection_manager" }.map {
            try Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager(unpackingAny: $0.filters.last!.typedConfig)
        }
        #expect(!inboundManagers.isEmpty && inboundManagers.allSatisfy { $0.accessLog == manager.accessLog })
        // A change of the file alone resends listeners.
        let other = try ProxyConfigGenerator.resources(for: try config(Self.egressTask + mesh.replacingOccurrences(of: "/dev/stdout", with: "/dev/stderr")))
        #expect(sidecar.differs(from: other, in: .listener))
    }

    // MARK: TLS passthrough

    /// Istio's "ingress gateway without TLS termination" task: nginx.example.com passed through, by SNI,
    /// to my-nginx's 443; `protocol` is the task's HTTPS or TLS.
    static func passthrough(protocol: String = "HTTPS", more: String = "") -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: mygateway, namespace: shop}
        spec:
          selector: {istio: ingressgateway}
          servers:
          - port: {number: 443, name: https, protocol: \(`protocol`)}
            tls: {mode: PASSTHROUGH}
            hosts: [nginx.example.com, other.example.com]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: nginx, namespace: shop}
        spec:
          hosts: [nginx.example.com]
          gateways: [mygateway]
          tls:
          - match: [{port: 443, sniHosts: [nginx.example.com]}]
            route: [{destination: {host: my-nginx, port: {number: 443}}}]
        \(more)---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: my-nginx, namespace: shop}
        spec:
          hosts: [my-nginx.shop.svc.cluster.local]
          ports: [{number: 443, name: https, protocol: HTTPS}]
          resolution: STATIC
          endpoints: [{address: 192.0.2.20}]
        """
    }

    @Test(arguments: ["HTTPS", "TLS"])
    func aPassthroughServerRelaysTLSBySNIToItsTLSRoutes(protocol: String) throws {
        let resources = try router(Self.passthrough(protocol: `protocol`))
        #expect(resources.listeners.map(\.name) == ["0.0.0.0_443"])
        #expect(resources.routes.isEmpty && resources.credentials.isEmpty)
        let listener = try listener(resources, "0.0.0.0_443")
        #expect(listener.listenerFilters.map(\.name) == ["envoy.filters.listener.tls_inspector"])
        #expect(listener.filterChains.count == 1)
        let chain = listener.filterChains[0]
        #expect(chain.filterChainMatch.serverNames == ["nginx.example.com"])
        #expect(!chain.hasTransportSocket, "passthrough: no TLS context")
        let proxy = try Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy(unpackingAny: chain.filters[0].typedConfig)
        #expect(chain.filters.map(\.name) == ["envoy.filters.network.tcp_proxy"])
        #expect(proxy.cluster == "outbound|443||my-nginx.shop.svc.cluster.local" && proxy.statPrefix == proxy.cluster)
        // The proxy takes it and chooses by the ClientHello's name only.
        let decoded = try XDSResourceDecoder.listeners(resources.listeners.map(\.resource))
        let address = try SocketAddress(ipAddress: "192.0.2.10", port: 443)
        #expect(decoded[0].chain(for: address, detected: .init(transportProtocol: "tls", serverName: "nginx.example.com")) != nil)
        #expect(decoded[0].chain(for: address, detected: .init(transportProtocol: "tls", serverName: "other.example.com")) == nil)
        #expect(decoded[0].chain(for: address, detected: .init(transportProtocol: "raw_buffer", serverName: nil)) == nil)
    }

    @Test func passthroughMatchesAreFilteredAndDuplicatesLeftOutAsIstiod() throws {
        let more = """
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: more, namespace: shop}
            spec:
              hosts: [other.example.com, nginx.example.com]
              gateways: [mygateway, mesh]
              tls:
              - match: [{sniHosts: [nginx.example.com]}]
                route: [{destination: {host: my-nginx, port: {number: 443}}}]
              - match: [{port: 8443, sniHosts: [other.example.com]}, {gateways: [mesh], sniHosts: [other.example.com]}]
                route: [{destination: {host: my-nginx, port: {number: 443}}}]
              - match: [{sniHosts: [other.example.com]}]
                route: [{destination: {host: my-nginx, port: {number: 443}}, weight: 50}, {destination: {host: my-nginx, port: {number: 443}}, weight: 50}]

            """
        let reading = MeshConfigReader.read([("mesh.yaml", Self.passthrough(more: more))])
        let config = try #require(reading.config, "\(reading.problems)")
        // Said: the repeated name (left out of the chains) and the routes sidecars do not act on.
        #expect(reading.warnings.contains { $0.contains("spec.tls[0].match[0].sniHosts: nginx.example.com already routed on port 443") }, "\(reading.warnings)")
        #expect(reading.warnings.contains { $0.contains("spec.tls: on sidecars (gateway mesh) acted on for HTTPS and TLS services without addresses only") }, "\(reading.warnings)")
        let resources = try GatewayGenerator.resources(for: GatewayGenerator.gateways(in: config, selecting: ["istio": "ingressgateway"]), config: config)
        let listener = try listener(resources, "0.0.0.0_443")
        // nginx once (the first VirtualService's), other.example.com by the third route (port 8443 and gateway mesh do not apply).
        #expect(listener.filterChains.map(\.filterChainMatch.serverNames) == [["nginx.example.com"], ["other.example.com"]])
        let weighted = try Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy(unpackingAny: listener.filterChains[1].filters[0].typedConfig)
        #expect(weighted.weightedClusters.clusters.map(\.weight) == [50, 50])
        // No bound tls route: no listener, as istiod.
        let unbound = Self.passthrough().replacingOccurrences(of: "gateways: [mygateway]", with: "gateways: [mesh]")
        #expect(try router(unbound).listeners.isEmpty)
        // A tls route naming what is not a server name, or a match field Capstan does not serve, is refused with its path.
        let badName = Self.passthrough().replacingOccurrences(of: "sniHosts: [nginx.example.com]", with: "sniHosts: [\"nginx example\"]")
        #expect(MeshConfigReader.read([("mesh.yaml", badName)]).problems.map(\.field) == ["spec.tls[0].match[0].sniHosts[0]"])
        let source = Self.passthrough().replacingOccurrences(of: "{port: 443, sniHosts", with: "{sourceNamespace: shop, sniHosts")
        #expect(MeshConfigReader.read([("mesh.yaml", source)]).problems.map(\.field) == ["spec.tls[0].match[0].sourceNamespace"])
    }

    /// The egress task's HTTPS variant: the sidecar's chain for the host's name relays to the gateway's
    /// subset (the `mesh` tls match), the gateway's PASSTHROUGH chain out to the host (its own match).
    @Test func theEgressTasksTLSRoutesSendTheNameThroughTheGateway() throws {
        let text = Self.egressTask
            .replacingOccurrences(of: "ports: [{number: 80, name: http2, protocol: HTTP2}]",
                                  with: "ports: [{number: 80, name: http2, protocol: HTTP2}, {number: 443, name: https, protocol: HTTPS}]")
            .replacingOccurrences(of: "- port: {number: 80, name: https, protocol: HTTPS}\n    hosts: [edition.cnn.com]\n    tls: {mode: ISTIO_MUTUAL}",
                                  with: "- port: {number: 443, name: tls, protocol: TLS}\n    hosts: [edition.cnn.com]\n    tls: {mode: PASSTHROUGH}")
            .replacingOccurrences(of: """
                  http:
                  - match: [{gateways: [mesh], port: 80}]
                    route: [{destination: {host: istio-egressgateway.shop.svc.cluster.local, subset: cnn, port: {number: 80}}, weight: 100}]
                  - match: [{gateways: [istio-egressgateway], port: 80}]
                    route: [{destination: {host: edition.cnn.com, port: {number: 80}}, weight: 100}]
                """, with: """
                  tls:
                  - match: [{gateways: [mesh], port: 443, sniHosts: [edition.cnn.com]}]
                    route: [{destination: {host: istio-egressgateway.shop.svc.cluster.local, subset: cnn, port: {number: 443}}}]
                  - match: [{gateways: [istio-egressgateway], port: 443, sniHosts: [edition.cnn.com]}]
                    route: [{destination: {host: edition.cnn.com, port: {number: 443}}, weight: 100}]
                """)
        #expect(text.contains("protocol: TLS") && text.contains("sniHosts"))
        let config = try config(text)
        let sidecar = try ProxyConfigGenerator.resources(for: config)
        let listener = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](try #require(sidecar.outboundListeners.first { $0.name == "0.0.0.0_443" }).resource.value))
        func cluster(_ chain: Envoy_Config_Listener_V3_FilterChain) throws -> String {
            try Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy(unpackingAny: chain.filters[0].typedConfig).cluster
        }
        let named = try #require(listener.filterChains.first { $0.filterChainMatch.serverNames == ["edition.cnn.com"] })
        #expect(try cluster(named) == "outbound|443|cnn|istio-egressgateway.shop.svc.cluster.local")
        // The gateway's own name keeps its cluster.
        let own = try #require(listener.filterChains.first { $0.filterChainMatch.serverNames == ["istio-egressgateway.shop.svc.cluster.local"] })
        #expect(try cluster(own) == "outbound|443||istio-egressgateway.shop.svc.cluster.local")
        let gateway = try router(text, labels: ["istio": "egressgateway"])
        let passthrough = try self.listener(gateway, "0.0.0.0_443")
        #expect(passthrough.filterChains.map(\.filterChainMatch.serverNames) == [["edition.cnn.com"]])
        #expect(try cluster(passthrough.filterChains[0]) == "outbound|443||edition.cnn.com")
    }

    /// Istio's egress gateway for TCP with mTLS (its MongoDB task's shape): the sidecar's tcp match for
    /// `mesh` sends 27017 to the gateway's subset over ISTIO_MUTUAL with the service's name as SNI; the
    /// gateway's TLS server on 7777 terminates it (ISTIO_MUTUAL, `istio-peer-exchange` first) and its
    /// own tcp match relays the bytes out to 27017.
    static let tcpEgress = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: mongo, namespace: shop}
        spec:
          hosts: [my-mongo.tcp.svc]
          addresses: [203.0.113.99/32]
          ports: [{number: 27017, name: mongo, protocol: TCP}]
          location: MESH_EXTERNAL
          resolution: STATIC
          endpoints: [{address: 203.0.113.99}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: istio-egressgateway, namespace: shop}
        spec:
          hosts: [istio-egressgateway.shop.svc.cluster.local]
          ports: [{number: 7777, name: tcp, protocol: TCP}]
          resolution: STATIC
          endpoints: [{address: 192.0.2.40, serviceAccount: istio-egressgateway}]
        ---
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: istio-egressgateway, namespace: shop}
        spec:
          selector: {istio: egressgateway}
          servers:
          - port: {number: 7777, name: tls, protocol: TLS}
            hosts: [my-mongo.tcp.svc]
            tls: {mode: ISTIO_MUTUAL}
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: egressgateway-for-mongo, namespace: shop}
        spec:
          host: istio-egressgateway.shop.svc.cluster.local
          subsets:
          - name: mongo
            trafficPolicy:
              portLevelSettings:
              - port: {number: 7777}
                tls: {mode: ISTIO_MUTUAL, sni: my-mongo.tcp.svc}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: direct-mongo-through-egress-gateway, namespace: shop}
        spec:
          hosts: [my-mongo.tcp.svc]
          gateways: [mesh, istio-egressgateway]
          tcp:
          - match: [{gateways: [mesh], port: 27017}]
            route: [{destination: {host: istio-egressgateway.shop.svc.cluster.local, subset: mongo, port: {number: 7777}}}]
          - match: [{gateways: [istio-egressgateway], port: 7777}]
            route: [{destination: {host: my-mongo.tcp.svc, port: {number: 27017}}}]
        """

    @Test func aTLSServerTerminatesIstioMutualBeforeItsTCPRoute() throws {
        let gateway = try router(Self.tcpEgress, labels: ["istio": "egressgateway"])
        #expect(gateway.listeners.map(\.name) == ["0.0.0.0_7777"])
        let listener = try listener(gateway, "0.0.0.0_7777")
        #expect(listener.listenerFilters.map(\.name) == ["envoy.filters.listener.tls_inspector"])
        #expect(listener.filterChains.map(\.filterChainMatch.serverNames) == [["my-mongo.tcp.svc"]])
        let context = try Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext(unpackingAny: listener.filterChains[0].transportSocket.typedConfig)
        #expect(context.commonTlsContext.alpnProtocols == ["istio-peer-exchange", "h2", "http/1.1"])
        #expect(context.requireClientCertificate.value && context.commonTlsContext.tlsCertificateSdsSecretConfigs.map(\.name) == ["default"])
        let proxy = try Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy(unpackingAny: listener.filterChains[0].filters[0].typedConfig)
        #expect(proxy.cluster == "outbound|27017||my-mongo.tcp.svc")
        _ = try XDSResourceDecoder.listeners(gateway.listeners.map(\.resource))
        // The sidecar: its chain for the service's address takes the `mesh` match, to the gateway's subset, over ISTIO_MUTUAL with the SNI.
        let sidecar = try ProxyConfigGenerator.resources(for: try config(Self.tcpEgress))
        let outbound = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](sidecar.outboundListener.resource.value))
        let chain = try #require(outbound.filterChains.first { $0.filterChainMatch.destinationPort.value == 27017 })
        #expect(try Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy(unpackingAny: chain.filters.last!.typedConfig).cluster
                == "outbound|7777|mongo|istio-egressgateway.shop.svc.cluster.local")
        let subset = try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](try #require(sidecar.clusters.first {
            $0.name == "outbound|7777|mongo|istio-egressgateway.shop.svc.cluster.local" }).resource.value))
        #expect(try Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext(unpackingAny: subset.transportSocket.typedConfig).sni == "my-mongo.tcp.svc")
        // No tcp route bound for the TLS server: no listener.
        let unbound = Self.tcpEgress.replacingOccurrences(of: "gateways: [mesh, istio-egressgateway]", with: "gateways: [mesh]")
        #expect(try router(unbound, labels: ["istio": "egressgateway"]).listeners.isEmpty)
    }
}
