/// A policy scoped as AuthorizationPolicy and RequestAuthentication are: by its namespace and
/// `spec.selector.matchLabels` (see ``AuthorizationPolicy``).
protocol WorkloadScopedPolicy: Sendable, Equatable {
    var namespace: String { get }
    /// nil for a namespace- or mesh-wide policy.
    var selector: [String: String]? { get }
}

extension WorkloadScopedPolicy {
    /// Whether it applies to a workload in `namespace` with `labels`: in its namespace, or in every
    /// namespace from the root namespace; without a selector, or with one whose labels are all there.
    func applies(namespace workloadNamespace: String, labels: [String: String]) -> Bool {
        guard namespace == workloadNamespace || namespace == MeshConfig.rootNamespace else { return false }
        return selector?.allSatisfy { labels[$0.key] == $0.value } ?? true
    }
}

/// Which AuthorizationPolicies apply to a workload, as istiod selects them: those of the root
/// namespace (`istio-system`) and those of the workload's namespace, each without a selector or with
/// one whose `matchLabels` are all on the workload. Unlike PeerAuthentication, every applicable
/// policy applies (nothing overrides): DENY before ALLOW decides, see ``RBACGenerator``.
/// RequestAuthentications are selected the same way (``RequestAuthenticationScope``): every
/// applicable one's JWT rules are providers of the workload's one `jwt_authn` filter.
typealias AuthorizationPolicyScope = PolicyScope<AuthorizationPolicy>
typealias RequestAuthenticationScope = PolicyScope<RequestAuthentication>

struct PolicyScope<Policy: WorkloadScopedPolicy>: Sendable, Equatable {
    /// In reading order.
    let policies: [Policy]

    init(_ policies: [Policy]) {
        self.policies = policies
    }

    /// The policies for a workload in `namespace` with `labels` (none for a proxy the configuration
    /// does not describe: only namespace and mesh policies reach it), root namespace ones first.
    func applying(namespace: String, labels: [String: String] = [:]) -> [Policy] {
        let matching = policies.filter { $0.applies(namespace: namespace, labels: labels) }
        return matching.filter { $0.namespace == MeshConfig.rootNamespace } + matching.filter { $0.namespace != MeshConfig.rootNamespace }
    }
}

extension PolicyScope where Policy == AuthorizationPolicy {
    /// What proxies the configuration does not describe get (no labels, so only policies without a
    /// selector reach them): the root namespace's rules, and each namespace's where that is not what
    /// they get. Two are equal exactly when every such proxy, in whatever namespace, gets the same filters.
    struct UndescribedProxies: Sendable, Equatable {
        var mesh: RBACGenerator.WorkloadRules
        var namespaces: [String: RBACGenerator.WorkloadRules]
    }

    var undescribedProxies: UndescribedProxies {
        let mesh = RBACGenerator.WorkloadRules(applying(namespace: MeshConfig.rootNamespace))
        var namespaces: [String: RBACGenerator.WorkloadRules] = [:]
        for namespace in Set(policies.filter { $0.selector == nil }.map(\.namespace)) {
            let rules = RBACGenerator.WorkloadRules(applying(namespace: namespace))
            if rules != mesh { namespaces[namespace] = rules }
        }
        return UndescribedProxies(mesh: mesh, namespaces: namespaces)
    }
}
