import Configuration
@testable import DataPlane
import Foundation
import HTTPProxy
import NIOCore
import Routing
import SwiftProtobuf
import Testing
import XDS

/// Every listener and cluster istiod 1.20.8 sent a sidecar and an ingress gateway goes through the one
/// decoder without a refusal: HTTP chains serve HTTP with their RDS name or inline routes, the
/// per-service listeners take connections handed off by `virtualOutbound`, and clusters keep their
/// transport socket matches and upstream HTTP version.
@Suite struct IstioHTTPConfigurationTests {
    /// The dump's listeners as the decoder reads them. Static listeners are unnamed in the dump (Envoy
    /// names them itself); they get Istio's bootstrap names (`0.0.0.0_15090`).
    static func listeners(in file: String) throws -> [(json: [String: Any], listener: BootstrapConfig.Listener)] {
        _ = XDSResourceDecoder.messageTypesRegistered
        return try IstioDumps.listeners(in: file).map { resource in
            var proto = try IstioDumps.message(resource.json, as: Envoy_Config_Listener_V3_Listener.self)
            if proto.name.isEmpty { proto.name = "0.0.0.0_\(proto.address.socketAddress.portValue)" }
            return (resource.json, try XDSResourceDecoder.listener(proto))
        }
    }

    static func clusters(in file: String) throws -> [BootstrapConfig.Cluster] {
        _ = XDSResourceDecoder.messageTypesRegistered
        return try IstioDumps.clusters(in: file).enumerated().map { index, resource in
            let proto = try IstioDumps.message(resource.json, as: Envoy_Config_Cluster_V3_Cluster.self)
            return try XDSResourceDecoder.cluster(proto, path: resource.isStatic ? "static_resources.clusters[\(index)]" : nil).cluster
        }
    }

    @Test(arguments: IstioDumps.files)
    func everyListenerDecodesAndItsHTTPChainsServeHTTP(file: String) throws {
        let decoded = try Self.listeners(in: file)
        #expect(!decoded.isEmpty)
        var httpChains = 0
        for (json, listener) in decoded {
            let chains = (json["filter_chains"] as? [[String: Any]] ?? []) + [json["default_filter_chain"] as? [String: Any]].compactMap { $0 }
            #expect(chains.count == listener.allChains.count, "\(listener.name)")
            for (chainJSON, chain) in zip(chains, listener.allChains) {
                let last = try #require((chainJSON["filters"] as? [[String: Any]])?.last)
                let typed = last["typed_config"] as? [String: Any] ?? [:]
                guard last["name"] as? String == "envoy.filters.network.http_connection_manager" else {
                    #expect(chain.route != nil, "\(listener.name) \(chain.name)")
                    continue
                }
                httpChains += 1
                let manager = try #require(chain.httpConnectionManager, "\(listener.name) \(chain.name)")
                #expect(manager.statPrefix == typed["stat_prefix"] as? String)
                if let rds = typed["rds"] as? [String: Any] {
                    #expect(manager.discoveredRouteName == rds["route_config_name"] as? String)
                } else {
                    guard case .inline(let table) = manager.routes else { Issue.record("\(listener.name): no inline routes"); continue }
                    #expect(table.name == (typed["route_config"] as? [String: Any])?["name"] as? String ?? "")
                }
                guard case .router? = manager.filters.last?.behaviour else { Issue.record("\(listener.name): router not last"); continue }
                #expect(manager.filters.map(\.name) == (typed["http_filters"] as? [[String: Any]] ?? []).map { $0["name"] as? String ?? "" })
            }
        }
        #expect(httpChains > 0)
    }

    @Test func theSidecarsListenersAreIstiodsShapes() throws {
        let listeners = Dictionary(uniqueKeysWithValues: try Self.listeners(in: IstioDumps.sidecar).map { ($0.listener.name, $0.listener) })
        let outbound = try #require(listeners["virtualOutbound"])
        #expect(outbound.usesOriginalDestination && outbound.bindsToPort && outbound.port == 15001)

        // A per-port HTTP listener: no socket, HTTP detected, routes from RDS.
        let http = try #require(listeners["0.0.0.0_8188"])
        #expect(!http.bindsToPort && http.host == "0.0.0.0" && http.inspectsHTTP && http.inspectsTLS)
        let manager = try #require(http.chains.first?.httpConnectionManager)
        #expect(manager.discoveredRouteName == "8188")
        #expect(manager.serverName == "envoy" && manager.streamIdleTimeout == nil && manager.normalizesPath)
        #expect(manager.upgradeTypes == ["websocket"] && manager.generatesRequestID && manager.maxConcurrentStreams == 1024)
        #expect(manager.maxRequestHeadersBytes == 60 * 1024 && manager.maxHeadersCount == 100)
        #expect(http.routeConfigNames == ["8188"])
        let notActedOn = http.fieldsNotActedOn.map(\.path)
        for field in ["tracing", "request_id_extension", "rds.config_source.initial_fetch_timeout",
                      "http_filters[0]", "http_filters[1]", "http_filters[5]"] {
            #expect(notActedOn.contains("filter_chains[0].filters[0].typed_config.\(field)"), "\(field): \(notActedOn)")
        }
        // istio.alpn, the fault and the CORS filters are acted on: upstream TLS offers Istio's ALPN for the
        // request's HTTP version, routes' faults are injected and their CORS policies applied.
        #expect(!notActedOn.contains { ["http_filters[2]", "http_filters[3]", "http_filters[4]", "http_filters[6]"].contains(where: $0.hasSuffix) })
        #expect(manager.filters.contains { if case .fault = $0.behaviour { $0.name == "envoy.filters.http.fault" } else { false } })
        #expect(manager.filters.contains { if case .cors = $0.behaviour { $0.name == "envoy.filters.http.cors" } else { false } })
        #expect(manager.upstreamALPN(for: .http1) == ["istio-http/1.1", "istio", "http/1.1"])
        #expect(manager.upstreamALPN(for: .http2) == ["istio-h2", "istio", "h2"])
        #expect(http.fieldsNotActedOn.first { $0.path.hasSuffix("http_filters[5]") }?.reason.hasPrefix("\"istio.stats\" (stats.PluginConfig)") == true)
        // istio.stats before tcp_proxy in the passthrough chain.
        #expect(notActedOn.contains("default_filter_chain.filters[0]"))

        // A per-service TCP listener on the service's address.
        let tcp = try #require(listeners["172.30.22.177_443"])
        #expect(!tcp.bindsToPort && tcp.host == "172.30.22.177" && tcp.port == 443 && tcp.statName == "172.30.22.177_443")

        // The inbound HTTP chain: Istio's server name and client certificate forwarding.
        let inbound = try #require(listeners["virtualInbound"])
        let catchAll = try #require(inbound.chains.first { $0.name == "virtualInbound-catchall-http" }?.httpConnectionManager)
        #expect(catchAll.serverName == "istio-envoy" && catchAll.forwardClientCert == .appendForward)
        #expect(catchAll.clientCertDetails.subject && catchAll.clientCertDetails.dns && catchAll.clientCertDetails.uri && !catchAll.clientCertDetails.cert)
        guard case .inline(let table) = catchAll.routes else { Issue.record("not inline"); return }
        #expect(table.name == "InboundPassthroughClusterIpv4")
    }

