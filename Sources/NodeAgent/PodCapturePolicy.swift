import Capture
import Configuration

/// The node's capture settings: istio-iptables options every pod starts from, and namespaces that are
/// never captured. Read from a JSON file (the node agent's ConfigMap):
///
/// ```json
/// {"exclude_namespaces": ["kube-system"],
///  "capture": {"istio-service-cidr": "*", "redirect-dns": "true", "dns-servers": "10.96.0.10"}}
/// ```
public struct NodeDefaults: Sendable {
    public var options: [CaptureOption: String]
    public var excludeNamespaces: Set<String>

    /// Namespaces excluded when the node's settings do not say: Kubernetes' own.
    public static let defaultExcludedNamespaces: Set<String> = ["kube-system"]

    public init(options: [CaptureOption: String] = [:], excludeNamespaces: Set<String> = NodeDefaults.defaultExcludedNamespaces) {
        self.options = options
        self.excludeNamespaces = excludeNamespaces
    }

    /// Parses and validates the file: unknown options and invalid values are refused with their path.
    public init(json text: String) throws(ConfigError) {
        let document: ConfigValue
        do { document = try ConfigValue.parse(json: text) } catch {
            throw ConfigError(path: "", message: "not valid JSON: \(error)")
        }
        let reader = ConfigReader(document)
        var warnings: [String] = []
        try reader.ignoringUnknown(["exclude_namespaces", "capture"], warnings: &warnings)
        if let unknown = warnings.first { throw ConfigError(path: "", message: unknown) }
        self.init()
        if let excluded = try reader.optional("exclude_namespaces") {
            excludeNamespaces = []
            for item in try excluded.list() { excludeNamespaces.insert(try item.string()) }
        }
        if let capture = try reader.optional("capture") {
            for key in try capture.fields().keys.sorted() {
                guard let option = CaptureOption(rawValue: key) else {
                    throw ConfigError(path: "capture.\(key)", message: "not an istio-iptables option")
                }
                options[option] = try capture.required(key).string()
            }
        }
        do { _ = try CaptureSpec(options: options) } catch {
            throw ConfigError(path: "capture", message: error.description)
        }
    }
}

/// What the node agent does with a pod.
public enum PodCaptureDecision: Sendable, Equatable {
    case capture(CaptureSpec)
    case skip(reason: String)
}

/// Decides a pod's capture from the node defaults and the pod's Istio annotations, as Istio's sidecar
/// injector and CNI plugin do.
public struct PodCapturePolicy: Sendable {
    public var defaults: NodeDefaults

    public init(defaults: NodeDefaults) {
        self.defaults = defaults
    }

    /// The annotations that shape capture, and the istio-iptables option each sets.
    static let annotationOptions: [(annotation: String, option: CaptureOption)] = [
        ("traffic.sidecar.istio.io/includeOutboundIPRanges", .outboundCIDRs),
        ("traffic.sidecar.istio.io/excludeOutboundIPRanges", .outboundExcludeCIDRs),
        ("traffic.sidecar.istio.io/includeInboundPorts", .inboundPorts),
        ("traffic.sidecar.istio.io/excludeInboundPorts", .inboundExcludePorts),
        ("traffic.sidecar.istio.io/includeOutboundPorts", .outboundPorts),
        ("traffic.sidecar.istio.io/excludeOutboundPorts", .outboundExcludePorts),
        ("traffic.sidecar.istio.io/kubevirtInterfaces", .kubeVirtInterfaces),
        ("traffic.sidecar.istio.io/excludeInterfaces", .excludeInterfaces),
        ("sidecar.istio.io/interceptionMode", .interceptionMode),
    ]

    static let injectKey = "sidecar.istio.io/inject"

    /// A pod's decision; an annotation with an invalid value is refused, naming the annotation.
    public func decide(for pod: PodMetadata) throws(CaptureSpecError) -> PodCaptureDecision {
        if defaults.excludeNamespaces.contains(pod.namespace) {
            return .skip(reason: "namespace \(pod.namespace) is excluded on this node")
        }
        if pod.hostNetwork {
            return .skip(reason: "the pod uses the node's network")
        }
        if let inject = pod.labels[Self.injectKey] ?? pod.annotations[Self.injectKey], inject.lowercased() == "false" {
            return .skip(reason: "\(Self.injectKey) is false")
        }
        var options = defaults.options
        for (annotation, option) in Self.annotationOptions {
            guard var value = pod.annotations[annotation] else { continue }
            if option == .inboundExcludePorts {
                // The injector always keeps the agent's and proxy's own ports out of inbound capture.
                let base = defaults.options[.inboundExcludePorts] ?? "15020,15021,15090"
                value = value.isEmpty ? base : "\(base),\(value)"
            }
            options[option] = value
        }
        do {
            return .capture(try CaptureSpec(options: options))
        } catch {
            let annotation = Self.annotationOptions.first { $0.option.displayName == error.option }?.annotation
            guard let annotation, pod.annotations[annotation] != nil else { throw error }
            throw CaptureSpecError(option: "annotation \(annotation)", value: error.value, reason: error.reason)
        }
    }
}
