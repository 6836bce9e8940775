import Configuration
@testable import ControlPlane
@testable import DataPlane
import Foundation
import NIOCore
import SwiftProtobuf
import Testing
import XDS

/// Istio's east-west gateway (AUTO_PASSTHROUGH on 15443, the `cross-network-gateway` of Istio's
/// multi-network install) and OPTIONAL_MUTUAL, as istiod 1.19 and later generate them
/// (`builtAutoPassthroughFilterChains`, `buildOutboundSniDnatClusters`, `BuildListenerTLSContext`).
@Suite struct AutoPassthroughGatewayTests {
    static let payments = "payments.shop.svc.cluster.local"

    /// The east-west gateway, payments (two ports, a subset, one endpoint without a sidecar), an
    /// external service and an internal one outside `*.local`.
    static func eastWest(hosts: String = "[\"*.local\"]", mode: String = "AUTO_PASSTHROUGH") -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: cross-network-gateway, namespace: istio-system}
        spec:
          selector: {istio: eastwestgateway}
          servers:
          - port: {number: 15443, name: tls, protocol: TLS}
            tls: {mode: \(mode)}
            hosts: \(hosts)
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: payments, namespace: shop}
        spec:
          hosts: [\(payments)]
          ports: [{number: 8080, name: http, protocol: HTTP}, {number: 9090, name: tcp-ledger, protocol: TCP}]
          resolution: STATIC
          endpoints:
          - {address: 192.0.2.20, labels: {security.istio.io/tlsMode: istio, version: v1}, serviceAccount: payments}
          - {address: 192.0.2.21, labels: {version: v2}}
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: payments, namespace: shop}
        spec:
          host: \(payments)
          trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
          subsets: [{name: v1, labels: {version: v1}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: external, namespace: shop}
        spec:
          hosts: [api.example.local]
          location: MESH_EXTERNAL
          ports: [{number: 443, name: https, protocol: HTTPS}]
          resolution: DNS
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: ledger, namespace: shop}
        spec:
          hosts: [ledger.example.org]
          ports: [{number: 7000, name: tcp, protocol: TCP}]
          resolution: STATIC
          endpoints: [{address: 192.0.2.30, labels: {security.istio.io/tlsMode: istio}}]
        """
    }

    func config(_ text: String) throws -> MeshConfig {
        let reading = MeshConfigReader.read([("mesh.yaml", text)])
        return try #require(reading.config, "\(reading.problems)")
    }

    func router(_ config: MeshConfig, labels: [String: String] = ["istio": "eastwestgateway"]) throws -> GatewayGenerator.RouterResources {
        try GatewayGenerator.resources(for: GatewayGenerator.gateways(in: config, selecting: labels), config: config)
    }

    static func name(_ port: Int, _ subset: String = "", host: String = payments) -> String { "outbound_.\(port)_.\(subset)_.\(host)" }

    @Test func aChainPerMeshClusterBySNIAndIstioALPNs() throws {
        let resources = try router(try config(Self.eastWest()))
        #expect(resources.autoPassthrough && resources.routes.isEmpty && resources.credentials.isEmpty)
        #expect(resources.listeners.map(\.name) == ["0.0.0.0_15443"])
        let listener = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](resources.listeners[0].resource.value))
        #expect(listener.listenerFilters.map(\.name) == ["envoy.filters.listener.tls_inspector"])
        // Service by service, port by port, the cluster then its subsets; not the external service, nor one outside `*.local`.
        let names = [Self.name(8080), Self.name(8080, "v1"), Self.name(9090), Self.name(9090, "v1")]
        #expect(listener.filterChains.map(\.filterChainMatch.serverNames) == names.map { [$0] })
        for chain in listener.filterChains {
            #expect(chain.filterChainMatch.applicationProtocols == ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"])
            #expect(!chain.hasTransportSocket, "the bytes pass through: the gateway holds no key")
            #expect(chain.filters.map(\.name) == ["envoy.filters.network.tcp_proxy"])
            let proxy = try Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy(unpackingAny: chain.filters[0].typedConfig)
            #expect(proxy.cluster == chain.filterChainMatch.serverNames[0] && proxy.statPrefix == proxy.cluster)
        }
        // `*` takes every mesh service, the external one still not; a host names one service.
        let everything = try router(try config(Self.eastWest(hosts: "[\"*\"]")))
        let all = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](everything.listeners[0].resource.value))
        #expect(all.filterChains.map(\.filterChainMatch.serverNames[0]) == names + [Self.name(7000, host: "ledger.example.org")])
        let namespaced = MeshConfigReader.read([("mesh.yaml", Self.eastWest(hosts: "[\"istio-system/ledger.example.org\"]"))])
        #expect(namespaced.warnings.contains { $0.hasSuffix("spec.servers[0].hosts[0]: the namespace \"istio-system\" is not used by AUTO_PASSTHROUGH, as in istiod: every mesh service whose host \"ledger.example.org\" takes is reachable") },
                "\(namespaced.warnings)")
        let one = try router(try config(Self.eastWest(hosts: "[\"istio-system/ledger.example.org\"]")))
        let single = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](one.listeners[0].resource.value))
        #expect(single.filterChains.map(\.filterChainMatch.serverNames) == [[Self.name(7000, host: "ledger.example.org")]])
        // No service the hosts take: no chain, no listener (as istiod).
        #expect(try router(try config(Self.eastWest(hosts: "[\"*.example.com\"]"))).listeners.isEmpty)
    }

    /// The proxy takes the chains and picks one by the SNI a sidecar sends with ISTIO_MUTUAL and its ALPN.
    @Test func theProxyChoosesTheClusterByTheSidecarsSNI() throws {
        let resources = try router(try config(Self.eastWest()))
        let listener = try #require(try XDSResourceDecoder.listeners(resources.listeners.map(\.resource)).first)
        let address = try SocketAddress(ipAddress: "192.0.2.10", port: 15443)
        let sidecar = TransportDetection(transportProtocol: "tls", applicationProtocols: ["istio-peer-exchange", "istio"], serverName: Self.name(8080, "v1"))
        #expect(listener.chain(for: address, detected: sidecar)?.route == .cluster(Self.name(8080, "v1")))
        // Not Istio's mutual TLS (a browser's ALPN, or none): no chain, the connection is closed.
        var browser = sidecar
        browser.applicationProtocols = ["h2", "http/1.1"]
        #expect(listener.chain(for: address, detected: browser) == nil)
        browser.applicationProtocols = []
        #expect(listener.chain(for: address, detected: browser) == nil)
        // A cluster the gateway does not expose.
        var other = sidecar
        other.serverName = Self.name(8080, host: "reviews.shop.svc.cluster.local")
        #expect(listener.chain(for: address, detected: other) == nil)
        #expect(listener.chain(for: address, detected: .plaintext) == nil)
    }

    /// istiod's SNI-DNAT clusters: per service port and subset, EDS, the sidecars' policy, no TLS, and
    /// only the endpoints with a sidecar; sent to the routers with an AUTO_PASSTHROUGH server only.
    @Test func theSNIDNATClustersReachOnlyTheWorkloadsThatRunASidecar() throws {
        let config = try config(Self.eastWest())
        let resources = try ProxyConfigGenerator.resources(for: config)
        let names = [Self.name(8080), Self.name(8080, "v1"), Self.name(9090), Self.name(9090, "v1"),
                     Self.name(7000, host: "ledger.example.org")]
        #expect(resources.sniDnatClusters.map(\.name) == names)
        #expect(resources.sniDnatEndpoints.map(\.name) == names)
        let cluster = try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](resources.sniDnatClusters[0].resource.value))
        #expect(cluster.type == .eds && cluster.edsClusterConfig.serviceName == Self.name(8080) && cluster.edsClusterConfig.edsConfig.ads == .init())
        #expect(!cluster.hasTransportSocket && cluster.lbPolicy == .leastRequest)
        let sidecars = try #require(resources.clusters.first { $0.name == "outbound|8080||\(Self.payments)" })
        var same = try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](sidecars.resource.value))
        same.name = cluster.name
        same.edsClusterConfig.serviceName = cluster.name
        same.clearTransportSocket()
        #expect(same == cluster, "the sidecars' cluster but for its name and TLS")
        func addresses(_ index: Int) throws -> [String] {
            try Envoy_Config_Endpoint_V3_ClusterLoadAssignment(serializedBytes: [UInt8](resources.sniDnatEndpoints[index].resource.value))
                .endpoints.flatMap(\.lbEndpoints).map(\.endpoint.address.socketAddress.address)
        }
        // 192.0.2.21 has no sidecar: it would take the bytes unauthenticated.
        #expect(try addresses(0) == ["192.0.2.20"] && addresses(1) == ["192.0.2.20"])
        #expect(try resources.endpoints.contains { $0.name == "outbound|8080||\(Self.payments)" })

        let store = MeshSnapshotStore()
        store.update(resources)
        func snapshot(_ id: String, labels: [String: String]) -> XDSSnapshot {
            var node = Envoy_Config_Core_V3_Node()
            node.id = id
            node.metadata.fields["LABELS"] = Google_Protobuf_Value(structValue: Google_Protobuf_Struct(fields: labels.mapValues { Google_Protobuf_Value(stringValue: $0) }))
            return store.snapshot(for: node)
        }
        let eastWest = snapshot("router~192.0.2.10~eastwest-7d9f.istio-system~istio-system.svc.cluster.local", labels: ["istio": "eastwestgateway"])
        #expect(Set(names).isSubset(of: Set(eastWest.types[.cluster]?.resources.map(\.name) ?? [])))
        #expect(Set(names).isSubset(of: Set(eastWest.types[.endpoint]?.resources.map(\.name) ?? [])))
        let ingress = snapshot("router~192.0.2.11~ingress-7d9f.istio-system~istio-system.svc.cluster.local", labels: ["istio": "ingressgateway"])
        #expect(ingress.types[.cluster]?.resources.contains { $0.name.hasPrefix("outbound_.") } == false)
        let sidecar = snapshot("sidecar~192.0.2.20~payments-7d9f.shop~shop.svc.cluster.local", labels: [:])
        #expect(sidecar.types[.cluster]?.resources.contains { $0.name.hasPrefix("outbound_.") } == false)

        // Without an AUTO_PASSTHROUGH server none are made; a Gateway turning to it changes the clusters' version.
        let passthrough = try ProxyConfigGenerator.resources(for: try self.config(Self.eastWest(mode: "PASSTHROUGH")))
        #expect(passthrough.sniDnatClusters.isEmpty && passthrough.sniDnatEndpoints.isEmpty)
        #expect(resources.differs(from: passthrough, in: .cluster) && resources.differs(from: passthrough, in: .endpoint))
    }

    @Test func aDNSServiceGetsADNSCluster() throws {
        let text = Self.eastWest().replacingOccurrences(of: """
              resolution: STATIC
              endpoints: [{address: 192.0.2.30, labels: {security.istio.io/tlsMode: istio}}]
            """, with: """
              resolution: DNS
              endpoints: [{address: ledger-1.example.org, labels: {security.istio.io/tlsMode: istio}}]
            """)
        let resources = try ProxyConfigGenerator.resources(for: try config(text))
        let resource = try #require(resources.sniDnatClusters.first { $0.name == Self.name(7000, host: "ledger.example.org") })
        let cluster = try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](resource.resource.value))
        #expect(cluster.type == .strictDns && !cluster.hasEdsClusterConfig && cluster.loadAssignment.clusterName == cluster.name)
        #expect(cluster.loadAssignment.endpoints.flatMap(\.lbEndpoints).map(\.endpoint.address.socketAddress.address) == ["ledger-1.example.org"])
        #expect(!resources.sniDnatEndpoints.contains { $0.name == cluster.name })
    }

    @Test(arguments: [
        ("AUTO_PASSTHROUGH, credentialName: api-cert", "spec.servers[0].tls.credentialName", "is not used with AUTO_PASSTHROUGH"),
        ("OPTIONAL_MUTUAL", "spec.servers[0].tls.credentialName", "is required"),
        ("SOMETIMES_MUTUAL", "spec.servers[0].tls.mode", "\"SOMETIMES_MUTUAL\" is not a TLS mode"),
    ])
    func misusedModesAreRefusedNamingTheField(mode: String, field: String, message: String) {
        let reading = MeshConfigReader.read([("mesh.yaml", Self.eastWest(mode: mode))])
        #expect(reading.config == nil)
        #expect(reading.problems.contains { $0.field == field && $0.message.hasPrefix(message) }, "\(reading.problems)")
    }

    /// OPTIONAL_MUTUAL as istiod's `BuildListenerTLSContext` makes it: MUTUAL's context (the credential,
    /// its CA bundle as the validation context) with `require_client_certificate: false`; the proxy
    /// verifies a certificate presented and serves a client without one.
    @Test(arguments: ["HTTPS", "TLS"])
    func optionalMutualAsksForAClientCertificateWithoutRequiringIt(protocol: String) throws {
        let text = """
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata: {name: api-gateway, namespace: shop}
            spec:
              selector: {istio: ingressgateway}
              servers:
              - port: {number: 8443, name: https-optional, protocol: \(`protocol`)}
                hosts: [api.myapp.com]
                tls: {mode: OPTIONAL_MUTUAL, credentialName: api-mtls}
              - port: {number: 9443, name: https-mutual, protocol: \(`protocol`)}
                hosts: [api.myapp.com]
                tls: {mode: MUTUAL, credentialName: api-mtls}
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: httpbin, namespace: shop}
            spec:
              hosts: [api.myapp.com]
              gateways: [api-gateway]
              http:
              - route: [{destination: {host: httpbin, port: {number: 8000}}}]
              tcp:
              - route: [{destination: {host: httpbin, port: {number: 8000}}}]
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
        let resources = try router(try config(text), labels: ["istio": "ingressgateway"])
        #expect(resources.listeners.map(\.name) == ["0.0.0.0_8443", "0.0.0.0_9443"] && resources.credentials == ["api-mtls"])
        func context(_ index: Int) throws -> Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext {
            let listener = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](resources.listeners[index].resource.value))
            return try Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext(unpackingAny: listener.filterChains[0].transportSocket.typedConfig)
        }
        let optional = try context(0), mutual = try context(1)
        #expect(optional.hasRequireClientCertificate && optional.requireClientCertificate.value == false)
        #expect(mutual.requireClientCertificate.value == true)
        var same = optional
        same.requireClientCertificate = Google_Protobuf_BoolValue(true)
        #expect(same == mutual, "MUTUAL's context but for require_client_certificate")
        #expect(optional.commonTlsContext.combinedValidationContext.validationContextSdsSecretConfig.name == "kubernetes://api-mtls-cacert")
        // The proxy reads it as a server asking for a client certificate, verified when given.
        let decoded = try XDSResourceDecoder.listeners(resources.listeners.map(\.resource))
        let socket = try #require(decoded[0].chains.first?.transportSocket)
        #expect(socket.contextKey.role == .server(requireClientCertificate: false))
        #expect(decoded[1].chains.first?.transportSocket?.contextKey.role == .server(requireClientCertificate: true))
    }
}
