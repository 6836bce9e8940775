import Configuration
@testable import DataPlane
import Foundation
import NIOCore
import SwiftProtobuf
import Testing
import XDS

/// `envoy.filters.network.sni_cluster` before `tcp_proxy`, as Envoy reads it: the TLS server name that
/// tls_inspector read names the cluster the connection is relayed to (Istio's SNI-DNAT router, an
/// east-west gateway before istiod 1.19); a connection without one goes to `tcp_proxy`'s own cluster,
/// and a name no cluster has closes the connection (counted).
@Suite struct SNIClusterTests {
    static let tcpProxyType = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
    static let sniClusterType = "type.googleapis.com/envoy.extensions.filters.network.sni_cluster.v3.SniCluster"
    static let payments = "outbound_.8080_._.payments.shop.svc.cluster.local"

    /// The legacy east-west gateway's listener on 15443 (`sniCluster` is the filter as written), and
    /// the clusters it may name.
    static func bootstrap(sniCluster: String, serverNames: Bool = true) -> String {
        """
        static_resources:
          listeners:
          - name: 0.0.0.0_15443
            address: {socket_address: {address: 0.0.0.0, port_value: 15443}}
            listener_filters:
            - name: envoy.filters.listener.tls_inspector
              typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
            filter_chains:
            - filter_chain_match: {\(serverNames ? "server_names: [\"*.local\"]" : "")}
              filters:
              \(sniCluster)
              - name: envoy.filters.network.tcp_proxy
                typed_config: {"@type": \(tcpProxyType), stat_prefix: BlackHoleCluster, cluster: BlackHoleCluster}
          clusters:
          - name: BlackHoleCluster
            type: STATIC
          - name: \(payments)
            type: STATIC
            load_assignment:
              cluster_name: \(payments)
              endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 192.0.2.20, port_value: 8080}}}}]}]
        """
    }

    func route(_ config: BootstrapConfig, serverName: String?) throws -> Result<UpstreamRoute, ProxyRuntime.RouteFailure> {
        let runtime = ProxyRuntime(options: ProxyOptions(), config: config)
        return runtime.route(listener: "0.0.0.0_15443", destination: try SocketAddress(ipAddress: "192.0.2.10", port: 15443), client: nil,
                             detected: TransportDetection(transportProtocol: "tls", serverName: serverName), in: runtime.configuration)
    }

    /// Why there is no route, or nil when there is one.
    func failure(_ config: BootstrapConfig, serverName: String?) throws -> ProxyRuntime.RouteFailure? {
        if case .failure(let failure) = try route(config, serverName: serverName) { return failure }
        return nil
    }

    @Test(arguments: [
        // istiod before 1.19 sent it by name only, with no configuration.
        "- name: envoy.filters.network.sni_cluster",
        "- name: envoy.filters.network.sni_cluster\n        typed_config: {\"@type\": \(sniClusterType)}",
        // The type alone names it, whatever the name.
        "- name: sni\n        typed_config: {\"@type\": \(sniClusterType)}",
    ])
    func theServerNameNamesTheCluster(filter: String) throws {
        let config = try BootstrapConfig.parse(Self.bootstrap(sniCluster: filter), format: .yaml)
        #expect(config.allFieldsNotActedOn.allSatisfy { $0.contains("stat_prefix") }, "\(config.allFieldsNotActedOn)")
        let chain = try #require(config.listeners.first?.chains.first)
        #expect(chain.clusterFromServerName && chain.route == .cluster("BlackHoleCluster"))
        let routed = try route(config, serverName: Self.payments)
        guard case .success(let found) = routed else { Issue.record("\(routed)"); return }
        let endpoint = try SocketAddress(ipAddress: "192.0.2.20", port: 8080)
        #expect(found.cluster.name == Self.payments && found.endpoint == endpoint)
        // A name no cluster has: no relay, as Envoy's tcp_proxy closes (the handler counts downstream_cx_no_cluster).
        #expect(try failure(config, serverName: "outbound_.8080_._.reviews.shop.svc.cluster.local") == .unknownCluster)
        // Without a server name the chain (one for any name) keeps tcp_proxy's own cluster, here one with no endpoints.
        let anyName = try BootstrapConfig.parse(Self.bootstrap(sniCluster: filter, serverNames: false), format: .yaml)
        #expect(try failure(anyName, serverName: nil) == .noHealthyUpstream)
        #expect(try failure(anyName, serverName: "") == .noHealthyUpstream)
        #expect(try route(anyName, serverName: Self.payments).map(\.cluster.name) == .success(Self.payments))
    }

