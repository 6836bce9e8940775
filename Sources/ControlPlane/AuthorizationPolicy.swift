/// `security.istio.io` AuthorizationPolicy (v1 and v1beta1): which requests and connections a
/// workload's sidecar accepts inbound. Its scope follows from where it is and what it selects, as
/// PeerAuthentication's does: the workloads whose labels match `spec.selector.matchLabels` (in its
/// namespace, or in every namespace when it is in the root namespace), its namespace (no selector), or
/// the whole mesh (root namespace, no selector). ``AuthorizationPolicyScope`` resolves which apply;
/// ``RBACGenerator`` turns them into Envoy's RBAC filters as istiod does.
public struct AuthorizationPolicy: WorkloadScopedPolicy {
    /// `spec.action`.
    public enum Action: String, Sendable, Equatable {
        case allow = "ALLOW"
        case deny = "DENY"
        /// Envoy's RBAC action LOG: matching requests are marked for the access log, and allowed.
        case audit = "AUDIT"
        /// Requests the rules match are decided by the external authorizer `spec.provider` names
        /// (Envoy's ext_authz), before any DENY or ALLOW.
        case custom = "CUSTOM"
    }

    /// A field and its negation, as Istio pairs them (`principals`/`notPrincipals`, a condition's
    /// `values`/`notValues`). Values use Istio's string forms: `abc` exact, `abc*` prefix, `*abc`
    /// suffix, `*` any non-empty value.
    public struct Match: Sendable, Equatable {
        public var values: [String] = []
        public var notValues: [String] = []

        public var isEmpty: Bool { values.isEmpty && notValues.isEmpty }
    }

    /// `rules[].from[].source`: who sends the request.
    public struct Source: Sendable, Equatable {
        /// Peer identities without `spiffe://` (`cluster.local/ns/shop/sa/web`).
        public var principals = Match()
        /// JWT `iss/sub` (HTTP only).
        public var requestPrincipals = Match()
        /// `ACCOUNT` (in the policy's namespace) or `NAMESPACE/ACCOUNT`.
        public var serviceAccounts = Match()
        public var namespaces = Match()
        /// The connection's peer address (`source.ip`).
        public var ipBlocks = Match()
        /// The original client (`x-forwarded-for`, proxy protocol).
        public var remoteIPBlocks = Match()

        /// Whether a field only HTTP can evaluate is set.
        var hasHTTPOnlyFields: Bool { !requestPrincipals.isEmpty }
    }

    /// `rules[].to[].operation`: what the request asks for.
    public struct Operation: Sendable, Equatable {
        public var hosts = Match()
        public var methods = Match()
        public var paths = Match()
        /// Port numbers, as text (Istio's form).
        public var ports = Match()

        var hasHTTPOnlyFields: Bool { !hosts.isEmpty || !methods.isEmpty || !paths.isEmpty }
    }

    /// What a `when` condition's key names: Istio's attribute table.
    public enum Attribute: Sendable, Equatable {
        case requestHeader(String)
        case sourceIP
        case remoteIP
        case sourceNamespace
        case sourceServiceAccount
        case sourcePrincipal
        case requestPrincipal
        case requestAudiences
        case requestPresenter
        /// `request.auth.claims[a][b]`: the claim's path, nested claims in order.
        case requestClaim([String])
        case destinationIP
        case destinationPort
        case connectionSNI
        /// `experimental.envoy.filters.NAME[KEY]`: dynamic metadata of filter `envoy.filters.NAME`.
        case envoyFilter(filter: String, key: String)

        /// Only an HTTP connection manager can evaluate it.
        var isHTTPOnly: Bool {
            switch self {
            case .requestHeader, .requestPrincipal, .requestAudiences, .requestPresenter, .requestClaim: true
            default: false
            }
        }

        /// Envoy evaluates it as a principal (about the peer) rather than a permission (about the request).
        var isPrincipal: Bool {
            switch self {
            case .destinationIP, .destinationPort, .connectionSNI, .envoyFilter: false
            default: true
            }
        }
    }

    /// `rules[].when[]`.
    public struct Condition: Sendable, Equatable {
        public var key: String
        public var attribute: Attribute
        public var match: Match
    }

    /// `rules[]`: every part must match (an empty list matches anything); within `from` and `to`, any entry.
    public struct Rule: Sendable, Equatable {
        public var from: [Source] = []
        public var to: [Operation] = []
        public var when: [Condition] = []

        /// Whether a field or condition only HTTP can evaluate is set.
        var hasHTTPOnlyFields: Bool {
            from.contains(where: \.hasHTTPOnlyFields) || to.contains(where: \.hasHTTPOnlyFields)
                || when.contains(where: \.attribute.isHTTPOnly)
        }
    }

    public var origin: ResourceOrigin
    public var namespace: String
    public var name: String
    /// `spec.selector.matchLabels`; nil (or empty in the YAML) for a namespace- or mesh-wide policy.
    public var selector: [String: String]?
    public var action: Action
    /// Annotation `istio.io/dry-run: "true"`: evaluated and logged (RBAC `shadow_rules`), not enforced.
    public var dryRun: Bool
    public var rules: [Rule]
    /// `spec.provider.name`, with action CUSTOM: one of the mesh config's `extensionProviders`.
    public var providerName: String?
    /// That provider, resolved against the mesh config and the services once every document is read;
    /// nil when either does not know it (istiod then denies what the rules match, and so does Capstan).
    public var authorizer: ExternalAuthorizer?

    /// Istio's mesh-wide policy: in the root namespace, selecting nothing.
    public var isMeshWide: Bool { selector == nil && namespace == MeshConfig.rootNamespace }
}
