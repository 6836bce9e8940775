import Configuration
import XDS

/// Envoy's RBAC rules (`envoy.config.rbac.v3.RBAC`): named policies, each matching when one of its
/// permissions and one of its principals match, and what a match means. ALLOW lets through only what
/// some policy matches; DENY stops what some policy matches; LOG lets everything through and marks what
/// matches (Istio's AUDIT). Policies are tried in name order, as Envoy's are, and the first match is the
/// one reported.
public struct RoleBasedAccessControl: Sendable {
    public enum Action: String, Sendable {
        case allow = "ALLOW"
        case deny = "DENY"
        case log = "LOG"
    }

    /// What the rules say of a connection or request.
    public struct Verdict: Sendable, Equatable {
        public var allowed: Bool
        /// The policy that matched, if one did.
        public var matchedPolicy: String?

        public init(allowed: Bool, matchedPolicy: String?) {
            self.allowed = allowed
            self.matchedPolicy = matchedPolicy
        }
    }

    public let action: Action
    /// The policies' names, in the order they are tried.
    public let policyNames: [String]
    private let policies: CompiledPolicies

    /// `path` names the rules in refusals. A policy with a CEL `condition` (outside Capstan's subset) is
    /// refused: leaving it out would widen an ALLOW policy or narrow a DENY one.
    public init(_ proto: Envoy_Config_Rbac_V3_RBAC, path: String) throws(ConfigError) {
        switch proto.action {
        case .allow: action = .allow
        case .deny: action = .deny
        case .log: action = .log
        case .UNRECOGNIZED(let number): throw ConfigError(path: "\(path).action", message: "\(number) is not ALLOW, DENY or LOG")
        }
        var names: [String] = [], policies: [(permissions: [Permission], principals: [Principal])] = []
        for (name, policy) in proto.policies.sorted(by: { $0.key < $1.key }) {
            let policyPath = "\(path).policies[\"\(name)\"]"
            let unknown = UnknownFields.paths(in: policy)
            if !unknown.isEmpty {
                throw ConfigError(path: policyPath, message: "has fields outside Capstan's subset (\(unknown.joined(separator: ", "))), such as a CEL condition or a matcher extension; leaving them out would change whom it matches")
            }
            guard !policy.permissions.isEmpty else { throw ConfigError(path: "\(policyPath).permissions", message: "needs at least one permission") }
            guard !policy.principals.isEmpty else { throw ConfigError(path: "\(policyPath).principals", message: "needs at least one principal") }
            var permissions: [Permission] = [], principals: [Principal] = []
            for (index, permission) in policy.permissions.enumerated() {
                permissions.append(try Permission(permission, path: "\(policyPath).permissions[\(index)]"))
            }
            for (index, principal) in policy.principals.enumerated() {
                principals.append(try Principal(principal, path: "\(policyPath).principals[\(index)]"))
            }
            names.append(name)
            policies.append((permissions, principals))
        }
        policyNames = names
        self.policies = CompiledPolicies(policies)
    }

    public func evaluate(_ request: AuthorizationRequest) -> Verdict {
        let matched = policies.firstMatch(request).map { policyNames[$0] }
        switch action {
        case .allow: return Verdict(allowed: matched != nil, matchedPolicy: matched)
        case .deny: return Verdict(allowed: matched == nil, matchedPolicy: matched)
        case .log: return Verdict(allowed: true, matchedPolicy: matched)
        }
    }
}
