import Foundation
import Configuration
import NIOConcurrencyHelpers
import Netfilter

/// A container runtime's side of CNI, as libcni does it: runs each plugin of a configuration list in
/// order (in reverse for DEL), with the `CNI_*` environment, the plugin's configuration plus `name`,
/// `cniVersion` and the previous result on stdin, and caches the ADD result for CHECK and DEL.
///
/// Plugins run inside the node's namespace (`ip netns exec`), where the runtime of a real node runs them.
public final class CNIRuntime: @unchecked Sendable {
    public let conflistPath: String
    public let binDirectories: [String]
    public let nodeNamespace: String
    private var cachedResults: [String: ConfigValue] = [:]
    private let lock = NSLock()

    public init(conflistPath: String, binDirectories: [String], nodeNamespace: String) {
        self.conflistPath = conflistPath
        self.binDirectories = binDirectories
        self.nodeNamespace = nodeNamespace
    }

    /// A pod's identity in the call.
    public struct Pod: Sendable {
        public var containerID: String
        public var netns: String
        public var name: String
        public var namespace: String
        public var interfaceName = "eth0"

        public init(containerID: String, netns: String, name: String, namespace: String) {
            self.containerID = containerID
            self.netns = netns
            self.name = name
            self.namespace = namespace
        }
    }

    /// A plugin that failed: which, its exit status and the error document it printed.
    public struct PluginFailure: Error, CustomStringConvertible {
        public let plugin: String
        public let result: ChildProcess.Result
        public var errorDocument: ConfigValue? { try? ConfigValue.parse(json: result.standardOutput) }
        public var code: Int? {
            if case .number(let code)? = errorDocument?["code"] { return Int(code) }
            return nil
        }
        public var description: String { "plugin \(plugin) failed: \(result)" }
    }

    @discardableResult
    public func add(_ pod: Pod) throws -> ConfigValue {
        let (list, plugins) = try load()
        var previous: ConfigValue?
        for plugin in plugins {
            let result = try invoke(plugin, command: "ADD", pod: pod, list: list, previous: previous)
            previous = try ConfigValue.parse(json: result.standardOutput)
        }
        lock.withLock { cachedResults[pod.containerID] = previous }
        return previous ?? .null
    }

    public func check(_ pod: Pod) throws {
        let (list, plugins) = try load()
        let cached = lock.withLock { cachedResults[pod.containerID] }
        for plugin in plugins {
            try invoke(plugin, command: "CHECK", pod: pod, list: list, previous: cached)
        }
    }

    public func delete(_ pod: Pod) throws {
        let (list, plugins) = try load()
        let cached = lock.withLock { cachedResults.removeValue(forKey: pod.containerID) }
        for plugin in plugins.reversed() {
            try invoke(plugin, command: "DEL", pod: pod, list: list, previous: cached)
        }
    }

    /// Every plugin run, in order: its type, command and wall time (for benchmarks).
    public var timings: [(plugin: String, command: String, seconds: Double)] { lock.withLock { recorded } }
    private var recorded: [(plugin: String, command: String, seconds: Double)] = []

    /// One plugin of the list called alone, exactly as the chain would call it, with the pod's cached
    /// ADD result as `prevResult` (for tests that single the plugin out); its result whatever its exit.
    public func call(_ type: String, _ command: String, pod: Pod) throws -> ChildProcess.Result {
        let (list, plugins) = try load()
        guard let plugin = plugins.first(where: { $0["type"]?.stringValue == type }) else {
            throw SandboxError("no plugin \(type) in \(conflistPath)")
        }
        return try execute(plugin, command: command, pod: pod, list: list,
                           previous: lock.withLock { cachedResults[pod.containerID] })
    }

    /// Runs one plugin binary with a raw stdin and environment (for malformed-input tests).
    ///
    /// The child is spawned from a thread inside the node namespace, so it starts there as a runtime's
    /// plugin starts in the node's; `spawnsIntoNodeNamespace` has checked that this holds.
    public func runPlugin(_ type: String, environment: [String: String], input: String) throws -> ChildProcess.Result {
        let binary = try binary(type)
        let environment = environment.merging(["CNI_PATH": binDirectories.joined(separator: ":")]) { $1 }
        let start = Date()
        let result = try NetworkNamespace(path: "/run/netns/\(nodeNamespace)").run {
            try Self.spawnsIntoNodeNamespace(nodeNamespace)
            return try ChildProcess.run(binary, [], environment: environment, input: input)
        }
        let seconds = Date().timeIntervalSince(start)
        lock.withLock { recorded.append((type, environment["CNI_COMMAND"] ?? "", seconds)) }
        return result
    }

    /// A child spawned on a thread that entered a namespace starts in that namespace (clone copies the
    /// calling thread's namespaces). Checked once per node, before any plugin runs: a plugin that
    /// started elsewhere would build its bridge in the wrong namespace.
    private static func spawnsIntoNodeNamespace(_ node: String) throws {
        if verifiedNodes.withLockedValue({ $0.contains(node) }) { return }
        let child = try ChildProcess.run("/usr/bin/stat", ["-L", "-c", "%i", "/proc/self/ns/net"])
        let expected = try ChildProcess.run("/usr/bin/stat", ["-L", "-c", "%i", "/run/netns/\(node)"])
        guard child.status == 0, child.standardOutput == expected.standardOutput else {
            throw SandboxError("a child spawned in node namespace \(node) did not start there: \(child) vs \(expected)")
        }
        verifiedNodes.withLockedValue { _ = $0.insert(node) }
    }

    private static let verifiedNodes = NIOLockedValueBox<Set<String>>([])

    private func load() throws -> (ConfigValue, [ConfigValue]) {
        guard let text = try? String(contentsOfFile: conflistPath, encoding: .utf8) else {
            throw SandboxError("cannot read \(conflistPath)")
        }
        let list = try ConfigValue.parse(json: text)
        guard case .array(let plugins)? = list["plugins"] else { throw SandboxError("\(conflistPath) has no plugins") }
        return (list, plugins)
    }

    @discardableResult
    private func invoke(_ plugin: ConfigValue, command: String, pod: Pod, list: ConfigValue,
                        previous: ConfigValue?) throws -> ChildProcess.Result {
        let result = try execute(plugin, command: command, pod: pod, list: list, previous: previous)
        guard result.status == 0 else { throw PluginFailure(plugin: plugin["type"]?.stringValue ?? "?", result: result) }
        return result
    }

    private func execute(_ plugin: ConfigValue, command: String, pod: Pod, list: ConfigValue,
                         previous: ConfigValue?) throws -> ChildProcess.Result {
        guard case .object(var fields) = plugin, let type = plugin["type"]?.stringValue else {
            throw SandboxError("plugin without a type in \(conflistPath)")
        }
        fields["name"] = list["name"]
        fields["cniVersion"] = list["cniVersion"]
        if let previous { fields["prevResult"] = previous }
        let environment = [
            "CNI_COMMAND": command, "CNI_CONTAINERID": pod.containerID, "CNI_NETNS": pod.netns,
            "CNI_IFNAME": pod.interfaceName,
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=\(pod.namespace);K8S_POD_NAME=\(pod.name);K8S_POD_INFRA_CONTAINER_ID=\(pod.containerID)",
        ]
        return try runPlugin(type, environment: environment, input: ConfigValue.object(fields).jsonText())
    }

    private func binary(_ type: String) throws -> String {
        for directory in binDirectories where FileManager.default.isExecutableFile(atPath: "\(directory)/\(type)") {
            return "\(directory)/\(type)"
        }
        throw SandboxError("no plugin \(type) in \(binDirectories)")
    }
}