    @Test func withoutTheFilterTheChainsClusterIsKept() throws {
        let config = try BootstrapConfig.parse(Self.bootstrap(sniCluster: ""), format: .yaml)
        #expect(config.listeners.first?.chains.first?.clusterFromServerName == false)
        #expect(try failure(config, serverName: Self.payments) == .noHealthyUpstream)
    }

    @Test func theDumpShowsTheChainsNamesAndTheFilter() throws {
        let config = try BootstrapConfig.parse(Self.bootstrap(sniCluster: "- name: envoy.filters.network.sni_cluster"), format: .yaml)
        let dump = ConfigDump(runtime: ProxyRuntime(options: ProxyOptions(), config: config)).json
            .replacingOccurrences(of: " ", with: "").replacingOccurrences(of: "\n", with: "")
        #expect(dump.contains("\"server_names\":[\"*.local\"]") && dump.contains("\"sni_cluster\":true"), "\(dump)")
    }

    @Test func placedWrongOrWithFieldsItIsSaidWithItsPath() throws {
        // After the terminal filter: refused, as any filter there is.
        let after = Self.bootstrap(sniCluster: "").replacingOccurrences(of: "cluster: BlackHoleCluster}\n", with: "cluster: BlackHoleCluster}\n      - name: envoy.filters.network.sni_cluster\n")
        #expect(throws: ConfigError.self) { try BootstrapConfig.parse(after, format: .yaml) }
        // Before an HTTP connection manager it changes nothing (tcp_proxy reads what it sets): listed and counted.
        var listener = try HTTPConnectionManagerDecodingTests.listener(HTTPConnectionManagerDecodingTests.manager())
        var sni = Envoy_Config_Listener_V3_Filter()
        sni.name = "envoy.filters.network.sni_cluster"
        listener.filterChains[0].filters.insert(sni, at: 0)
        let decoded = try XDSResourceDecoder.listeners([try Google_Protobuf_Any(message: listener)])
        let notActedOn = decoded.first?.fieldsNotActedOn.map(\.path) ?? []
        #expect(notActedOn.contains("filter_chains[0].filters[0]"), "\(notActedOn)")
        #expect(decoded.first?.chains.first?.clusterFromServerName == false)
        // A field the empty message does not have: outside the subset, listed and counted.
        let config = try Envoy_Extensions_Filters_Network_SniCluster_V3_SniCluster(serializedBytes: [UInt8]([0x08, 0x01]))
        var typed = Envoy_Config_Listener_V3_Filter()
        typed.name = "envoy.filters.network.sni_cluster"
        typed.typedConfig = try Google_Protobuf_Any(message: config)
        var proxy = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy()
        proxy.cluster = "BlackHoleCluster"
        var tcp = Envoy_Config_Listener_V3_Filter()
        tcp.name = "envoy.filters.network.tcp_proxy"
        tcp.typedConfig = try Google_Protobuf_Any(message: proxy)
        listener.filterChains[0].filters = [typed, tcp]
        let withField = try XDSResourceDecoder.listeners([try Google_Protobuf_Any(message: listener)])
        #expect(withField.first?.fieldsNotActedOn.map(\.path).contains { $0.hasPrefix("filter_chains[0].filters[0].typed_config.") } == true,
                "\(withField.first?.fieldsNotActedOn ?? [])")
        #expect(withField.first?.chains.first?.clusterFromServerName == true)
    }
}
