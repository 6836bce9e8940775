import Configuration
import Identity

/// The metadata of the node the proxy presents to the control plane, in the shape istiod reads it
/// (pilot's `model.NodeMetadata`) and pilot-agent fills it: strings, except `LABELS` and `ANNOTATIONS`
/// (objects, from the pod's downward API files), `PROXY_CONFIG` (the ProxyConfig as given),
/// `PILOT_SAN` (a list) and the `ENVOY_*_PORT`s (numbers). istiod chooses what it generates by these:
/// the labels select policies and subsets, `ISTIO_VERSION` gates features, `INTERCEPTION_MODE` shapes
/// listeners.
public struct NodeMetadata: Sendable, Equatable {
    /// The Istio release Capstan speaks for (`ISTIO_VERSION`): the one whose generated Envoy
    /// configuration its tests read (`../shared/istio-config/`). `ISTIO_META_ISTIO_VERSION` overrides it.
    public static let istioVersion = "1.20.8"

    public var fields: [String: ConfigValue]
    /// Labels or annotations files that could not be read: said in the log; the rest is sent.
    public var warnings: [String] = []

    /// The metadata for `settings`, reading the pod's labels and annotations from
    /// `settings.podInfoDirectory` (absent files, as on a VM, leave them out). Precedence, lowest first:
    /// what the agent derives, `ISTIO_META_*` (strings), `ISTIO_METAJSON_*` (JSON values).
    public init(settings: AgentSettings) {
        var fields: [String: ConfigValue] = [
            "NAME": .string(settings.podName),
            "NAMESPACE": .string(settings.podNamespace),
            "INSTANCE_IPS": .string(settings.instanceIPs.joined(separator: ",")),
            "SERVICE_ACCOUNT": .string(settings.serviceAccount),
            "CLUSTER_ID": .string(settings.clusterID),
            "MESH_ID": .string(settings.trustDomain),
            "ISTIO_VERSION": .string(Self.istioVersion),
            "INTERCEPTION_MODE": .string("REDIRECT"),
            "ENVOY_PROMETHEUS_PORT": .number(Double(settings.proxyStatsPort)),
            "ENVOY_STATUS_PORT": .number(Double(settings.readinessPort)),
        ]
        if case .tcp(let host, _) = settings.discoveryAddress { fields["PILOT_SAN"] = .array([.string(host)]) }
        if let node = settings.nodeName { fields["NODE_NAME"] = .string(node) }
        if let proxyConfig = settings.proxyConfigDocument { fields["PROXY_CONFIG"] = proxyConfig }
        for (key, file) in [("LABELS", "labels"), ("ANNOTATIONS", "annotations")] {
            let path = "\(settings.podInfoDirectory)/\(file)"
            guard CredentialFile.exists(path) else { continue }
            do {
                let entries = try DownwardAPIFile.parse(try CredentialFile.read(path), path: path)
                fields[key] = .object(entries.mapValues { .string($0) })
            } catch {
                warnings.append("the pod's \(file) are not sent: \(error)")
            }
        }
        fields.merge(settings.nodeMetadata.mapValues { .string($0) }) { _, given in given }
        fields.merge(settings.nodeMetadataJSON) { _, given in given }
        self.fields = fields
    }
}