    /// The hand-off with the sidecar's own listeners: a connection `virtualOutbound` accepts goes to the
    /// listener on its destination's address and port, else the one on 0.0.0.0 and its port, else
    /// stays.
    @Test func virtualOutboundHandsConnectionsToTheListenerOfTheirDestination() throws {
        let config = BootstrapConfig(listeners: try Self.listeners(in: IstioDumps.sidecar).map(\.listener),
                                     clusters: [], adminPort: nil, dynamicResources: nil, warnings: [])
        let runtime = ProxyRuntime(options: ProxyOptions(), config: config)
        let configuration = runtime.configuration
        func served(_ ip: String, _ port: Int, accepting: String = "virtualOutbound") throws -> String {
            runtime.listener(handingOff: accepting, destination: try SocketAddress(ipAddress: ip, port: port), in: configuration)
        }
        #expect(try served("172.30.32.106", 8080) == "172.30.32.106_8080")
        #expect(try served("172.30.178.23", 8080) == "172.30.178.23_8080")
        #expect(try served("172.30.99.99", 8188) == "0.0.0.0_8188")
        #expect(try served("172.30.99.99", 8080) == "virtualOutbound")
        #expect(try served("198.51.100.1", 12345) == "virtualOutbound")
        // Only a listener with use_original_dst hands off.
        #expect(try served("172.30.32.106", 8080, accepting: "virtualInbound") == "virtualInbound")
        // Listeners that do not bind are no loop: their ports are nobody's socket.
        #expect(!runtime.configuration.listeners.values.contains { $0.bindsToPort && $0.port == 8080 })
    }

    @Test(arguments: IstioDumps.files)
    func everyClusterDecodesWithItsTransportSocketMatchesAndUpstreamHTTPVersion(file: String) throws {
        let clusters = try Self.clusters(in: file)
        #expect(!clusters.isEmpty)
        let byName = Dictionary(uniqueKeysWithValues: clusters.map { ($0.name, $0) })
        let meshClusters = clusters.filter { !$0.transportSocketMatches.isEmpty }
        #expect(meshClusters.count == 15)
        for cluster in meshClusters {
            #expect(cluster.transportSocketMatches.map(\.name) == ["tlsMode-istio", "tlsMode-disabled"])
            #expect(cluster.transportSocketMatches.first?.transportSocket?.secretReferences.map(\.name).sorted() == ["ROOTCA", "default"])
            #expect(cluster.transportSocketMatches.last?.transportSocket == nil)
            let istio = BootstrapConfig.Cluster.Endpoint(try SocketAddress(ipAddress: "10.128.0.7", port: 8080),
                                                         transportSocketMatch: ["tlsMode": Google_Protobuf_Value(stringValue: "istio")])
            #expect(cluster.transportSocket(for: istio) != nil)
            #expect(cluster.transportSocket(for: .init(try SocketAddress(ipAddress: "10.128.0.8", port: 8080))) == nil)
        }
        #expect(byName["sds-grpc"]?.upstreamHTTP == .http2)
        #expect(byName["xds-grpc"]?.upstreamHTTP == .http2)
        #expect(byName["agent"]?.upstreamHTTP == .http1)
        if file == IstioDumps.sidecar {
            #expect(byName["inbound|8080||"]?.upstreamHTTP == .downstream)
            let passthrough = try #require(byName["PassthroughCluster"])
            #expect(passthrough.upstreamHTTP == .downstream && passthrough.upstreamIdleTimeout == .seconds(300))
        }
    }

    /// Each route configuration the listeners name is in the dump, and compiles as RDS delivers it.
    @Test(arguments: IstioDumps.files)
    func theRouteConfigurationsListenersNameCompile(file: String) throws {
        let named = Set(try Self.listeners(in: file).flatMap(\.listener.routeConfigNames))
        var compiled: Set<String> = []
        for json in try IstioDumps.routeConfigurations(in: file) {
            let proto = try IstioDumps.message(json, as: Envoy_Config_Route_V3_RouteConfiguration.self)
            let table = try RouteTable(proto, path: "route_config \"\(proto.name)\"")
            compiled.insert(table.name)
        }
        #expect(named.isSubset(of: compiled), "\(named.subtracting(compiled))")
    }
}
