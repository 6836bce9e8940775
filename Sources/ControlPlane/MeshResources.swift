import SwiftProtobuf
import XDS

/// The xDS resources for a mesh, built once per configuration change: what every sidecar shares
/// (clusters, endpoints, the outbound listener), and what each workload's inbound listener is made of.
struct MeshResources: Sendable {
    typealias Resource = (name: String, resource: Google_Protobuf_Any)

    /// What one workload's `virtualInbound` is made of: its ports (Istio's `inbound|PORT||` clusters)
    /// and the mutual TLS its PeerAuthentications require.
    struct InboundWorkload: Sendable, Equatable, CustomStringConvertible {
        var ports: [Int]
        var tls: MutualTLSPolicy.Inbound

        var description: String { "ports \(ports.map(String.init).joined(separator: ",")) mtls \(tls)" }
    }

    var clusters: [Resource]
    var endpoints: [Resource]
    var outboundListener: Resource
    /// The workloads the configuration describes (WorkloadEntries and inline endpoints), by IP.
    var inboundWorkloads: [String: InboundWorkload]
    /// The PeerAuthentications in force, for proxies at IPs no workload has.
    var mutualTLS: MutualTLSPolicy

    /// The inbound side of the proxy at `ip`, whose node id says it is in `namespace`: the workload's,
    /// or, for a proxy the configuration does not describe, no ports under its namespace's policy.
    func inbound(ip: String, namespace: String) -> InboundWorkload {
        inboundWorkloads[ip] ?? InboundWorkload(ports: [], tls: mutualTLS.inbound(namespace: namespace))
    }

    /// One line per input of the inbound listeners: when it changes, some proxy's listener does.
    var inboundSummary: [String] {
        inboundWorkloads.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" } + [mutualTLS.description]
    }
}
