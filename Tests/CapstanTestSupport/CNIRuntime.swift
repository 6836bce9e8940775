import Foundation
import Configuration

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

    /// Runs one plugin binary with a raw stdin and environment (for malformed-input tests).
    public func runPlugin(_ type: String, environment: [String: String], input: String) throws -> ChildProcess.Result {
        try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", nodeNamespace, try binary(type)],
                             environment: environment.merging(["CNI_PATH": binDirectories.joined(separator: ":")]) { $1 },
                             input: input)
    }

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
        let result = try runPlugin(type, environment: environment, input: ConfigValue.object(fields).jsonText())
        guard result.status == 0 else { throw PluginFailure(plugin: type, result: result) }
        return result
    }

    private func binary(_ type: String) throws -> String {
        for directory in binDirectories where FileManager.default.isExecutableFile(atPath: "\(directory)/\(type)") {
            return "\(directory)/\(type)"
        }
        throw SandboxError("no plugin \(type) in \(binDirectories)")
    }
}
