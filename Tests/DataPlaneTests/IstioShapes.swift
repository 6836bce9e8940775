import FoundationEssentials
import SwiftProtobuf
import XDS

/// xDS resources in the shapes istiod sends them: TLS contexts whose certificate and root come over SDS
/// from the agent's `sds-grpc` cluster, `virtualInbound` with tls_inspector and per-transport chains.
enum IstioShapes {
    static let sdsCluster = "sds-grpc"

    static func sdsSecret(_ name: String, from sdsCluster: String = sdsCluster) -> Envoy_Extensions_TransportSockets_Tls_V3_SdsSecretConfig {
        var config = Envoy_Extensions_TransportSockets_Tls_V3_SdsSecretConfig()
        config.name = name
        var source = Envoy_Config_Core_V3_ApiConfigSource()
        source.apiType = .grpc
        source.transportApiVersion = .v3
        var service = Envoy_Config_Core_V3_GrpcService()
        service.envoyGrpc.clusterName = sdsCluster
        source.grpcServices = [service]
        config.sdsConfig.apiConfigSource = source
        config.sdsConfig.resourceApiVersion = .v3
        return config
    }

    /// `default` and `ROOTCA` over SDS, the peer's SPIFFE ID required when `peers` is not empty.
    static func commonContext(peers: [String] = [], alpn: [String] = [],
                              sdsCluster: String = sdsCluster) -> Envoy_Extensions_TransportSockets_Tls_V3_CommonTlsContext {
        var common = Envoy_Extensions_TransportSockets_Tls_V3_CommonTlsContext()
        common.tlsCertificateSdsSecretConfigs = [sdsSecret("default", from: sdsCluster)]
        var combined = Envoy_Extensions_TransportSockets_Tls_V3_CommonTlsContext.CombinedCertificateValidationContext()
        combined.defaultValidationContext.matchTypedSubjectAltNames = peers.map { peer in
            var matcher = Envoy_Extensions_TransportSockets_Tls_V3_SubjectAltNameMatcher()
            matcher.sanType = .uri
            matcher.matcher.exact = peer
            return matcher
        }
        combined.validationContextSdsSecretConfig = sdsSecret("ROOTCA", from: sdsCluster)
        common.combinedValidationContext = combined
        common.alpnProtocols = alpn
        return common
    }

    static func upstreamSocket(peers: [String], sni: String = "outbound_.9080_._.payments.shop.svc.cluster.local",
                               sdsCluster: String = sdsCluster) throws -> Envoy_Config_Core_V3_TransportSocket {
        var context = Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext()
        context.commonTlsContext = commonContext(peers: peers, alpn: ["istio-peer-exchange", "istio"], sdsCluster: sdsCluster)
        context.sni = sni
        return try socket(context)
    }

    static func downstreamSocket(requireClientCertificate: Bool = true) throws -> Envoy_Config_Core_V3_TransportSocket {
        var context = Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext()
        context.commonTlsContext = commonContext(alpn: ["istio-peer-exchange", "istio"])
        context.requireClientCertificate = Google_Protobuf_BoolValue(requireClientCertificate)
        return try socket(context)
    }

    static func socket(_ context: some SwiftProtobuf.Message) throws -> Envoy_Config_Core_V3_TransportSocket {
        var socket = Envoy_Config_Core_V3_TransportSocket()
        socket.name = "envoy.transport_sockets.tls"
        socket.typedConfig = try Google_Protobuf_Any(message: context)
        return socket
    }

    static func tcpProxy(to cluster: String) throws -> Envoy_Config_Listener_V3_Filter {
        var proxy = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy()
        proxy.statPrefix = cluster
        proxy.cluster = cluster
        var filter = Envoy_Config_Listener_V3_Filter()
        filter.name = "envoy.filters.network.tcp_proxy"
        filter.typedConfig = try Google_Protobuf_Any(message: proxy)
        return filter
    }

    /// A STATIC cluster to 127.0.0.1:`port`.
    static func cluster(_ name: String, port: Int, tls: Envoy_Config_Core_V3_TransportSocket? = nil) -> Envoy_Config_Cluster_V3_Cluster {
        var cluster = Envoy_Config_Cluster_V3_Cluster()
        cluster.name = name
        cluster.type = .static
        cluster.connectTimeout = Google_Protobuf_Duration(seconds: 2)
        var endpoint = Envoy_Config_Endpoint_V3_LbEndpoint()
        endpoint.endpoint.address.socketAddress.address = "127.0.0.1"
        endpoint.endpoint.address.socketAddress.portValue = UInt32(port)
        var locality = Envoy_Config_Endpoint_V3_LocalityLbEndpoints()
        locality.lbEndpoints = [endpoint]
        cluster.loadAssignment.clusterName = name
        cluster.loadAssignment.endpoints = [locality]
        if let tls { cluster.transportSocket = tls }
        return cluster
    }

    static func chain(_ name: String, to cluster: String, transportProtocol: String = "", alpn: [String] = [],
                      tls: Envoy_Config_Core_V3_TransportSocket? = nil) throws -> Envoy_Config_Listener_V3_FilterChain {
        var chain = Envoy_Config_Listener_V3_FilterChain()
        chain.name = name
        chain.filterChainMatch.transportProtocol = transportProtocol
        chain.filterChainMatch.applicationProtocols = alpn
        chain.filters = [try tcpProxy(to: cluster)]
        if let tls { chain.transportSocket = tls }
        return chain
    }

    static func listener(_ name: String, port: Int, inbound: Bool, inspectsTLS: Bool,
                         chains: [Envoy_Config_Listener_V3_FilterChain]) throws -> Envoy_Config_Listener_V3_Listener {
        var listener = Envoy_Config_Listener_V3_Listener()
        listener.name = name
        listener.address.socketAddress.address = "0.0.0.0"
        listener.address.socketAddress.portValue = UInt32(port)
        listener.trafficDirection = inbound ? .inbound : .outbound
        var originalDestination = Envoy_Config_Listener_V3_ListenerFilter()
        originalDestination.name = "envoy.filters.listener.original_dst"
        listener.listenerFilters = [originalDestination]
        if inspectsTLS {
            var inspector = Envoy_Config_Listener_V3_ListenerFilter()
            inspector.name = "envoy.filters.listener.tls_inspector"
            inspector.typedConfig = try Google_Protobuf_Any(message: Envoy_Extensions_Filters_Listener_TlsInspector_V3_TlsInspector())
            listener.listenerFilters.append(inspector)
        }
        listener.filterChains = chains
        return listener
    }
}
