import Foundation
@testable import ControlPlane
import SwiftProtobuf
import Testing
import XDS

/// ServiceEntries with resolution DNS (istiod's STRICT_DNS / LOGICAL_DNS clusters), their endpoints'
/// weight and locality, `location`, and DestinationRule TLS origination (SIMPLE, MUTUAL).
@Suite struct ExternalServiceGeneratorTests {
    static let host = "auth.external-service.com"
    /// The seed's external service: HTTPS on 443, and HTTP on 80 that leaves as HTTPS to 443.
    static let seed = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: external-auth, namespace: default}
        spec:
          hosts: [auth.external-service.com]
          location: MESH_EXTERNAL
          ports:
          - {number: 443, name: https, protocol: HTTPS}
          - {number: 80, name: http, protocol: HTTP, targetPort: 443}
          resolution: DNS
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: external-auth, namespace: default}
        spec:
          host: auth.external-service.com
          trafficPolicy:
            portLevelSettings:
            - port: {number: 80}
              tls:
                mode: SIMPLE
                sni: auth.external-service.com
                caCertificates: /etc/capstan/external-ca.pem
                subjectAltNames: [auth.external-service.com]
        """

    func config(_ text: String) throws -> MeshConfig {
        let reading = MeshConfigReader.read([("mesh.yaml", text)])
        return try #require(reading.config, "\(reading.problems)")
    }

    func problems(_ text: String) -> [String] {
        MeshConfigReader.read([("mesh.yaml", text)]).problems.map(\.description)
    }

    func cluster(_ resources: MeshResources, _ name: String) throws -> Envoy_Config_Cluster_V3_Cluster {
        try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](try #require(resources.clusters.first { $0.name == name }).resource.value))
    }

    func tlsContext(_ cluster: Envoy_Config_Cluster_V3_Cluster) throws -> Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext {
        #expect(cluster.transportSocket.name == "envoy.transport_sockets.tls")
        return try Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext(unpackingAny: cluster.transportSocket.typedConfig)
    }

    @Test func theSeedsServiceBecomesStrictDNSClusters() throws {
        let config = try config(Self.seed)
        let entry = try #require(config.serviceEntries.first)
        #expect(entry.resolution == .dns && entry.location == .meshExternal)
        let resources = try ProxyConfigGenerator.resources(for: config)
        for port in [443, 80] {
            let cluster = try cluster(resources, "outbound|\(port)||auth.external-service.com")
            #expect(cluster.type == .strictDns)
            #expect(!cluster.hasEdsClusterConfig)
            #expect(cluster.dnsRefreshRate.seconds == 60 && cluster.respectDnsTtl && cluster.dnsLookupFamily == .v4Only)
            let endpoint = try #require(cluster.loadAssignment.endpoints.first?.lbEndpoints.first?.endpoint.address.socketAddress)
            // Port 80's endpoint is the target port: HTTP inside the mesh leaves as HTTPS to 443.
            #expect(endpoint.address == "auth.external-service.com" && endpoint.portValue == 443)
            #expect(cluster.loadAssignment.clusterName == cluster.name)
        }
        // No EDS for DNS clusters, and the external host is no workload of the mesh.
        #expect(!resources.endpoints.contains { $0.name.hasSuffix("auth.external-service.com") })
        #expect(resources.inboundWorkloads.isEmpty)
        #expect(try !cluster(resources, "outbound|443||auth.external-service.com").hasTransportSocket)
    }

    @Test func simpleTLSOriginationIsIstiodsUpstreamContext() throws {
        let resources = try ProxyConfigGenerator.resources(for: config(Self.seed))
        let context = try tlsContext(cluster(resources, "outbound|80||auth.external-service.com"))
        #expect(context.sni == "auth.external-service.com")
        #expect(context.commonTlsContext.tlsCertificates.isEmpty)
        guard case .validationContext(let validation)? = context.commonTlsContext.validationContextType else {
            Issue.record("no validation context: \(context)")
            return
        }
        #expect(validation.trustedCa.filename == "/etc/capstan/external-ca.pem")
        #expect(validation.matchSubjectAltNames.map(\.exact) == ["auth.external-service.com"])
        #expect(context.commonTlsContext.alpnProtocols.isEmpty)
    }

    /// The seed with lines replaced (each `old` once in it).
    static func seed(_ changes: [(String, String)]) -> String {
        changes.reduce(seed) { text, change in text.replacingOccurrences(of: change.0, with: change.1) }
    }

    @Test func mutualTLSPresentsTheFilesAndDefaultsToTheSystemRoots() throws {
        let text = Self.seed([("mode: SIMPLE", "mode: MUTUAL"), ("sni: auth.external-service.com", "clientCertificate: /etc/capstan/client.pem"),
                              ("caCertificates: /etc/capstan/external-ca.pem", "privateKey: /etc/capstan/client-key.pem"),
                              ("subjectAltNames: [auth.external-service.com]", "insecureSkipVerify: false")])
        let context = try tlsContext(cluster(try ProxyConfigGenerator.resources(for: config(text)), "outbound|80||auth.external-service.com"))
        let pair = try #require(context.commonTlsContext.tlsCertificates.first)
        #expect(pair.certificateChain.filename == "/etc/capstan/client.pem" && pair.privateKey.filename == "/etc/capstan/client-key.pem")
        // No sni: the service's host, and (no subjectAltNames either) only a certificate for it.
        #expect(context.sni == "auth.external-service.com")
        #expect(context.commonTlsContext.validationContext.trustedCa.filename == ProxyConfigGenerator.systemRootsFile)
        #expect(context.commonTlsContext.validationContext.matchSubjectAltNames.map(\.exact) == ["auth.external-service.com"])
    }

    @Test func insecureSkipVerifyLeavesTheServerUnchecked() throws {
        let text = Self.seed([("caCertificates: /etc/capstan/external-ca.pem", "insecureSkipVerify: true"),
                              ("subjectAltNames: [auth.external-service.com]", "caCrl: \"\"")])
        let context = try tlsContext(cluster(try ProxyConfigGenerator.resources(for: config(text)), "outbound|80||auth.external-service.com"))
        #expect(context.commonTlsContext.validationContextType == nil)
    }

    @Test func refusalsNameTheField() {
        func replacing(_ old: String, _ new: String) -> [String] { problems(Self.seed([(old, new)])) }
        #expect(replacing("mode: SIMPLE", "mode: MUTUAL").contains { $0.contains("spec.trafficPolicy.portLevelSettings[0].tls.clientCertificate: is required for mode MUTUAL") })
        #expect(replacing("caCertificates: /etc/capstan/external-ca.pem", "credentialName: auth-credential")
            .contains { $0.contains("tls.credentialName: \"auth-credential\": certificates from a Kubernetes secret are not supported") })
        #expect(replacing("caCertificates: /etc/capstan/external-ca.pem", "caCertificates: ca.pem").contains { $0.contains("is not an absolute file path") })
        #expect(replacing("sni: auth.external-service.com", "clientCertificate: /etc/c.pem").contains { $0.contains("is for mode MUTUAL") })
        #expect(replacing("hosts: [auth.external-service.com]", "hosts: [\"*.external-service.com\"]")
            .contains { $0.contains("spec.hosts[0]: \"*.external-service.com\": a wildcard host cannot be resolved") })
        #expect(replacing("resolution: DNS", "resolution: DYNAMIC_DNS").contains { $0.contains("(STATIC, NONE, DNS, DNS_ROUND_ROBIN)") })
        #expect(replacing("location: MESH_EXTERNAL", "location: OUTSIDE").contains { $0.contains("spec.location: \"OUTSIDE\" is not a location") })
    }

    @Test func endpointsAreNamesWithWeightsAndLocalities() throws {
        let text = """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: mirrors, namespace: default}
            spec:
              hosts: [mirrors.example.org]
              ports: [{number: 8080, name: tcp-mirror}]
              resolution: DNS
              endpoints:
              - {address: eu.mirrors.example.org, weight: 3, locality: europe/west1, network: far}
              - {address: 192.0.2.7, locality: europe/west1}
              - {address: us.mirrors.example.org, ports: {tcp-mirror: 9090}}
            ---
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: one, namespace: default}
            spec:
              hosts: [one.example.org]
              ports: [{number: 80, name: http}]
              resolution: DNS_ROUND_ROBIN
            """
        let reading = MeshConfigReader.read([("mesh.yaml", text)])
        let config = try #require(reading.config, "\(reading.problems)")
        #expect(reading.warnings.contains { $0.contains("spec.endpoints[0].network: not acted on for resolution DNS") }, "\(reading.warnings)")
        let resources = try ProxyConfigGenerator.resources(for: config)
        let mirrors = try cluster(resources, "outbound|8080||mirrors.example.org")
        #expect(mirrors.type == .strictDns)
        let groups = mirrors.loadAssignment.endpoints
        #expect(groups.count == 2)
        #expect(groups[0].locality.region == "europe" && groups[0].locality.zone == "west1" && groups[0].loadBalancingWeight.value == 4)
        #expect(groups[0].lbEndpoints.map(\.endpoint.address.socketAddress.address) == ["eu.mirrors.example.org", "192.0.2.7"])
        #expect(groups[0].lbEndpoints.map(\.loadBalancingWeight.value) == [3, 0])
        #expect(!groups[1].hasLocality && !groups[1].hasLoadBalancingWeight)
        #expect(groups[1].lbEndpoints.first?.endpoint.address.socketAddress.portValue == 9090)
        let one = try cluster(resources, "outbound|80||one.example.org")
        #expect(one.type == .logicalDns)
        #expect(one.loadAssignment.endpoints.first?.lbEndpoints.first?.endpoint.address.socketAddress.address == "one.example.org")
        #expect(resources.inboundWorkloads.isEmpty)
        // Names are endpoints only where the service is resolved by DNS.
        #expect(problems(text.replacingOccurrences(of: "resolution: DNS\n", with: "resolution: STATIC\n"))
            .contains { $0.contains("spec.endpoints[0].address: \"eu.mirrors.example.org\" is not an IP address") })
    }

    @Test func staticEndpointsKeepWeightsAndLocalityInEDS() throws {
        let text = """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: payments, namespace: shop}
            spec:
              hosts: [payments]
              addresses: [198.51.100.200]
              ports: [{number: 9080, name: http}]
              resolution: STATIC
              location: MESH_INTERNAL
              endpoints: [{address: 198.51.100.10, weight: 2, locality: us/east}, {address: 198.51.100.11}]
            """
        let resources = try ProxyConfigGenerator.resources(for: config(text))
        let packed = try #require(resources.endpoints.first { $0.name == "outbound|9080||payments.shop.svc.cluster.local" })
        let assignment = try Envoy_Config_Endpoint_V3_ClusterLoadAssignment(serializedBytes: [UInt8](packed.resource.value))
        #expect(assignment.endpoints.count == 2)
        #expect(assignment.endpoints[0].locality.region == "us" && assignment.endpoints[0].lbEndpoints[0].loadBalancingWeight.value == 2)
        #expect(try cluster(resources, "outbound|9080||payments.shop.svc.cluster.local").type == .eds)
    }

    // MARK: outboundTrafficPolicy

    func outbound(_ mode: String?) throws -> MeshResources {
        let mesh = mode.map { "\n---\n" + MeshSettingsTests.configMap("outboundTrafficPolicy: {mode: \($0)}") } ?? ""
        return try ProxyConfigGenerator.resources(for: config(Self.seed + mesh))
    }

    func defaultChainRoute(_ resources: MeshResources, listener name: String) throws -> (chain: String, cluster: String, statPrefix: String) {
        let packed = try #require(resources.outboundListeners.first { $0.name == name })
        let listener = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](packed.resource.value))
        let filter = try #require(listener.defaultFilterChain.filters.first)
        let proxy = try Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy(unpackingAny: filter.typedConfig)
        return (listener.defaultFilterChain.name, proxy.cluster, proxy.statPrefix)
    }

    func catchAll(_ resources: MeshResources) throws -> Envoy_Config_Route_V3_VirtualHost {
        let packed = try #require(resources.routes.first { $0.name == "80" })
        return try #require(try Envoy_Config_Route_V3_RouteConfiguration(serializedBytes: [UInt8](packed.resource.value)).virtualHosts.last)
    }

    @Test func registryOnlyBlackHolesUnknownHostsAsIstiodDoes() throws {
        let resources = try outbound("REGISTRY_ONLY")
        let blackHole = try cluster(resources, "BlackHoleCluster")
        #expect(blackHole.type == .static && !blackHole.hasLoadAssignment && blackHole.connectTimeout.seconds == 10)
        for listener in ["virtualOutbound", "0.0.0.0_80"] {
            let route = try defaultChainRoute(resources, listener: listener)
            #expect(route == ("PassthroughFilterChain", "BlackHoleCluster", "BlackHoleCluster"), "\(listener)")
        }
        let host = try catchAll(resources)
        #expect(host.name == "block_all" && host.domains == ["*"])
        #expect(host.routes.map(\.name) == ["block_all"] && host.routes.first?.directResponse.status == 502)
        #expect(host.routes.first?.match.prefix == "/")
    }

    @Test func allowAnyPassesThroughAndIsTheDefault() throws {
        for mode in [nil, "ALLOW_ANY"] {
            let resources = try outbound(mode)
            // istiod sends BlackHoleCluster either way.
            #expect(try cluster(resources, "BlackHoleCluster").type == .static)
            for listener in ["virtualOutbound", "0.0.0.0_80"] {
                let route = try defaultChainRoute(resources, listener: listener)
                #expect(route == ("PassthroughFilterChain", "PassthroughCluster", "PassthroughFilterChain"), "\(listener)")
            }
            let host = try catchAll(resources)
            #expect(host.name == "allow_any" && host.routes.first?.route.cluster == "PassthroughCluster")
        }
    }

    @Test func anHTTPSPortWithoutAddressesIsChosenByServerName() throws {
        for mode in ["ALLOW_ANY", "REGISTRY_ONLY"] {
            let resources = try outbound(mode)
            let packed = try #require(resources.outboundListeners.first { $0.name == "0.0.0.0_443" })
            let listener = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](packed.resource.value))
            #expect(listener.bindToPort.value == false && listener.hasBindToPort)
            #expect(listener.listenerFilters.map(\.name) == ["envoy.filters.listener.tls_inspector"])
            let chain = try #require(listener.filterChains.first)
            #expect(listener.filterChains.count == 1)
            #expect(chain.filterChainMatch.serverNames == [Self.host] && !chain.filterChainMatch.hasDestinationPort)
            let proxy = try Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy(unpackingAny: try #require(chain.filters.first).typedConfig)
            #expect(proxy.cluster == "outbound|443||\(Self.host)")
            let fallback = try defaultChainRoute(resources, listener: "0.0.0.0_443")
            #expect(fallback.cluster == (mode == "ALLOW_ANY" ? "PassthroughCluster" : "BlackHoleCluster"))
        }
    }

    @Test func theMeshConfigsDNSRefreshRateIsTheClusters() throws {
        let mesh = MeshSettingsTests.configMap("dnsRefreshRate: 15s")
        let reading = MeshConfigReader.read([("mesh.yaml", Self.seed + "\n---\n" + mesh)])
        let config = try #require(reading.config, "\(reading.problems)")
        #expect(!reading.warnings.contains { $0.contains("dnsRefreshRate") }, "\(reading.warnings)")
        let resources = try ProxyConfigGenerator.resources(for: config)
        #expect(try cluster(resources, "outbound|443||\(Self.host)").dnsRefreshRate.seconds == 15)
        #expect(MeshConfigReader.read([("mesh.yaml", MeshSettingsTests.configMap("dnsRefreshRate: 0s"))]).problems
            .contains { $0.description.contains("dnsRefreshRate: must be at least 1ms") })
    }
}
