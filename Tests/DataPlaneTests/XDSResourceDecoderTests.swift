import Configuration
@testable import DataPlane
import NIOCore
import SwiftProtobuf
import Testing
import XDS

@Suite struct XDSResourceDecoderTests {
    func tcpProxyFilter(cluster: String) throws -> Envoy_Config_Listener_V3_Filter {
        var proxy = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy()
        proxy.statPrefix = cluster
        proxy.cluster = cluster
        var filter = Envoy_Config_Listener_V3_Filter()
        filter.name = "envoy.filters.network.tcp_proxy"
        filter.typedConfig = try Google_Protobuf_Any(message: proxy)
        return filter
    }

    func listener(filters: [Envoy_Config_Listener_V3_Filter], port: UInt32 = 15001) -> Envoy_Config_Listener_V3_Listener {
        var listener = Envoy_Config_Listener_V3_Listener()
        listener.name = "virtualOutbound"
        listener.address.socketAddress.address = "0.0.0.0"
        listener.address.socketAddress.portValue = port
        var chain = Envoy_Config_Listener_V3_FilterChain()
        chain.filterChainMatch.destinationPort = Google_Protobuf_UInt32Value(9080)
        chain.filterChainMatch.prefixRanges = [Envoy_Config_Core_V3_CidrRange.with {
            $0.addressPrefix = "198.51.100.0"
            $0.prefixLen = Google_Protobuf_UInt32Value(24)
        }]
        chain.filters = filters
        listener.filterChains = [chain]
        var tls = chain
        tls.filterChainMatch.transportProtocol = "tls"
        listener.filterChains.append(tls)
        return listener
    }

    @Test func listenersBecomeFilterChainsAndTLSChainsMatchOnlyDetectedTLS() throws {
        let decoded = try XDSResourceDecoder.listeners([try .packed(listener(filters: [tcpProxyFilter(cluster: "svc")]), as: .listener)])
        let only = try #require(decoded.first)
        #expect(only.port == 15001)
        #expect(only.chains.count == 2)
        let destination = try SocketAddress(ipAddress: "198.51.100.7", port: 9080)
        #expect(only.chain(for: destination)?.transportProtocol == nil)
        #expect(only.chain(for: destination, detected: .init(transportProtocol: "tls"))?.transportProtocol == "tls")
        #expect(only.chain(for: try SocketAddress(ipAddress: "198.51.101.7", port: 9080)) == nil)
    }

    @Test func refusalsNameTheResourceAndField() throws {
        var manager = Envoy_Config_Listener_V3_Filter()
        manager.name = "envoy.filters.network.http_connection_manager"
        let cases: [(Google_Protobuf_Any, String)] = [
            (try .packed(listener(filters: [manager]), as: .listener),
             "listener \"virtualOutbound\".filter_chains[0].filters[0]: \"envoy.filters.network.http_connection_manager\" is not supported: Capstan has envoy.filters.network.tcp_proxy only"),
            (try .packed(listener(filters: [tcpProxyFilter(cluster: "svc")], port: 0), as: .listener),
             "listener \"virtualOutbound\".address: needs a socket_address with an IP address and a port 1-65535"),
        ]
        for (resource, message) in cases {
            #expect(throws: ConfigError.self) { try XDSResourceDecoder.listeners([resource]) }
            do {
                _ = try XDSResourceDecoder.listeners([resource])
            } catch {
                #expect(error.description == message)
            }
        }
        var cluster = Envoy_Config_Cluster_V3_Cluster()
        cluster.name = "svc"
        cluster.type = .static
        cluster.lbPolicy = .clusterProvided
        #expect(throws: ConfigError.self) { try XDSResourceDecoder.clusters([try .packed(cluster, as: .cluster)]) }
        // A listener where a cluster belongs is refused, not misread.
        #expect(throws: ConfigError.self) { try XDSResourceDecoder.clusters([try .packed(listener(filters: []), as: .listener)]) }
    }

    @Test func edsClustersWaitForAssignmentsAndUnhealthyEndpointsAreLeftOut() throws {
        var cluster = Envoy_Config_Cluster_V3_Cluster()
        cluster.name = "outbound|9080|v1|payments.shop.svc.cluster.local"
        cluster.type = .eds
        let decoded = try XDSResourceDecoder.clusters([try .packed(cluster, as: .cluster)])
        #expect(decoded.first?.endpointService == cluster.name)
        var assignment = Envoy_Config_Endpoint_V3_ClusterLoadAssignment()
        assignment.clusterName = cluster.name
        assignment.endpoints = [.with {
            $0.lbEndpoints = [("198.51.100.10", Envoy_Config_Core_V3_HealthStatus.healthy), ("198.51.100.11", .draining)].map { address, health in
                .with {
                    $0.endpoint.address.socketAddress.address = address
                    $0.endpoint.address.socketAddress.portValue = 80
                    $0.healthStatus = health
                }
            }
        }]
        let endpoints = try XDSResourceDecoder.assignments([try .packed(assignment, as: .endpoint)])
        #expect(endpoints[cluster.name]?.map(\.ipAddress) == ["198.51.100.10"])
    }
}
