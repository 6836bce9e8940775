/// The mesh's trust domain and its aliases (`trustDomainAliases`), as istiod applies them to the peer
/// principals of AuthorizationPolicies: a principal written in any of them, or in `cluster.local` (Istio's
/// name for "this mesh's trust domain"), stands for the same identity in each. So a policy naming
/// `cluster.local/ns/shop/sa/billing` keeps working in a mesh whose trust domain is `example.org`, and
/// during a migration from `old-td` to `new-td` a policy matches callers with certificates of either.
struct TrustDomainBundle: Sendable, Equatable {
    /// The trust domain first, then the aliases.
    let trustDomains: [String]

    init(trustDomain: String, aliases: [String] = []) {
        trustDomains = [trustDomain] + aliases
    }

    /// `policy` with the trust domain of each peer principal (`from.source.principals`, `notPrincipals`,
    /// and `when` on `source.principal`) replaced as istiod replaces it.
    func applied(to policy: AuthorizationPolicy) -> AuthorizationPolicy {
        var policy = policy
        for rule in policy.rules.indices {
            for source in policy.rules[rule].from.indices {
                policy.rules[rule].from[source].principals = applied(to: policy.rules[rule].from[source].principals)
            }
            for condition in policy.rules[rule].when.indices where policy.rules[rule].when[condition].attribute == .sourcePrincipal {
                policy.rules[rule].when[condition].match = applied(to: policy.rules[rule].when[condition].match)
            }
        }
        return policy
    }

    private func applied(to match: AuthorizationPolicy.Match) -> AuthorizationPolicy.Match {
        var match = match
        match.values = principals(match.values)
        match.notValues = principals(match.notValues)
        return match
    }

    /// Each principal, or, when its trust domain is one of this bundle's (wildcards allowed on either
    /// side) or `cluster.local`, the same identity in every trust domain of the bundle. Principals of
    /// other trust domains, of any trust domain (`*/ns/…`), or not in `TD/ns/NS/sa/SA` form are kept.
    func principals(_ values: [String]) -> [String] {
        var result: [String] = []
        for principal in values {
            let parts = principal.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 5, parts[0] != "*" else {
                result.append(principal)
                continue
            }
            let domain = String(parts[0])
            guard domain == Self.clusterLocal || trustDomains.contains(where: { Self.matches(domain, $0) }) else {
                result.append(principal)
                continue
            }
            var expanded: [String] = []
            for trustDomain in trustDomains {
                // A wildcard trust domain that covers this one stays as written.
                let replaced = Self.suffixMatches(trustDomain, pattern: domain)
                    ? principal : ([Substring(trustDomain)] + parts.dropFirst()).joined(separator: "/")
                if !expanded.contains(replaced) { expanded.append(replaced) }
            }
            result += expanded
        }
        return result
    }

    private static let clusterLocal = "cluster.local"

    /// Istio's match of two trust domains where either may be a pattern: `*`, `prefix*` or `*suffix`.
    private static func matches(_ a: String, _ b: String) -> Bool {
        a == b || b == "*" || prefixMatches(a, pattern: b) || prefixMatches(b, pattern: a)
            || suffixMatches(a, pattern: b) || suffixMatches(b, pattern: a)
    }

    private static func prefixMatches(_ text: String, pattern: String) -> Bool {
        pattern.hasSuffix("*") && text.hasPrefix(pattern.dropLast())
    }

    private static func suffixMatches(_ text: String, pattern: String) -> Bool {
        pattern.hasPrefix("*") && text.hasSuffix(pattern.dropFirst())
    }
}
