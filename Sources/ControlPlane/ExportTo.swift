import Configuration

/// Istio's `exportTo` on a ServiceEntry, VirtualService or DestinationRule: the namespaces whose proxies
/// see the resource. `*` every namespace, `.` the resource's own, `~` none (ServiceEntries only), or
/// namespace names. Empty: not given, and the mesh config's default for the kind applies
/// (``MeshSettings/defaultServiceExportTo`` and the others).
public struct ExportTo: Sendable, Hashable, CustomStringConvertible {
    /// The entries as written, in order.
    public var targets: [String]

    public init(_ targets: [String] = []) {
        self.targets = targets
    }

    /// Istio's default for every kind when the mesh config says nothing.
    public static let everywhere = ExportTo(["*"])

    public var isEmpty: Bool { targets.isEmpty }
    /// `*`: every namespace (istiod ignores anything listed with it).
    public var isPublic: Bool { targets.contains("*") }

    public var description: String { "[" + targets.map { "\"\($0)\"" }.joined(separator: ", ") + "]" }

    /// Whether a resource in namespace `owner` with these entries is seen by proxies in `namespace`, as
    /// istiod's `IsServiceVisible` decides: `*` everywhere, else `~` nowhere, else `.` (or `owner`
    /// named) in `owner`, and in every namespace named.
    public func includes(_ namespace: String, owner: String) -> Bool {
        if isPublic { return true }
        if targets.contains("~") { return false }
        return targets.contains(namespace) || (namespace == owner && targets.contains("."))
    }

    /// Which kind's rules a list is checked by: `~` is a ServiceEntry's only, and a DestinationRule with
    /// a `workloadSelector` stays in its own namespace.
    enum Kind {
        case serviceEntry
        case virtualService
        case destinationRule(workloadSelector: Bool)
    }

    /// `exportTo` of a resource in `namespace`, checked as Istio's validation checks it: each entry `.`,
    /// `*`, a namespace name (a DNS-1123 label) or, on a ServiceEntry, `~`; no entry twice (`.` and the
    /// own namespace count as one); `*` and `~` alone. An empty list is not given.
    static func read(_ field: ConfigReader, namespace: String, kind: Kind) throws(ConfigError) -> ExportTo {
        var seen: Set<String> = []
        var targets: [String] = []
        for item in try field.list() {
            let target = try item.string()
            let key = target == "." ? namespace : target
            guard seen.insert(key).inserted else {
                let both = key == namespace && targets.contains(target == "." ? namespace : ".")
                throw item.fail(both ? "\".\" and \"\(namespace)\" (the resource's own namespace) are the same entry, listed twice"
                                     : "\"\(target)\" is listed twice")
            }
            switch target {
            case ".", "*": break
            case "~":
                guard case .serviceEntry = kind else {
                    throw item.fail("\"~\" (no namespace) is allowed on ServiceEntries only, as Istio validates exportTo")
                }
            default:
                guard isNamespace(target) else {
                    throw item.fail("\"\(target)\" is not \".\", \"*\"\(kind.allowsNone ? ", \"~\"" : "") or a namespace name (a DNS-1123 label)")
                }
            }
            targets.append(target)
        }
        if targets.count > 1, targets.contains("*") {
            throw field.fail("\"*\" (every namespace) cannot be listed with other entries")
        }
        if targets.count > 1, targets.contains("~") {
            throw field.fail("\"~\" (no namespace) cannot be listed with other entries")
        }
        if case .destinationRule(workloadSelector: true) = kind, !targets.isEmpty, seen != [namespace] {
            throw field.fail("a DestinationRule with a workloadSelector is exported to its own namespace only (\".\"), as Istio validates it")
        }
        return ExportTo(targets)
    }

    /// A mesh config default (`defaultServiceExportTo` and the others): each entry `.`, `*`, `~` or a
    /// namespace name. istiod takes these lists unchecked; an entry no namespace could match is refused
    /// here rather than left to hide resources. An empty list is read as not given (`*`).
    static func readDefault(_ field: ConfigReader, warnings: inout [String]) throws(ConfigError) -> ExportTo {
        var targets: [String] = []
        for item in try field.list() {
            let target = try item.string()
            guard [".", "*", "~"].contains(target) || isNamespace(target) else {
                throw item.fail("\"\(target)\" is not \".\", \"*\", \"~\" or a namespace name (a DNS-1123 label)")
            }
            if !targets.contains(target) { targets.append(target) }
        }
        if targets.isEmpty {
            warnings.append("\(field.path): an empty list is read as not given: Istio's default, [\"*\"]")
            return .everywhere
        }
        return ExportTo(targets)
    }

    /// A DNS-1123 label: lowercase letters, digits and `-`, not at either end, at most 63 bytes.
    static func isNamespace(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 63 && text.first != "-" && text.last != "-"
            && text.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
    }
}

extension ExportTo.Kind {
    var allowsNone: Bool {
        if case .serviceEntry = self { return true }
        return false
    }
}
