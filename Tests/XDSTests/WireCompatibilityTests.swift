import CapstanTestSupport
import Foundation
import SwiftProtobuf
import Testing
import XDS

/// Our generated messages against Envoy's own (PyPI's xds-protos, decoded by Python's protobuf runtime):
/// what we encode, an implementation we did not write reads field for field.
@Suite struct WireCompatibilityTests {
    /// Decodes a serialized DiscoveryResponse with xds-protos and prints it as JSON (Envoy's field names).
    static let decoder = """
        import sys, base64
        from google.protobuf import json_format
        from envoy.service.discovery.v3 import discovery_pb2
        import envoy.config.listener.v3.listener_pb2, envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2
        response = discovery_pb2.DiscoveryResponse.FromString(base64.b64decode(sys.stdin.read()))
        print(json_format.MessageToJson(response, sort_keys=True, indent=None))
        """

    @Test func envoyReadsOurListenerDiscoveryResponse() throws {
        var proxy = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy()
        proxy.statPrefix = "outbound|9080||payments.shop.svc.cluster.local"
        proxy.weightedClusters.clusters = [("v1", 90), ("v2", 10)].map { name, weight in
            var cluster = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.WeightedCluster.ClusterWeight()
            cluster.name = "outbound|9080|\(name)|payments.shop.svc.cluster.local"
            cluster.weight = UInt32(weight)
            return cluster
        }
        var filter = Envoy_Config_Listener_V3_Filter()
        filter.name = "envoy.filters.network.tcp_proxy"
        filter.typedConfig = try Google_Protobuf_Any(message: proxy, typePrefix: "type.googleapis.com")
        var chain = Envoy_Config_Listener_V3_FilterChain()
        chain.filterChainMatch.destinationPort = Google_Protobuf_UInt32Value(9080)
        var prefix = Envoy_Config_Core_V3_CidrRange()
        prefix.addressPrefix = "10.96.0.20"
        prefix.prefixLen = Google_Protobuf_UInt32Value(32)
        chain.filterChainMatch.prefixRanges = [prefix]
        chain.filters = [filter]
        var listener = Envoy_Config_Listener_V3_Listener()
        listener.name = "virtualOutbound"
        listener.address.socketAddress.address = "0.0.0.0"
        listener.address.socketAddress.portValue = 15001
        listener.useOriginalDst = Google_Protobuf_BoolValue(true)
        listener.trafficDirection = .outbound
        listener.filterChains = [chain]
        var response = Envoy_Service_Discovery_V3_DiscoveryResponse()
        response.versionInfo = "2026-11-21T00:00:00Z/7"
        response.typeURL = "type.googleapis.com/envoy.config.listener.v3.Listener"
        response.nonce = "n7"
        response.resources = [try Google_Protobuf_Any(message: listener, typePrefix: "type.googleapis.com")]

        let result = try ChildProcess.run("/usr/bin/env", ["python3", "-c", Self.decoder],
                                          input: try response.serializedData().base64EncodedString())
        #expect(result.status == 0, "\(result)")
        let json = result.standardOutput
        for fragment in [#""versionInfo": "2026-11-21T00:00:00Z/7""#, #""nonce": "n7""#, #""name": "virtualOutbound""#,
                         #""portValue": 15001"#, #""useOriginalDst": true"#, #""trafficDirection": "OUTBOUND""#,
                         #""destinationPort": 9080"#, #""addressPrefix": "10.96.0.20""#, #""prefixLen": 32"#,
                         #""name": "outbound|9080|v2|payments.shop.svc.cluster.local", "weight": 10"#,
                         #""statPrefix": "outbound|9080||payments.shop.svc.cluster.local""#] {
            #expect(json.contains(fragment), "missing \(fragment) in \(json)")
        }
    }
}
