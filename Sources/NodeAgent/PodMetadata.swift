import Configuration
import Netfilter

/// What the node agent needs to know of a pod: its annotations and labels, and whether it uses the
/// node's network.
public struct PodMetadata: Sendable, Equatable {
    public var namespace: String
    public var name: String
    public var annotations: [String: String]
    public var labels: [String: String]
    public var hostNetwork: Bool

    public init(namespace: String, name: String, annotations: [String: String] = [:],
                labels: [String: String] = [:], hostNetwork: Bool = false) {
        self.namespace = namespace
        self.name = name
        self.annotations = annotations
        self.labels = labels
        self.hostNetwork = hostNetwork
    }

    /// Reads a Kubernetes Pod object (as the API serves it, or `kubectl get pod -o json` prints it).
    public init(pod reader: ConfigReader) throws(ConfigError) {
        let metadata = try reader.required("metadata")
        namespace = try metadata.optional("namespace")?.string() ?? "default"
        name = try metadata.required("name").string()
        annotations = try Self.stringMap(metadata.optional("annotations"))
        labels = try Self.stringMap(metadata.optional("labels"))
        hostNetwork = try reader.optional("spec")?.optional("hostNetwork")?.bool() ?? false
    }

    private static func stringMap(_ reader: ConfigReader?) throws(ConfigError) -> [String: String] {
        guard let reader else { return [:] }
        var map: [String: String] = [:]
        for key in try reader.fields().keys {
            map[key] = try reader.required(key).string()
        }
        return map
    }
}

/// Where the node agent learns about pods.
public protocol PodMetadataSource: Sendable {
    /// The pod, or nil if the source has no record of it.
    func metadata(namespace: String, name: String) async throws -> PodMetadata?
    /// How logs and errors name the source.
    var description: String { get }
}

/// Pod metadata outside a cluster (VMs, tests): `DIR/NAMESPACE/NAME.json`, each a Pod object in JSON.
/// A pod without a file has no annotations and is captured with the node defaults.
public struct PodMetadataDirectory: PodMetadataSource {
    public let directory: String

    public init(directory: String) {
        self.directory = directory
    }

    public var description: String { "pod metadata directory \(directory)" }

    public func metadata(namespace: String, name: String) async throws -> PodMetadata? {
        // Kubernetes names cannot contain '/', but the request comes from outside: do not leave DIR.
        guard !namespace.contains("/"), !name.contains("/"), !namespace.hasPrefix("."), !name.hasPrefix(".") else {
            throw ConfigError(path: "\(namespace)/\(name)", message: "not a valid pod namespace and name")
        }
        let path = "\(directory)/\(namespace)/\(name).json"
        guard let text = SystemFile.read(path) else { return nil }
        let document: ConfigValue
        do { document = try ConfigValue.parse(json: text) } catch {
            throw ConfigError(path: path, message: "not valid JSON: \(error)")
        }
        do {
            return try PodMetadata(pod: ConfigReader(document))
        } catch {
            throw ConfigError(path: "\(path): \(error.path)", message: error.message)
        }
    }
}
