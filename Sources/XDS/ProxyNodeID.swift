/// Istio's node id, `sidecar~10.1.2.3~reviews-v1-7d9f.bookinfo~bookinfo.svc.cluster.local`: the proxy
/// type, its IP addresses, `POD.NAMESPACE` and the DNS domain. The control plane finds the workload a
/// proxy stands for by these.
public struct ProxyNodeID: Sendable, Hashable, CustomStringConvertible {
    /// `sidecar` (or `router` for gateways).
    public var type: String
    /// The workload's IPs; Istio puts the first in the id and the rest in metadata (`INSTANCE_IPS`).
    public var ipAddresses: [String]
    public var podName: String
    public var namespace: String
    public var dnsDomain: String

    public init(type: String = "sidecar", ipAddresses: [String], podName: String, namespace: String,
                dnsDomain: String? = nil) {
        self.type = type
        self.ipAddresses = ipAddresses
        self.podName = podName
        self.namespace = namespace
        self.dnsDomain = dnsDomain ?? "\(namespace).svc.cluster.local"
    }

    /// Parses an id; nil if it does not have Istio's four `~`-separated parts.
    public init?(_ id: String) {
        let parts = id.split(separator: "~", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 4, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
        let workload = parts[2]
        guard let dot = workload.lastIndex(of: "."), dot != workload.startIndex else { return nil }
        type = parts[0]
        ipAddresses = parts[1].split(separator: ",").map(String.init)
        podName = String(workload[..<dot])
        namespace = String(workload[workload.index(after: dot)...])
        dnsDomain = parts[3]
    }

    public var description: String {
        "\(type)~\(ipAddresses.first ?? "")~\(podName).\(namespace)~\(dnsDomain)"
    }
}
