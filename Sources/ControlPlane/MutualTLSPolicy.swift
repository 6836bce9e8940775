/// Which mutual TLS each sidecar requires of the connections it accepts, resolved from the
/// PeerAuthentications as Istio resolves them: the policy selecting the workload (same namespace,
/// `matchLabels` all present on it), else its namespace's policy, else the mesh-wide one (root namespace
/// `istio-system`, no selector), else PERMISSIVE. A mode left `UNSET` at one level inherits the next
/// one out; a port-level mode overrides the workload's mode for that port only. The reader refuses two
/// policies competing for one scope, so at most one applies at each level.
struct MutualTLSPolicy: Sendable, Equatable {
    /// The modes of one workload's inbound side: its own, and overrides by port.
    struct Inbound: Sendable, Hashable, CustomStringConvertible {
        var mode: PeerAuthentication.Mode
        var portModes: [Int: PeerAuthentication.Mode] = [:]

        func mode(forPort port: Int) -> PeerAuthentication.Mode { portModes[port] ?? mode }

        /// `STRICT 8080=DISABLE`: ports in order, so equal policies always print the same.
        var description: String {
            ([mode.rawValue] + portModes.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }).joined(separator: " ")
        }
    }

    /// Istio's default when no policy says otherwise.
    static let defaultMode = PeerAuthentication.Mode.permissive

    /// The mesh-wide mode.
    let meshMode: PeerAuthentication.Mode
    /// Namespace-wide modes, for namespaces whose policy sets one.
    let namespaceModes: [String: PeerAuthentication.Mode]
    /// Workload-specific policies, in reading order (the first that selects a workload applies).
    private let workloadPolicies: [PeerAuthentication]

    init(_ policies: [PeerAuthentication]) {
        meshMode = policies.first { $0.isMeshWide }?.mode ?? Self.defaultMode
        var namespaceModes: [String: PeerAuthentication.Mode] = [:]
        for policy in policies where policy.selector == nil && !policy.isMeshWide {
            if namespaceModes[policy.namespace] == nil, let mode = policy.mode { namespaceModes[policy.namespace] = mode }
        }
        self.namespaceModes = namespaceModes
        workloadPolicies = policies.filter { $0.selector != nil }
    }

    /// The modes in force for a workload in `namespace` with `labels` (none for a proxy the
    /// configuration does not describe: only namespace and mesh policies reach it).
    func inbound(namespace: String, labels: [String: String] = [:]) -> Inbound {
        let inherited = namespaceModes[namespace] ?? meshMode
        let selecting = workloadPolicies.first { policy in
            policy.namespace == namespace && (policy.selector?.allSatisfy { labels[$0.key] == $0.value } ?? false)
        }
        guard let selecting else { return Inbound(mode: inherited) }
        return Inbound(mode: selecting.mode ?? inherited, portModes: selecting.portLevelModes)
    }

    /// What proxies the configuration does not describe get (no labels, so only namespace and mesh
    /// policies reach them): the mesh's mode, and the namespaces where that is not what they get.
    /// Two are equal exactly when every such proxy, in whatever namespace, gets the same modes.
    struct UndescribedProxies: Sendable, Equatable {
        var meshMode: PeerAuthentication.Mode
        var namespaces: [String: Inbound]
    }

    var undescribedProxies: UndescribedProxies {
        // A selector can only reach a proxy without labels when it is empty (the reader makes those nil).
        let candidates = Set(namespaceModes.keys).union(workloadPolicies.filter { $0.selector?.isEmpty == true }.map(\.namespace))
        var namespaces: [String: Inbound] = [:]
        for namespace in candidates {
            let modes = inbound(namespace: namespace)
            if modes != Inbound(mode: meshMode) { namespaces[namespace] = modes }
        }
        return UndescribedProxies(meshMode: meshMode, namespaces: namespaces)
    }
}
