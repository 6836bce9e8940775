/// Istio's mesh networks (`istio.mesh.v1alpha1.MeshNetworks`, the `meshNetworks` key of the `istio`
/// ConfigMap): which endpoints are on which network, and the gateways (east-west, AUTO_PASSTHROUGH on
/// 15443) through which other networks reach them. With at least one gateway the mesh is multi-network
/// and sidecars get "split horizon" EDS (``NetworkEndpoints``), as from istiod.
public struct MeshNetworks: Sendable, Equatable {
    /// One network gateway (istiod's `NetworkGateway` from meshNetworks): an IP address and a port.
    public struct Gateway: Sendable, Hashable, Comparable {
        public var network: String
        /// An IP address in canonical form.
        public var address: String
        public var port: Int

        public init(network: String, address: String, port: Int) {
            self.network = network
            self.address = address
            self.port = port
        }

        /// istiod's `SortGateways`: by address (as text), then port.
        public static func < (a: Gateway, b: Gateway) -> Bool { (a.address, a.port) < (b.address, b.port) }
    }

    /// The gateways of each network, sorted; a network without any is absent.
    public var gateways: [String: [Gateway]] = [:]
    /// `endpoints[].fromCidr`: an endpoint that names no network, in one of these, is on its network.
    var ranges: [(range: IPNetwork, network: String)] = []

    public init() {}

    public static func == (a: Self, b: Self) -> Bool {
        a.gateways == b.gateways && a.ranges.map(\.range) == b.ranges.map(\.range) && a.ranges.map(\.network) == b.ranges.map(\.network)
    }

    /// istiod's `IsMultiNetworkEnabled`: some network has a gateway. Without one every endpoint is sent
    /// to every proxy as it is.
    public var isMultiNetwork: Bool { !gateways.isEmpty }

    /// istiod's `GetLBWeightScaleFactor`: the least common multiple of the networks' gateway counts, so
    /// that an endpoint's weight divides evenly among its network's gateways.
    public var weightScale: UInt32 {
        var lcm = 1
        for count in gateways.values.map(\.count) where count > 0 {
            var (x, y) = (lcm, count)
            while y != 0 { (x, y) = (y, x % y) }
            lcm = lcm / x * count
        }
        return UInt32(clamping: lcm)
    }

    /// The network of an endpoint, as istiod's service registry gives it: its `network`, else its label
    /// `topology.istio.io/network`, else the first `fromCidr` range holding its address; nil: none.
    public func network(of endpoint: WorkloadEndpoint) -> String? {
        if let network = endpoint.network, !network.isEmpty { return network }
        if let label = endpoint.labels[Self.networkLabel], !label.isEmpty { return label }
        guard !ranges.isEmpty, let address = IPNetwork(endpoint.address) else { return nil }
        return ranges.first { $0.range.contains(address) }?.network
    }

    /// The label that puts a workload on a network (`topology.istio.io/network`).
    public static let networkLabel = "topology.istio.io/network"
}
