import Configuration

/// One call of the CNI plugin by a container runtime: the `CNI_*` environment and the network
/// configuration on standard input, checked as the spec requires before anything acts on them.
public struct CNIInvocation: Sendable {
    public enum Command: String, Sendable {
        case add = "ADD"
        case delete = "DEL"
        case check = "CHECK"
        case version = "VERSION"
        case status = "STATUS"
        case garbageCollect = "GC"
    }

    /// The versions this plugin speaks, oldest first (CHECK exists from 0.4.0 on).
    public static let supportedVersions = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

    public var command: Command
    public var containerID: String
    public var networkNamespace: String?
    public var interfaceName: String
    /// `CNI_ARGS`: `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, … as the kubelet passes them.
    public var arguments: [String: String]
    public var config: CNIPluginConfig

    public var podName: String? { arguments["K8S_POD_NAME"] }
    public var podNamespace: String? { arguments["K8S_POD_NAMESPACE"] }

    /// Reads the call from the environment and standard input. VERSION needs no configuration beyond
    /// an optional `cniVersion`; the other commands need the spec's variables.
    public static func parse(environment: [String: String], stdin: String) throws(CNIError) -> CNIInvocation {
        guard let commandName = environment["CNI_COMMAND"], !commandName.isEmpty else {
            throw CNIError(.invalidEnvironment, "CNI_COMMAND is not set")
        }
        guard let command = Command(rawValue: commandName) else {
            throw CNIError(.invalidEnvironment, "unknown CNI_COMMAND \(commandName)",
                           details: "expected ADD, DEL, CHECK, VERSION, STATUS or GC")
        }
        let config = try CNIPluginConfig(parsing: stdin, allowEmpty: command == .version)
        var invocation = CNIInvocation(command: command, containerID: "", networkNamespace: nil,
                                       interfaceName: "", arguments: [:], config: config)
        guard command == .add || command == .delete || command == .check else { return invocation }

        if command == .check && config.cniVersion.versionOrder.lexicographicallyPrecedes("0.4.0".versionOrder) {
            throw CNIError(.incompatibleVersion, "CHECK is not defined for cniVersion \(config.cniVersion)",
                           details: "CHECK needs cniVersion 0.4.0 or later")
        }
        invocation.containerID = try required("CNI_CONTAINERID", environment)
        guard invocation.containerID.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) }) else {
            throw CNIError(.invalidEnvironment, "invalid CNI_CONTAINERID \(invocation.containerID)",
                           details: "a container id has letters, digits, '_', '.' and '-' only")
        }
        invocation.interfaceName = try required("CNI_IFNAME", environment)
        guard invocation.interfaceName.utf8.count <= 15, invocation.interfaceName != ".", invocation.interfaceName != "..",
              !invocation.interfaceName.contains(where: { $0 == "/" || $0 == ":" || $0.isWhitespace }) else {
            throw CNIError(.invalidEnvironment, "invalid CNI_IFNAME \(invocation.interfaceName)",
                           details: "an interface name has at most 15 characters and no '/', ':' or spaces")
        }
        let netns = environment["CNI_NETNS"].flatMap { $0.isEmpty ? nil : $0 }
        if netns == nil && command != .delete {
            throw CNIError(.invalidEnvironment, "CNI_NETNS is not set", details: "\(command.rawValue) needs the pod's network namespace")
        }
        invocation.networkNamespace = netns
        invocation.arguments = try parseArguments(environment["CNI_ARGS"] ?? "")
        return invocation
    }

    private static func required(_ name: String, _ environment: [String: String]) throws(CNIError) -> String {
        guard let value = environment[name], !value.isEmpty else {
            throw CNIError(.invalidEnvironment, "\(name) is not set")
        }
        return value
    }

    /// `K=V;K=V`; an item without `=` is refused, as libcni's parser does.
    static func parseArguments(_ text: String) throws(CNIError) -> [String: String] {
        var arguments: [String: String] = [:]
        for item in text.split(separator: ";") where !item.isEmpty {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard pair.count == 2, !pair[0].isEmpty else {
                throw CNIError(.invalidEnvironment, "invalid CNI_ARGS item \(item)", details: "expected KEY=VALUE")
            }
            arguments[String(pair[0])] = String(pair[1])
        }
        return arguments
    }

    /// The pod's addresses from the previous plugin's result (`ips[].address`, without the prefix length).
    public var podAddresses: [String] {
        guard case .array(let ips)? = config.previousResult?["ips"] else { return [] }
        return ips.compactMap { $0["address"]?.stringValue?.split(separator: "/").first.map(String.init) }
    }
}

/// The plugin's entry in a network configuration list, with Capstan's own fields.
///
/// ```json
/// {"type": "capstan-cni", "agent_socket": "/var/run/capstan/cni.sock", "agent_timeout": "5s",
///  "exclude_namespaces": ["kube-system"]}
/// ```
public struct CNIPluginConfig: Sendable {
    public static let defaultAgentSocket = "/var/run/capstan/cni.sock"

    public var cniVersion: String
    public var name: String
    public var type: String
    /// The result of the plugins before this one, returned unchanged by ADD.
    public var previousResult: ConfigValue?
    public var agentSocket: String
    public var agentTimeout: Duration
    /// Pods in these namespaces are passed through without asking the agent (Istio's `exclude_namespaces`).
    public var excludeNamespaces: Set<String>

    init(parsing text: String, allowEmpty: Bool) throws(CNIError) {
        let document: ConfigValue
        if allowEmpty && text.allSatisfy(\.isWhitespace) {
            document = .object([:])
        } else {
            do { document = try ConfigValue.parse(json: text) } catch {
                throw CNIError(.decodeFailure, "network configuration on stdin is not valid JSON", details: "\(error)")
            }
        }
        do {
            try self.init(ConfigReader(document), allowEmpty: allowEmpty)
        } catch {
            throw CNIError(.invalidNetworkConfig, "invalid network configuration", details: error.description)
        }
        guard CNIInvocation.supportedVersions.contains(cniVersion) else {
            throw CNIError(.incompatibleVersion, "cniVersion \(cniVersion) is not supported",
                           details: "supported: \(CNIInvocation.supportedVersions.joined(separator: ", "))")
        }
    }

    private init(_ reader: ConfigReader, allowEmpty: Bool) throws(ConfigError) {
        cniVersion = try reader.optional("cniVersion")?.string() ?? (allowEmpty ? "1.1.0" : "")
        if cniVersion.isEmpty { throw ConfigError(path: "cniVersion", message: "is required") }
        name = try reader.optional("name")?.string() ?? ""
        type = try reader.optional("type")?.string() ?? ""
        previousResult = try reader.optional("prevResult").map { result throws(ConfigError) in
            _ = try result.fields()
            return result.value
        }
        agentSocket = try reader.optional("agent_socket")?.string() ?? Self.defaultAgentSocket
        agentTimeout = try reader.optional("agent_timeout")?.duration() ?? .seconds(5)
        if agentTimeout <= .zero {
            throw ConfigError(path: "agent_timeout", message: "must be more than 0s")
        }
        var excluded = Set<String>()
        // Istio puts the list under "kubernetes"; accept both places.
        for place in [try reader.optional("exclude_namespaces"), try reader.optional("kubernetes")?.optional("exclude_namespaces")] {
            for item in try place?.list() ?? [] { excluded.insert(try item.string()) }
        }
        excludeNamespaces = excluded
    }
}

extension String {
    /// `1.0.0` as comparable numbers, so `0.4.0 < 1.0.0`.
    var versionOrder: [Int] { split(separator: ".").map { Int($0) ?? 0 } }
}
