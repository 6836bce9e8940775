import Configuration
import Netfilter
#if canImport(Glibc)
import Glibc
#endif

/// Puts `capstan-cni` where the container runtime finds it: the binary into the CNI bin directory and
/// the plugin into the node's primary network configuration (chained after the plugins there), or into
/// a configuration list of its own. Run again, it repairs whatever was removed; it can also take itself
/// out again.
public struct CNIInstaller: Sendable {
    public static let pluginType = "capstan-cni"

    public var binDirectory: String
    public var confDirectory: String
    /// The primary configuration to chain into; by default the first one, in the order runtimes read them.
    public var primaryConfName: String?
    /// Chain into the primary configuration (true) or write `standaloneConfName` of its own.
    public var chained: Bool
    public var standaloneConfName = "YY-capstan-cni.conflist"
    /// The plugin's entry: `agent_socket`, `agent_timeout`, `exclude_namespaces` (type is added).
    public var pluginSettings: [String: ConfigValue]
    /// The executable to install (this one).
    public var sourceBinary: String

    public init(binDirectory: String, confDirectory: String, primaryConfName: String?, chained: Bool,
                pluginSettings: [String: ConfigValue], sourceBinary: String) {
        self.binDirectory = binDirectory
        self.confDirectory = confDirectory
        self.primaryConfName = primaryConfName
        self.chained = chained
        self.pluginSettings = pluginSettings
        self.sourceBinary = sourceBinary
    }

    public struct InstallError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    private var installedBinary: String { "\(binDirectory)/\(Self.pluginType)" }
    private var pluginEntry: ConfigValue {
        var fields = pluginSettings
        fields["type"] = .string(Self.pluginType)
        return .object(fields)
    }

    /// Installs what is missing or out of date; returns what it changed (empty when all was in place).
    public func install() throws -> [String] {
        var changes: [String] = []
        if SystemFile.size(of: installedBinary) != SystemFile.size(of: sourceBinary) || access(installedBinary, X_OK) != 0 {
            try SystemFile.copy(sourceBinary, to: installedBinary, mode: 0o755)
            changes.append("installed \(installedBinary)")
        }
        if chained {
            guard let primary = primaryConfiguration() else {
                throw InstallError(description: "no primary CNI configuration in \(confDirectory) to chain into yet")
            }
            if let change = try chain(into: primary) { changes.append(change) }
        } else {
            let path = "\(confDirectory)/\(standaloneConfName)"
            let list = ConfigValue.object([
                "cniVersion": .string("1.0.0"), "name": .string(Self.pluginType), "plugins": .array([pluginEntry]),
            ])
            if (try? ConfigValue.parse(json: SystemFile.read(path) ?? "")) != list {
                try Self.write(list, to: path)
                changes.append("wrote \(path)")
            }
        }
        return changes
    }

    /// Takes the plugin out of the configuration and removes the binary.
    public func uninstall() throws -> [String] {
        var changes: [String] = []
        if let primary = primaryConfiguration(), primary.hasSuffix(".conflist"),
           case .object(var list)? = try? ConfigValue.parse(json: SystemFile.read(primary) ?? ""),
           case .array(let plugins)? = list["plugins"], plugins.contains(where: Self.isOurs) {
            list["plugins"] = .array(plugins.filter { !Self.isOurs($0) })
            try Self.write(.object(list), to: primary)
            changes.append("removed \(Self.pluginType) from \(primary)")
        }
        for path in ["\(confDirectory)/\(standaloneConfName)", installedBinary] where unlink(path) == 0 {
            changes.append("removed \(path)")
        }
        return changes
    }

    /// The configuration file the runtime uses: the named one, or the first by name (libcni's order)
    /// with a CNI extension, not counting our own.
    func primaryConfiguration() -> String? {
        if let primaryConfName { return "\(confDirectory)/\(primaryConfName)" }
        let candidates = (SystemFile.names(in: confDirectory) ?? []).filter { name in
            name != standaloneConfName && !name.hasPrefix(".") && !name.contains(".tmp-")
                && (name.hasSuffix(".conflist") || name.hasSuffix(".conf") || name.hasSuffix(".json"))
        }
        return candidates.first.map { "\(confDirectory)/\($0)" }
    }

    /// Appends our entry to the primary list (replacing an older entry of ours); a single-plugin `.conf`
    /// becomes a `.conflist`, as Istio's installer does. Returns what changed, or nil.
    private func chain(into path: String) throws -> String? {
        guard let text = SystemFile.read(path) else { throw InstallError(description: "cannot read \(path)") }
        let document: ConfigValue
        do { document = try ConfigValue.parse(json: text) } catch {
            throw InstallError(description: "\(path) is not valid JSON: \(error)")
        }
        guard case .object(var fields) = document else { throw InstallError(description: "\(path) is not a JSON object") }
        var target = path
        if case .array(let plugins)? = fields["plugins"] {
            let chained = plugins.filter { !Self.isOurs($0) } + [pluginEntry]
            if chained == plugins { return nil }
            fields["plugins"] = .array(chained)
        } else {
            guard fields["type"] != nil else { throw InstallError(description: "\(path) has neither plugins nor a type") }
            let single = ConfigValue.object(fields.filter { $0.key != "cniVersion" && $0.key != "name" })
            fields = ["cniVersion": fields["cniVersion"] ?? .string("1.0.0"), "name": fields["name"] ?? .string("k8s-pod-network"),
                      "plugins": .array([single, pluginEntry])]
            target = String(path[..<path.lastIndex(of: ".")!]) + ".conflist"
        }
        try Self.write(.object(fields), to: target)
        if target != path { unlink(path) }
        return "chained \(Self.pluginType) into \(target)"
    }

    /// Network configurations are world-readable JSON, replaced atomically so a runtime never reads half.
    private static func write(_ document: ConfigValue, to path: String) throws {
        try SystemFile.replace(path, with: Array((document.jsonText(pretty: true) + "\n").utf8), mode: 0o644)
    }

    private static func isOurs(_ plugin: ConfigValue) -> Bool {
        plugin["type"]?.stringValue == pluginType
    }
}
