import Foundation
@testable import ControlPlane
import SwiftProtobuf
import Testing
import XDS

@Suite struct ProxyConfigGeneratorTests {
    func resources() throws -> MeshResources {
        let config = try #require(MeshConfigReader.read([("mesh.yaml", Documents.canary)]).config)
        return try ProxyConfigGenerator.resources(for: config)
    }

    @Test func clustersAreNamedAsIstioNamesThem() throws {
        let clusters = try resources().clusters
        #expect(clusters.map(\.name) == [
            "PassthroughCluster", "InboundPassthroughCluster", "BlackHoleCluster",
            "outbound|9080||payments.shop.svc.cluster.local", "outbound|9080|v1|payments.shop.svc.cluster.local",
            "outbound|9080|v2|payments.shop.svc.cluster.local", "inbound|8080||",
        ])
        let v2 = try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](clusters[5].resource.value))
        #expect(v2.type == .eds)
        #expect(v2.edsClusterConfig.serviceName == clusters[5].name)
        #expect(v2.lbPolicy == .leastRequest)
        // The subset's connectionPool replaces the rule's (and its connectTimeout) whole, as in istiod.
        #expect(v2.connectTimeout == Google_Protobuf_Duration(seconds: 10))
        let threshold = try #require(v2.circuitBreakers.thresholds.first)
        #expect(threshold.maxConnections.value == 10)
        #expect([threshold.maxPendingRequests, threshold.maxRequests, threshold.maxRetries].map(\.value) == [UInt32.max, UInt32.max, UInt32.max])
        #expect(threshold.trackRemaining)
        let v1 = try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](clusters[4].resource.value))
        #expect(v1.connectTimeout == Google_Protobuf_Duration(seconds: 0, nanos: 250_000_000))
        #expect(v1.circuitBreakers.thresholds.first?.maxConnections.value == 100)
    }

    @Test func connectionPoolBecomesIstiodsCircuitBreakersAndCommonOptions() throws {
        let pool = """
            connectionPool:
                  tcp: {maxConnections: 1, idleTimeout: 30s}
                  http: {http1MaxPendingRequests: 1, http2MaxRequests: 7, maxRetries: 2, maxRequestsPerConnection: 5, idleTimeout: 5s}
            """
        let documents = Documents.canary.replacingOccurrences(of: "connectionPool: {tcp: {maxConnections: 100, connectTimeout: 250ms}}", with: pool)
        #expect(documents != Documents.canary)
        let reading = MeshConfigReader.read([("mesh.yaml", documents)])
        let config = try #require(reading.config, "\(reading.problems)")
        let clusters = try ProxyConfigGenerator.resources(for: config).clusters
        let cluster = try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](try #require(
            clusters.first { $0.name == "outbound|9080||payments.shop.svc.cluster.local" }).resource.value))
        let threshold = try #require(cluster.circuitBreakers.thresholds.first)
        #expect([threshold.maxConnections, threshold.maxPendingRequests, threshold.maxRequests, threshold.maxRetries].map(\.value) == [1, 1, 7, 2])
        let options = try Envoy_Extensions_Upstreams_Http_V3_HttpProtocolOptions(unpackingAny: try #require(
            cluster.typedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]))
        #expect(options.commonHTTPProtocolOptions.idleTimeout == Google_Protobuf_Duration(seconds: 5), "http.idleTimeout wins over tcp's")
        #expect(options.commonHTTPProtocolOptions.maxRequestsPerConnection.value == 5)
    }

    @Test func consistentHashBecomesTheClustersRingOrTableAndTheRoutesHashPolicy() throws {
        // The HTTP canary, with v2 hashed by a cookie on a Maglev table and the rest by user on a ring.
        let documents = Documents.canary
            .replacingOccurrences(of: "name: tcp-payments, protocol: TCP", with: "name: http-payments, protocol: HTTP")
            .replacingOccurrences(of: "ports: {tcp-payments: 8080}", with: "ports: {http-payments: 8080}")
            .replacingOccurrences(of: "loadBalancer: {simple: LEAST_CONN}", with: "loadBalancer: {consistentHash: {httpHeaderName: end-user, ringHash: {minimumRingSize: 2048}}}")
            .replacingOccurrences(of: "trafficPolicy: {connectionPool: {tcp: {maxConnections: 10}}}",
                                  with: "trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 60s}, maglev: {tableSize: 251}}}}")
            .replacingOccurrences(of: "  tcp:\n", with: "  http:\n")
        let reading = MeshConfigReader.read([("mesh.yaml", documents)])
        let config = try #require(reading.config, "\(reading.problems)")
        let resources = try ProxyConfigGenerator.resources(for: config)
        func cluster(_ subset: String) throws -> Envoy_Config_Cluster_V3_Cluster {
            try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](try #require(
                resources.clusters.first { $0.name == "outbound|9080|\(subset)|payments.shop.svc.cluster.local" }).resource.value))
        }
        #expect(try cluster("").lbPolicy == .ringHash)
        #expect(try cluster("").ringHashLbConfig.minimumRingSize.value == 2048)
        #expect(try cluster("v2").lbPolicy == .maglev)
        #expect(try cluster("v2").maglevLbConfig.tableSize.value == 251)
        // The VirtualService splits v1 (by header) and v2 (by cookie): they hash differently, so the
        // weighted route has no hash policy, as a split can follow only one.
        let route = try Envoy_Config_Route_V3_RouteConfiguration(serializedBytes: [UInt8](try #require(
            resources.routes.first { $0.name == "9080" }).resource.value))
        let action = try #require(route.virtualHosts.first?.routes.first?.route)
        #expect(action.weightedClusters.clusters.count == 2)
        #expect(action.hashPolicy.isEmpty)
        #expect(try #require(HTTPRouteGenerator.hashPolicy(host: "payments.shop.svc.cluster.local", subset: "v1", config: config)).header.headerName == "end-user")
        let cookie = try #require(HTTPRouteGenerator.hashPolicy(host: "payments.shop.svc.cluster.local", subset: "v2", config: config)).cookie
        #expect(cookie.name == "user" && cookie.ttl == Google_Protobuf_Duration(seconds: 60))
    }

    @Test func subsetsSelectEndpointsByLabelOnTheWorkloadsPort() throws {
        let assignments = try resources().endpoints.map {
            try Envoy_Config_Endpoint_V3_ClusterLoadAssignment(serializedBytes: [UInt8]($0.resource.value))
        }
        func endpoints(_ subset: String) -> [String] {
            assignments.first { $0.clusterName == "outbound|9080|\(subset)|payments.shop.svc.cluster.local" }!
                .endpoints.flatMap(\.lbEndpoints).map { "\($0.endpoint.address.socketAddress.address):\($0.endpoint.address.socketAddress.portValue)" }
        }
        #expect(endpoints("") == ["198.51.100.10:8080", "198.51.100.99:8080"])
        #expect(endpoints("v1") == ["198.51.100.10:8080"])
        #expect(endpoints("v2") == ["198.51.100.99:8080"])
    }

    @Test func theOutboundListenerMatchesServiceAddressesAndSplitsByWeight() throws {
        let listener = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](try resources().outboundListener.resource.value))
        #expect(listener.name == "virtualOutbound")
        #expect(listener.address.socketAddress.portValue == 15001)
        let chain = try #require(listener.filterChains.first)
        #expect(chain.filterChainMatch.destinationPort.value == 9080)
        #expect(chain.filterChainMatch.prefixRanges.map { "\($0.addressPrefix)/\($0.prefixLen.value)" } == ["198.51.100.200/32", "2001:db8:200::/64"])
        let proxy = try Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy(serializedBytes: [UInt8](chain.filters[0].typedConfig.value))
        #expect(proxy.weightedClusters.clusters.map { "\($0.name)=\($0.weight)" } == [
            "outbound|9080|v1|payments.shop.svc.cluster.local=90", "outbound|9080|v2|payments.shop.svc.cluster.local=10",
        ])
        let fallback = try Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy(serializedBytes: [UInt8](listener.defaultFilterChain.filters[0].typedConfig.value))
        #expect(fallback.cluster == "PassthroughCluster")
    }

    @Test func eachWorkloadGetsAnInboundListenerForItsPortsAndTheStoreVersionsOnlyWhatChanged() throws {
        let store = MeshSnapshotStore()
        #expect(store.update(try resources()) == [.cluster, .endpoint, .listener, .route, .nameTable])
        var node = Envoy_Config_Core_V3_Node()
        node.id = "sidecar~198.51.100.10~payments-v1.shop~shop.svc.cluster.local"
        node.metadata.fields["INTERCEPTION_MODE"] = Google_Protobuf_Value(stringValue: "TPROXY")
        let snapshot = store.snapshot(for: node)
        let inbound = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](try #require(snapshot.types[.listener]?.resources.last).resource.value))
        #expect(inbound.name == "virtualInbound")
        #expect(inbound.transparent.value)
        // PERMISSIVE, Istio's default: mutual TLS and plaintext on the workload's port and on any other.
        #expect(inbound.filterChains.map(\.name) == ["inbound|8080||-tls", "inbound|8080||-raw_buffer",
                                                     "InboundPassthroughFilterChain-tls", "InboundPassthroughFilterChain-raw_buffer"])
        #expect(inbound.filterChains.map(\.filterChainMatch.destinationPort.value) == [8080, 8080, 0, 0])
        // The same configuration again changes nothing; new weights change the listeners only.
        #expect(store.update(try resources()).isEmpty)
        let config = try #require(MeshConfigReader.read([("mesh.yaml", Documents.canary.replacingOccurrences(of: "weight: 90", with: "weight: 50")
            .replacingOccurrences(of: "weight: 10", with: "weight: 50"))]).config)
        #expect(store.update(try ProxyConfigGenerator.resources(for: config)) == [.listener])
        #expect(store.snapshot(for: node).types[.cluster]?.version == "1")
        #expect(store.snapshot(for: node).types[.listener]?.version == "3")
    }
}
