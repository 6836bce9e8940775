import SwiftProtobuf
import XDS

/// istiod's split horizon EDS (`EndpointsByNetworkFilter`) for one cluster's assignment, applied for
/// the network of the proxy that asks (node metadata `NETWORK`), when the mesh has network gateways
/// (``MeshNetworks/isMultiNetwork``):
/// - every endpoint's weight (1 when not given) is multiplied by ``MeshNetworks/weightScale``, so that it
///   divides evenly among its network's gateways (saturating at 2^32-1);
/// - an endpoint on the proxy's network, or with no network, or on a network without a gateway, or for
///   a proxy with no network, is sent as it is;
/// - an endpoint on another network with gateways is replaced by those gateways (address and port), each
///   taking an equal share of its weight, when the cluster speaks Istio mTLS (the gateway passes the
///   sidecar's mTLS through by SNI; plaintext cannot cross it), and dropped otherwise;
/// - within each locality group, the gateways follow the direct endpoints, sorted by address and port,
///   each weighing the sum of the shares it took (at least 1), labelled with its network; the group's
///   weight is its endpoints' sum (none for a group left empty).
/// Locality load balancing (``LocalityLoadBalancing``) then applies to the result, as in istiod.
/// Where a proxy is, for split horizon EDS: its network (node metadata `NETWORK`, empty: none) and the
/// networks it asks to see (`REQUESTED_NETWORK_VIEW`, comma-separated; nil: all), as istiod reads them.
struct ProxyNetwork: Sendable, Hashable {
    var network = ""
    /// Endpoints on other networks are left out entirely (those on no network stay).
    var view: Set<String>?

    static let none = ProxyNetwork()

    init(network: String = "", view: Set<String>? = nil) {
        self.network = network
        self.view = view
    }

    init(_ node: Envoy_Config_Core_V3_Node) {
        network = node.metadata.fields["NETWORK"]?.stringValue ?? ""
        if let text = node.metadata.fields["REQUESTED_NETWORK_VIEW"]?.stringValue {
            let names = text.split(separator: ",").map { String($0).trimmingSpaces }.filter { !$0.isEmpty }
            if !names.isEmpty { view = Set(names) }
        }
    }

    /// For cache keys: equal exactly when two proxies get the same EDS.
    var key: String { network + "|" + (view.map { $0.sorted().joined(separator: ",") } ?? "*") }
}

private extension String {
    var trimmingSpaces: String { String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed()) }
}

struct NetworkEndpoints: Sendable, Equatable {
    /// The assignment as built from the configuration (weights not yet scaled).
    var assignment: Envoy_Config_Endpoint_V3_ClusterLoadAssignment
    /// Each locality group's endpoints' networks (nil: none), by group and position.
    var endpointNetworks: [[String?]]
    /// Each locality group's endpoints' labels (for `failoverPriority`), by group and position.
    var endpointLabels: [[[String: String]]]
    /// The cluster's transport socket is Istio mTLS (DestinationRule ISTIO_MUTUAL, or auto mTLS with every
    /// endpoint qualifying): only then may its endpoints on other networks be reached through gateways.
    var mutualTLS: Bool

    /// Whether any endpoint is on a network: only such clusters differ between proxies.
    var dependsOnNetwork: Bool { endpointNetworks.contains { $0.contains { $0 != nil } } }

    /// The assignment for a proxy on `proxy`'s network (empty: none, which reaches every endpoint
    /// directly), without the networks its view leaves out, with its groups' endpoint labels (gateways
    /// labelled with their network).
    func applied(proxy: ProxyNetwork, networks: MeshNetworks) -> (assignment: Envoy_Config_Endpoint_V3_ClusterLoadAssignment,
                                                                   labels: [[[String: String]]]) {
        guard networks.isMultiNetwork else { return (assignment, endpointLabels) }
        let scale = networks.weightScale
        var result = assignment
        var labels: [[[String: String]]] = []
        for (index, group) in assignment.endpoints.enumerated() {
            var kept: [Envoy_Config_Endpoint_V3_LbEndpoint] = []
            var keptLabels: [[String: String]] = []
            var gatewayWeights: [MeshNetworks.Gateway: UInt32] = [:]
            for (position, endpoint) in group.lbEndpoints.enumerated() {
                let given = endpoint.hasLoadBalancingWeight && endpoint.loadBalancingWeight.value > 0 ? endpoint.loadBalancingWeight.value : 1
                let weight = given < UInt32.max / scale ? given * scale : UInt32.max
                let network = endpointNetworks.indices.contains(index) && endpointNetworks[index].indices.contains(position)
                    ? endpointNetworks[index][position] : nil
                // istiod's ProxyView: an endpoint on a network the proxy does not ask to see is not sent at all.
                if let view = proxy.view, let network, !view.contains(network) { continue }
                let proxyNetwork = proxy.network
                let gateways = network.map { networks.gateways[$0] ?? [] } ?? []
                if proxyNetwork.isEmpty || network == nil || network == proxyNetwork || gateways.isEmpty {
                    var direct = endpoint
                    // Unscaled weights stay as given (an absent one is Envoy's 1 already).
                    if scale > 1 { direct.loadBalancingWeight = Google_Protobuf_UInt32Value(weight) }
                    kept.append(direct)
                    keptLabels.append(endpointLabels.indices.contains(index) && endpointLabels[index].indices.contains(position)
                                      ? endpointLabels[index][position] : [:])
                    continue
                }
                // Cross-network traffic needs mTLS: the gateway routes it by the SNI of the sidecar's handshake.
                guard mutualTLS else { continue }
                let share = weight / UInt32(gateways.count)
                for gateway in gateways { gatewayWeights[gateway, default: 0] &+= share }
            }
            for (gateway, weight) in gatewayWeights.sorted(by: { $0.key < $1.key }) {
                var endpoint = Envoy_Config_Endpoint_V3_LbEndpoint()
                endpoint.endpoint.address = ProxyConfigGenerator.socketAddress(gateway.address, port: gateway.port)
                endpoint.healthStatus = .healthy
                endpoint.loadBalancingWeight = Google_Protobuf_UInt32Value(max(weight, 1))
                kept.append(endpoint)
                keptLabels.append([MeshNetworks.networkLabel: gateway.network])
            }
            var filtered = group
            filtered.lbEndpoints = kept
            if kept.isEmpty {
                filtered.clearLoadBalancingWeight()
            } else {
                let total = kept.reduce(UInt64(0)) { $0 + UInt64($1.hasLoadBalancingWeight ? $1.loadBalancingWeight.value : 1) }
                filtered.loadBalancingWeight = Google_Protobuf_UInt32Value(UInt32(clamping: total))
            }
            result.endpoints[index] = filtered
            labels.append(keptLabels)
        }
        return (result, labels)
    }
}
