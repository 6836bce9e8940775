import Foundation
@testable import ControlPlane
@testable import DataPlane
import HTTPTypes
import NIOCore
import Routing
import SwiftProtobuf
import Testing
import XDS

@Suite struct HTTPRouteGeneratorTests {
    static let istioDump = "/work/shared/istio-config/sidecar-istio1.20.8-hello-openshift.config_dump.json"

    func resources(_ text: String) throws -> MeshResources {
        let reading = MeshConfigReader.read([("mesh.yaml", text)])
        let config = try #require(reading.config, "\(reading.problems)")
        return try ProxyConfigGenerator.resources(for: config)
    }

    func routeTable(_ resources: MeshResources, _ name: String) throws -> RouteTable {
        let resource = try #require(resources.routes.first { $0.name == name }, "no RDS \(name) in \(resources.routes.map(\.name))")
        return try RouteTable(Envoy_Config_Route_V3_RouteConfiguration(serializedBytes: [UInt8](resource.resource.value)))
    }

    func request(_ authority: String, _ path: String = "/", headers: [(String, String)] = []) -> HTTPRequest {
        var fields = HTTPFields()
        for (name, value) in headers { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        return HTTPRequest(method: .get, scheme: "http", authority: authority, path: path, headerFields: fields)
    }

    /// The istiod dump's resources of one type, as JSON objects.
    static func istiod(_ kind: String) throws -> [[String: Any]] {
        let dump = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: istioDump))) as! [String: Any]
        let configs = dump["configs"] as! [[String: Any]]
        switch kind {
        case "listeners":
            let section = configs.first { ($0["@type"] as? String)?.hasSuffix("ListenersConfigDump") == true }!
            return (section["dynamic_listeners"] as! [[String: Any]]).compactMap { ($0["active_state"] as? [String: Any])?["listener"] as? [String: Any] }
        default:
            let section = configs.first { ($0["@type"] as? String)?.hasSuffix(".RoutesConfigDump") == true }!
            return (section["dynamic_route_configs"] as! [[String: Any]]).map { $0["route_config"] as! [String: Any] }
        }
    }

    @Test func protocolsAreSelectedAsIstioSelectsThem() {
        let cases: [(String?, String, ServiceProtocol)] = [
            (nil, "http", .http), (nil, "http-web", .http), (nil, "HTTP2-api", .http2), (nil, "grpc", .grpc),
            (nil, "grpc-web-ui", .grpcWeb), (nil, "grpc-ledger", .grpc), (nil, "tcp-db", .tcp), (nil, "tls", .tls),
            (nil, "https-api", .https), (nil, "mongo", .mongo), (nil, "mysql-main", .mysql), (nil, "redis", .redis),
            (nil, "web", .unknown), (nil, "httpweb", .unknown), (nil, "port-8080", .unknown),
            ("HTTP", "tcp-db", .http), ("gRPC", "web", .grpc), ("TCP", "http-web", .tcp), ("UDP", "http", .http),
        ]
        for (declared, name, expected) in cases {
            #expect(ServiceProtocol.selected(declared: declared, name: name) == expected, "\(declared ?? "-") \(name)")
        }
    }

    @Test func anHTTPPortGetsIstiodsListenerLayout() throws {
        let resources = try resources(HTTPDocuments.mesh([HTTPDocuments.canary]))
        #expect(resources.outboundListeners.map(\.name) == ["virtualOutbound", "0.0.0.0_7070", "0.0.0.0_9080", "[::]_9080"])
        #expect(resources.routes.map(\.name) == ["7070", "9080"])
        let listener = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](resources.outboundListeners[2].resource.value))
        #expect(listener.name == "0.0.0.0_9080")
        // The HTTP service has no chain of its own on virtualOutbound: it hands the connection off by port.
        let outbound = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](resources.outboundListener.resource.value))
        #expect(outbound.filterChains.isEmpty)

        // Field by field against istiod's 0.0.0.0_80.
        let istiod = try #require(try Self.istiod("listeners").first { $0["name"] as? String == "0.0.0.0_80" })
        #expect(listener.bindToPort.value == (istiod["bind_to_port"] as? Bool))
        #expect(listener.trafficDirection == .outbound && istiod["traffic_direction"] as? String == "OUTBOUND")
        #expect(listener.listenerFilters.map(\.name) == (istiod["listener_filters"] as! [[String: Any]]).map { $0["name"] as! String })
        let istiodChain = (istiod["filter_chains"] as! [[String: Any]])[0]
        let istiodMatch = istiodChain["filter_chain_match"] as! [String: Any]
        #expect(listener.filterChains.count == 1)
        #expect(listener.filterChains[0].filterChainMatch.transportProtocol == istiodMatch["transport_protocol"] as? String)
        #expect(listener.filterChains[0].filterChainMatch.applicationProtocols == istiodMatch["application_protocols"] as? [String])
        #expect(listener.defaultFilterChain.name == (istiod["default_filter_chain"] as! [String: Any])["name"] as? String)
        let manager = try Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager(
            unpackingAny: listener.filterChains[0].filters[0].typedConfig)
        let istiodManager = ((istiodChain["filters"] as! [[String: Any]])[0]["typed_config"]) as! [String: Any]
        #expect(manager.statPrefix == "outbound_0.0.0.0_9080" && istiodManager["stat_prefix"] as? String == "outbound_0.0.0.0_80")
        #expect(manager.rds.routeConfigName == "9080")
        #expect(manager.streamIdleTimeout == Google_Protobuf_Duration(seconds: 0) && istiodManager["stream_idle_timeout"] as? String == "0s")
        #expect(manager.useRemoteAddress.value == istiodManager["use_remote_address"] as? Bool)
        // istiod's filters, of those the proxy acts on, in istiod's order.
        let istiodFilters = (istiodManager["http_filters"] as! [[String: Any]]).map { $0["name"] as! String }
        #expect(manager.httpFilters.map(\.name) == istiodFilters.filter { ["istio.alpn", "envoy.filters.http.fault", "envoy.filters.http.cors", "envoy.filters.http.router"].contains($0) })

        // The proxy takes it whole: no refusal.
        let inbound = try ProxyConfigGenerator.inboundListener(resources.inbound(ip: "198.51.100.10", namespace: "shop"), transparent: false)
        let decoded = try XDSResourceDecoder.listeners(resources.outboundListeners.map(\.resource) + [inbound.resource])
        #expect(decoded.map(\.name) == ["virtualOutbound", "0.0.0.0_7070", "0.0.0.0_9080", "[::]_9080", "virtualInbound"])
        _ = try XDSResourceDecoder.routeConfigurations(resources.routes.map(\.resource))
        _ = try XDSResourceDecoder.clusters(resources.clusters.map(\.resource))
    }

    @Test func theRouteConfigurationHasIstiodsNamesAndDefaults() throws {
        let resources = try resources(HTTPDocuments.mesh())
        let resource = try #require(resources.routes.first { $0.name == "9080" })
        let routes = try Envoy_Config_Route_V3_RouteConfiguration(serializedBytes: [UInt8](resource.resource.value))
        #expect(routes.virtualHosts.map(\.name) == ["payments.shop.svc.cluster.local:9080", "allow_any"])
        #expect(routes.virtualHosts[0].domains == ["payments.shop.svc.cluster.local", "payments.shop.svc", "payments.shop", "payments", "198.51.100.200"])
        // A second payments, in billing, on the same port: neither gets the bare name.
        let billing = HTTPDocuments.serviceEntry.replacingOccurrences(of: "namespace: shop", with: "namespace: billing")
            .replacingOccurrences(of: "198.51.100.200, 2001:db8:200::/64", with: "198.51.100.210")
        let both = try Envoy_Config_Route_V3_RouteConfiguration(serializedBytes: [UInt8](try #require(
            try self.resources(HTTPDocuments.mesh([billing])).routes.first { $0.name == "9080" }).resource.value))
        #expect(both.virtualHosts.map { $0.domains.contains("payments") } == [false, false, false])

        let istiod = try #require(try Self.istiod("routes").first { $0["name"] as? String == "9090" })
        #expect(routes.validateClusters.value == istiod["validate_clusters"] as? Bool)
        #expect(Int(routes.maxDirectResponseBodySizeBytes.value) == istiod["max_direct_response_body_size_bytes"] as? Int)
        #expect(routes.ignorePortInHostMatching == istiod["ignore_port_in_host_matching"] as? Bool)
        let istiodHosts = istiod["virtual_hosts"] as! [[String: Any]]
        // kiali.istio-system.svc.cluster.local:9090: its domains follow the same pattern.
        #expect(istiodHosts[0]["domains"] as? [String] == ["kiali.istio-system.svc.cluster.local", "kiali.istio-system",
                                                           "kiali.istio-system.svc", "172.30.244.61"])
        let istiodDefault = (istiodHosts[0]["routes"] as! [[String: Any]])[0]
        let route = routes.virtualHosts[0].routes[0]
        #expect(route.name == istiodDefault["name"] as? String)
        #expect(route.match.prefix == (istiodDefault["match"] as! [String: Any])["prefix"] as? String)
        #expect(route.route.cluster == "outbound|9080||payments.shop.svc.cluster.local")
        let istiodAction = istiodDefault["route"] as! [String: Any]
        #expect(istiodAction["timeout"] as? String == "0s" && route.route.timeout == Google_Protobuf_Duration(seconds: 0))
        #expect(istiodAction["max_grpc_timeout"] as? String == "0s" && route.route.maxGrpcTimeout == Google_Protobuf_Duration(seconds: 0))
        let istiodRetry = istiodAction["retry_policy"] as! [String: Any]
        let retry = route.route.retryPolicy
        #expect(retry.retryOn == istiodRetry["retry_on"] as? String)
        #expect(Int(retry.numRetries.value) == istiodRetry["num_retries"] as? Int)
        #expect(retry.retryHostPredicate.map(\.name) == (istiodRetry["retry_host_predicate"] as! [[String: Any]]).map { $0["name"] as! String })
        #expect(String(retry.hostSelectionRetryMaxAttempts) == istiodRetry["host_selection_retry_max_attempts"] as? String)
        #expect(retry.retriableStatusCodes.map(Int.init) == istiodRetry["retriable_status_codes"] as? [Int])
        #expect(routes.virtualHosts[0].includeRequestAttemptCount == istiodHosts[0]["include_request_attempt_count"] as? Bool)
        // allow_any, as istiod's.
        let istiodAny = try #require(istiodHosts.last)
        let any = routes.virtualHosts[1]
        #expect(any.domains == istiodAny["domains"] as? [String])
        let istiodAnyRoute = (istiodAny["routes"] as! [[String: Any]])[0]
        #expect(any.routes[0].name == istiodAnyRoute["name"] as? String)
        #expect(any.routes[0].route.cluster == (istiodAnyRoute["route"] as! [String: Any])["cluster"] as? String)
    }

    @Test func clustersSpeakHTTP2ForGRPCPortsAndUpgradedSubsets() throws {
        let resources = try resources(HTTPDocuments.mesh())
        func http2(_ name: String) throws -> Bool {
            let resource = try #require(resources.clusters.first { $0.name == name })
            let cluster = try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](resource.resource.value))
            guard let any = cluster.typedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"] else { return false }
            let options = try Envoy_Extensions_Upstreams_Http_V3_HttpProtocolOptions(unpackingAny: any)
            if case .http2ProtocolOptions? = options.explicitHTTPConfig.protocolConfig { return true }
            return false
        }
        #expect(try http2("outbound|7070||ledger.billing.svc.cluster.local"))
        // istio.services, as istiod's clusters carry it (the proxy's destination_service).
        let payments = try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](try #require(
            resources.clusters.first { $0.name == "outbound|9080|v1|payments.shop.svc.cluster.local" }).resource.value))
        let service = payments.metadata.filterMetadata["istio"]?.fields["services"]?.listValue.values.first?.structValue.fields
        #expect(service?["host"]?.stringValue == "payments.shop.svc.cluster.local")
        #expect(service?["name"]?.stringValue == "payments" && service?["namespace"]?.stringValue == "shop")
        #expect(try !http2("outbound|9080||payments.shop.svc.cluster.local"))
        #expect(try !http2("outbound|9080|v1|payments.shop.svc.cluster.local"))
        #expect(try http2("outbound|9080|v2|payments.shop.svc.cluster.local"))
        // istiod's gRPC cluster (istiod's own xDS port) has the same option.
        let dump = try String(contentsOfFile: Self.istioDump, encoding: .utf8)
        #expect(dump.contains(#""explicit_http_config": {"#))
    }

    @Test func virtualServiceRoutesApplyInOrderPerRequest() throws {
        let resources = try resources(HTTPDocuments.mesh([HTTPDocuments.virtualService("""
              - name: jason
                match:
                - headers: {end-user: {exact: jason}}
                route: [{destination: {host: payments, subset: v2}}]
              - name: stable
                match:
                - uri: {prefix: /v1/}
                - uri: {regex: "/api/[0-9]+"}
                  ignoreUriCase: true
                rewrite: {uri: /, authority: payments.internal}
                route: [{destination: {host: payments, subset: v1}}]
              - match: [{uri: {exact: /old}}]
                redirect: {uri: /new, redirectCode: 308}
              - match: [{uri: {prefix: /teapot}, method: {exact: POST}}]
                directResponse: {status: 418, body: {string: short and stout}}
              - match: [{uri: {prefix: /users/}}]
                rewrite: {uriRegexRewrite: {match: "^/users/([0-9]+)$", rewrite: "/u/\\\\1"}}
                route: [{destination: {host: payments, subset: v1}}]
              - match: [{port: 7070}]
                route: [{destination: {host: ledger.billing.svc.cluster.local}}]
              - headers:
                  request: {set: {x-canary: "yes"}, remove: [x-debug]}
                route:
                - {destination: {host: payments, subset: v1}, weight: 90}
                - {destination: {host: payments, subset: v2}, weight: 10, headers: {response: {add: {x-version: v2}}}}
            """)]))
        let table = try routeTable(resources, "9080")
        let host = "198.51.100.200:9080"
        #expect(table.route(request(host, headers: [("end-user", "jason")]), randomValue: 0)?.cluster == "outbound|9080|v2|payments.shop.svc.cluster.local")
        #expect(table.route(request(host, headers: [("end-user", "jason")]), randomValue: 0)?.routeName == "jason")
        let stable = try #require(table.route(request(host, "/v1/pay"), randomValue: 0))
        #expect(stable.cluster == "outbound|9080|v1|payments.shop.svc.cluster.local")
        #expect(stable.routeName == "stable")
        #expect(table.route(request(host, "/API/42"), randomValue: 0)?.routeName == "stable")
        if case .forward(let forwarding) = stable.action {
            #expect(forwarding.rewrittenPath("/v1/pay") == "/pay")
            #expect(forwarding.hostRewrite == "payments.internal")
        } else {
            Issue.record("stable forwards: \(stable.action)")
        }
        if case .redirect = try #require(table.route(request(host, "/old"), randomValue: 0)).action {} else { Issue.record("/old redirects") }
        if case .forward(let forwarding) = try #require(table.route(request(host, "/users/42"), randomValue: 0)).action {
            #expect(forwarding.rewrittenPath("/users/42") == "/u/42")
        } else {
            Issue.record("/users/42 forwards")
        }
        // The port-7070 route is not in port 9080's table: requests fall to the weighted one.
        var byCluster: [String: Int] = [:]
        for value in stride(from: UInt64(0), to: 1000, by: 1) {
            byCluster[table.route(request("payments.shop", "/x"), randomValue: value)?.cluster ?? "none", default: 0] += 1
        }
        #expect(byCluster == ["outbound|9080|v1|payments.shop.svc.cluster.local": 900, "outbound|9080|v2|payments.shop.svc.cluster.local": 100])

        let routes = try Envoy_Config_Route_V3_RouteConfiguration(serializedBytes: [UInt8](resources.routes.first { $0.name == "9080" }!.resource.value))
        let payments = routes.virtualHosts[0].routes
        #expect(payments.map(\.name) == ["jason", "stable", "stable", "", "", "", ""])
        #expect(payments[2].match.caseSensitive.value == false && payments[2].match.safeRegex.regex == "(?i)/api/[0-9]+")
        #expect(payments[4].match.headers.map(\.name) == [":method"])
        #expect(payments[6].requestHeadersToAdd.map { "\($0.header.key)=\($0.header.value) \($0.appendAction)" } == ["x-canary=yes overwriteIfExistsOrAdd"])
        #expect(payments[6].requestHeadersToRemove == ["x-debug"])
        #expect(payments[6].route.weightedClusters.clusters[1].responseHeadersToAdd.map(\.header.key) == ["x-version"])
        // Port 7070 (ledger's) has the payments host too? No: only services on that port.
        #expect(try routeTable(resources, "7070").route(request("198.51.100.201:7070"), randomValue: 0)?.cluster
            == "outbound|7070||ledger.billing.svc.cluster.local")
    }

    @Test func inboundHTTPPortsEndInAConnectionManagerToTheInboundCluster() throws {
        let resources = try resources(HTTPDocuments.mesh())
        let inbound = try ProxyConfigGenerator.inboundListener(resources.inbound(ip: "198.51.100.10", namespace: "shop"), transparent: false)
        let listener = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](inbound.resource.value))
        let chain = try #require(listener.filterChains.first { $0.filterChainMatch.destinationPort.value == 8080 })
        #expect(chain.filters.map(\.name) == ["envoy.filters.network.http_connection_manager"])
        let manager = try Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager(unpackingAny: chain.filters[0].typedConfig)
        #expect(manager.statPrefix == "inbound_0.0.0.0_8080")
        #expect(manager.routeConfig.name == "inbound|8080||")
        #expect(manager.routeConfig.virtualHosts.map(\.name) == ["inbound|http|8080"])
        #expect(manager.routeConfig.virtualHosts[0].routes[0].route.cluster == "inbound|8080||")
        #expect(manager.forwardClientCertDetails == .appendForward)
    }

    @Test func theStoreServesRoutesAndVersionsThemByContent() throws {
        let store = MeshSnapshotStore()
        #expect(store.update(try resources(HTTPDocuments.mesh([HTTPDocuments.canary]))) == [.cluster, .endpoint, .listener, .route, .nameTable])
        var node = Envoy_Config_Core_V3_Node()
        node.id = "sidecar~192.0.2.1~client.shop~shop.svc.cluster.local"
        #expect(store.snapshot(for: node).types[.route]?.resources.map(\.name) == ["7070", "9080"])
        let changed = HTTPDocuments.canary.replacingOccurrences(of: "weight: 90", with: "weight: 50").replacingOccurrences(of: "weight: 10", with: "weight: 50")
        #expect(store.update(try resources(HTTPDocuments.mesh([changed]))) == [.route])
        #expect(store.snapshot(for: node).types[.route]?.version == "2")
        #expect(store.snapshot(for: node).types[.listener]?.version == "1")
    }

    /// `sourceLabels` and `sourceNamespace`: each sidecar gets the routes for its own workload, as istiod
    /// builds them per proxy (labels from the node's `LABELS`, namespace from its id); a caller no match
    /// names gets the rest. A change only to who is named is pushed as a route change.
    @Test func routesByCallerAreMadePerSidecar() throws {
        let routes = HTTPDocuments.virtualService("""
              - match: [{sourceLabels: {app: web}, uri: {prefix: /}}, {sourceNamespace: ops, uri: {prefix: /ops}}]
                route: [{destination: {host: payments, subset: v2}}]
              - route: [{destination: {host: payments, subset: v1}}]
            """)
        let store = MeshSnapshotStore()
        store.update(try resources(HTTPDocuments.mesh([routes])))
        func clusters(_ id: String, labels: [String: String]) throws -> [String] {
            var node = Envoy_Config_Core_V3_Node()
            node.id = id
            if !labels.isEmpty {
                node.metadata.fields["LABELS"] = .init(structValue: .with { $0.fields = labels.mapValues { .init(stringValue: $0) } })
            }
            let resource = try #require(store.snapshot(for: node).types[.route]?.resources.first { $0.name == "9080" }?.resource)
            let config = try Envoy_Config_Route_V3_RouteConfiguration(unpackingAny: resource)
            let host = try #require(config.virtualHosts.first { $0.name.hasPrefix("payments.shop") })
            return host.routes.map { $0.route.cluster }
        }
        let v1 = "outbound|9080|v1|payments.shop.svc.cluster.local", v2 = "outbound|9080|v2|payments.shop.svc.cluster.local"
        #expect(try clusters("sidecar~192.0.2.1~web-1.shop~shop.svc.cluster.local", labels: ["app": "web", "version": "v3"]) == [v2, v1])
        #expect(try clusters("sidecar~192.0.2.2~api-1.shop~shop.svc.cluster.local", labels: ["app": "api"]) == [v1])
        #expect(try clusters("sidecar~192.0.2.3~tool-1.ops~ops.svc.cluster.local", labels: [:]) == [v2, v1])
        let renamed = routes.replacingOccurrences(of: "app: web", with: "app: api")
        #expect(store.update(try resources(HTTPDocuments.mesh([renamed]))) == [.route])
        #expect(try clusters("sidecar~192.0.2.2~api-1.shop~shop.svc.cluster.local", labels: ["app": "api"]) == [v2, v1])
    }

    @Test func aPortWithNoProtocolIsSniffedAsIstiodSniffsIt() throws {
        let web = """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: web, namespace: shop}
            spec:
              hosts: [web]
              addresses: [198.51.100.202]
              ports: [{number: 8080, name: web}]
              resolution: STATIC
              endpoints: [{address: 198.51.100.60, labels: {security.istio.io/tlsMode: istio}}]
            """
        let reading = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([web]))])
        #expect(reading.warnings.contains { $0.contains("spec.ports[0]: no protocol") }, "\(reading.warnings)")
        let resources = try resources(HTTPDocuments.mesh([web]))
        let resource = try #require(resources.outboundListeners.first { $0.name == "198.51.100.202_8080" })
        let listener = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](resource.resource.value))
        // Field by field against istiod's 172.30.32.106_8080 (curl-test, a port named nothing Istio knows).
        let istiod = try #require(try Self.istiod("listeners").first { $0["name"] as? String == "172.30.32.106_8080" })
        #expect(listener.bindToPort.value == istiod["bind_to_port"] as? Bool)
        #expect(listener.listenerFilters.map(\.name) == (istiod["listener_filters"] as! [[String: Any]]).map { $0["name"] as! String })
        let istiodChain = (istiod["filter_chains"] as! [[String: Any]])[0]
        let istiodMatch = istiodChain["filter_chain_match"] as! [String: Any]
        #expect(listener.filterChains.map(\.filterChainMatch.applicationProtocols) == [istiodMatch["application_protocols"] as! [String]])
        let manager = try Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager(
            unpackingAny: listener.filterChains[0].filters[0].typedConfig)
        let istiodManager = ((istiodChain["filters"] as! [[String: Any]])[0]["typed_config"]) as! [String: Any]
        #expect(manager.statPrefix == "outbound_198.51.100.202_8080" && istiodManager["stat_prefix"] as? String == "outbound_172.30.32.106_8080")
        #expect(manager.rds.routeConfigName == "web.shop.svc.cluster.local:8080")
        #expect((istiodManager["rds"] as! [String: Any])["route_config_name"] as? String == "curl-test.vanilla-playground.svc.cluster.local:8080")
        let tcp = try Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy(unpackingAny: listener.defaultFilterChain.filters[0].typedConfig)
        #expect(tcp.cluster == "outbound|8080||web.shop.svc.cluster.local" && tcp.statPrefix == tcp.cluster)
        let istiodTCP = ((istiod["default_filter_chain"] as! [String: Any])["filters"] as! [[String: Any]]).last!["typed_config"] as! [String: Any]
        #expect(istiodTCP["cluster"] as? String == istiodTCP["stat_prefix"] as? String)

        let routes = try Envoy_Config_Route_V3_RouteConfiguration(serializedBytes: [UInt8](try #require(resources.routes.first { $0.name == "web.shop.svc.cluster.local:8080" }).resource.value))
        let istiodRoutes = try #require(try Self.istiod("routes").first { $0["name"] as? String == "curl-test.vanilla-playground.svc.cluster.local:8080" })
        let istiodHost = (istiodRoutes["virtual_hosts"] as! [[String: Any]])[0]
        #expect(routes.virtualHosts.map(\.name) == ["web.shop.svc.cluster.local:8080"])
        #expect(routes.virtualHosts[0].domains == istiodHost["domains"] as? [String])
        #expect(routes.virtualHosts[0].routes.map(\.name) == (istiodHost["routes"] as! [[String: Any]]).map { $0["name"] as! String })

        let cluster = try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](try #require(resources.clusters.first { $0.name == "outbound|8080||web.shop.svc.cluster.local" }).resource.value))
        let options = try Envoy_Extensions_Upstreams_Http_V3_HttpProtocolOptions(
            unpackingAny: try #require(cluster.typedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]))
        #expect(options.useDownstreamProtocolConfig.hasHTTPProtocolOptions && options.useDownstreamProtocolConfig.hasHTTP2ProtocolOptions)

        // Inbound: HTTP chains (by ALPN over mTLS, by http_inspector in plaintext) before the TCP ones.
        let inbound = try ProxyConfigGenerator.inboundListener(resources.inbound(ip: "198.51.100.60", namespace: "shop"), transparent: false)
        let inboundListener = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](inbound.resource.value))
        #expect(inboundListener.listenerFilters.map(\.name) == ["envoy.filters.listener.tls_inspector", "envoy.filters.listener.http_inspector"])
        let port8080 = inboundListener.filterChains.filter { $0.filterChainMatch.destinationPort.value == 8080 }
        #expect(port8080.map { "\($0.filterChainMatch.transportProtocol) \($0.filterChainMatch.applicationProtocols) \($0.filters[0].name)" } == [
            "tls [\"istio-http/1.0\", \"istio-http/1.1\", \"istio-h2\"] envoy.filters.network.http_connection_manager",
            "raw_buffer [\"http/1.1\", \"h2c\"] envoy.filters.network.http_connection_manager",
            "tls [] envoy.filters.network.tcp_proxy", "raw_buffer [] envoy.filters.network.tcp_proxy",
        ])
        _ = try XDSResourceDecoder.listeners(resources.outboundListeners.map(\.resource) + [inbound.resource])
        _ = try XDSResourceDecoder.routeConfigurations(resources.routes.map(\.resource))
        _ = try XDSResourceDecoder.clusters(resources.clusters.map(\.resource))
    }

    @Test func aTCPServiceOnAnHTTPPortKeepsItsAddressesInThatPortsListener() throws {
        // virtualOutbound hands every connection to port 9080 to 0.0.0.0_9080: the TCP service there
        // must be found by its address before the HTTP chain takes the rest.
        let ledger = """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: ledger, namespace: shop}
            spec:
              hosts: [ledger]
              addresses: [198.51.100.220]
              ports: [{number: 9080, name: tcp-ledger}]
              resolution: STATIC
              endpoints: [{address: 198.51.100.60}]
            """
        let resources = try resources(HTTPDocuments.mesh([ledger]))
        let listeners = try XDSResourceDecoder.listeners(resources.outboundListeners.map(\.resource))
        let port = try #require(listeners.first { $0.name == "0.0.0.0_9080" })
        let http = TransportDetection(transportProtocol: "raw_buffer", applicationProtocols: ["http/1.1"])
        func action(_ address: String) throws -> String {
            switch try #require(port.chain(for: try SocketAddress(ipAddress: address, port: 9080), detected: http)).action {
            case .relay(.cluster(let cluster)): return cluster
            case .relay: return "weighted"
            case .http(let manager): return manager.statPrefix
            }
        }
        #expect(try action("198.51.100.220") == "outbound|9080||ledger.shop.svc.cluster.local")
        #expect(try action("198.51.100.200") == "outbound_0.0.0.0_9080")
        #expect(try action("203.0.113.7") == "outbound_0.0.0.0_9080")
        // payments also has 2001:db8:200::/64: IPv6 clients are handed off to `[::]_9080`, the same HTTP listener.
        let ipv6 = try #require(listeners.first { $0.name == "[::]_9080" })
        #expect(ipv6.host == "::" && !ipv6.bindsToPort)
        let chain = try #require(ipv6.chain(for: try SocketAddress(ipAddress: "2001:db8:200::5", port: 9080), detected: http))
        if case .http(let manager) = chain.action { #expect(manager.statPrefix == "outbound_0.0.0.0_9080") } else { Issue.record("\(chain.action)") }
    }
}
