import SwiftProtobuf
import XDS

/// Envoy's RBAC filters for the AuthorizationPolicies that apply to one workload, in the shape istiod
/// 1.2x generates (`pilot/pkg/security/authz/builder`):
/// - CUSTOM policies first (istiod puts them before authentication): an RBAC filter whose shadow
///   rules mark the requests they match, and `envoy.filters.http.ext_authz` calling the provider for
///   those (see ``customHTTPFilters(_:)``); on TCP chains the network pair (``customNetworkFilters(_:)``).
/// - One filter per action present, in the order AUDIT (RBAC action LOG), DENY, ALLOW, so a DENY is
///   decided before any ALLOW. With no ALLOW policy there is no ALLOW filter: everything not denied
///   is allowed. HTTP chains get `envoy.filters.http.rbac` first among the connection manager's
///   filters; TCP chains get `envoy.filters.network.rbac` (stat prefix `tcp.`) before `tcp_proxy`.
/// - Each rule is a policy named `ns[NS]-policy[NAME]-rule[INDEX]`; a policy with no rules is one
///   that never matches (so an ALLOW one with a selector denies everything). Dry-run policies go to
///   `shadow_rules`; `shadow_rules_stat_prefix` is `istio_dry_run_deny_` for DENY shadow rules and,
///   as istiod leaves it, `istio_dry_run_allow_` otherwise (no shadow rules included).
/// - Within a rule: a permission per `to` entry (an AND of hosts, methods, paths, ports, then the
///   request-side conditions) and a principal per `from` entry (an AND of principals, request
///   principals, service accounts, namespaces, remote IPs, source IPs, then the peer-side conditions);
///   each field an OR of its values and a NOT of the OR of its negated values.
/// - Peer identities are matched on the filter state `io.istio.peer_principal` (newer istiod's form,
///   the one the Istio 1.2x dump in `istio-config/` shows), not `authenticated.principal_name`:
///   principal `cluster.local/ns/x/sa/y` matches `spiffe://cluster.local/ns/x/sa/y` exactly, as
///   given (``TrustDomainBundle`` has put it in the mesh's trust domain and aliases first), namespace `x` the regex `.*/ns/x/.*`, service account `x/y` the
///   regex `spiffe://.+/ns/x/(.+/|)sa/y(/.+)?` (newer istiod's `serviceAccounts`). JWT attributes are
///   dynamic metadata of filter `istio_authn`: `request.auth.principal`, `.audiences`, `.presenter`,
///   and `request.auth.claims` + the claim's path, as a list match.
/// - On TCP chains, HTTP-only fields cannot be evaluated: an ALLOW rule using one is left out, a DENY
///   or AUDIT rule loses them (and so matches more).
enum RBACGenerator {
    static let httpFilterName = "envoy.filters.http.rbac"
    static let networkFilterName = "envoy.filters.network.rbac"
    static let tcpStatPrefix = "tcp."
    static let dryRunAllowStatPrefix = "istio_dry_run_allow_"
    static let dryRunDenyStatPrefix = "istio_dry_run_deny_"
    static let peerPrincipalKey = "io.istio.peer_principal"
    static let authnFilter = "istio_authn"

    typealias RBAC = Envoy_Config_Rbac_V3_RBAC
    typealias Permission = Envoy_Config_Rbac_V3_Permission
    typealias Principal = Envoy_Config_Rbac_V3_Principal
    typealias StringMatcher = Envoy_Type_Matcher_V3_StringMatcher

    /// The rules of one filter: enforced ones and dry-run ones, either possibly absent.
    struct RuleSet: Sendable, Equatable {
        var rules: RBAC?
        var shadowRules: RBAC?

        /// istiod's, by the shadow rules' action, ALLOW's when there are none: none for LOG.
        var shadowRulesStatPrefix: String {
            switch shadowRules?.action {
            case .deny?: dryRunDenyStatPrefix
            case .log?: ""
            default: dryRunAllowStatPrefix
            }
        }
    }

    /// What one workload's RBAC filters are made of, on HTTP and on TCP chains, one rule set per
    /// filter, and its CUSTOM policies' rules: two are equal exactly when the filters are (wherever the
    /// policies came from).
    struct WorkloadRules: Sendable, Equatable {
        var http: [RuleSet]
        var tcp: [RuleSet]
        var custom: CustomRules?

        static let none = WorkloadRules(http: [], tcp: [])

        init(http: [RuleSet], tcp: [RuleSet], custom: CustomRules? = nil) {
            self.http = http
            self.tcp = tcp
            self.custom = custom
        }

        init(_ policies: [AuthorizationPolicy]) {
            self.init(http: ruleSets(for: policies, forTCP: false), tcp: ruleSets(for: policies, forTCP: true),
                      custom: CustomRules(policies.filter { $0.action == .custom }))
        }
    }

    /// The rules of a workload's CUSTOM policies (action DENY: a match is what the provider decides),
    /// each named `istio-ext-authz-ns[NS]-policy[NAME]-rule[N]`, and the provider they call.
    struct CustomRules: Sendable, Equatable {
        var http: RBAC
        var tcp: RBAC
        /// nil when a policy's provider is not resolved, or the policies name more than one (istiod 1.2x
        /// allows one per workload): then what the rules match is denied.
        var authorizer: ExternalAuthorizer?

        init?(_ policies: [AuthorizationPolicy]) {
            guard let first = policies.first else { return nil }
            func rules(forTCP: Bool) -> RBAC {
                var rbac = RBAC()
                rbac.action = .deny
                for policy in policies {
                    for (index, rule) in policy.rules.enumerated() {
                        if let generated = RBACGenerator.policy(rule, namespace: policy.namespace, action: .custom, forTCP: forTCP) {
                            rbac.policies[customPrefix + policyName(policy, rule: index)] = generated
                        }
                    }
                    if policy.rules.isEmpty { rbac.policies[customPrefix + policyName(policy, rule: 0)] = matchNever }
                }
                return rbac
            }
            http = rules(forTCP: false)
            tcp = rules(forTCP: true)
            authorizer = policies.allSatisfy { $0.authorizer != nil && $0.authorizer == first.authorizer } ? first.authorizer : nil
        }
    }

    /// A workload's filters for both kinds of chain.
    struct Filters {
        var http: [Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter]
        var network: [Envoy_Config_Listener_V3_Filter]
    }

    /// The filters, with a workload's authentication filters (`jwt_authn`) where istiod puts them: after
    /// CUSTOM's, before the other RBAC filters.
    static func filters(for rules: WorkloadRules,
                        authentication: [Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter] = []) throws -> Filters {
        var filters = try Filters(http: authentication + httpFilters(rules.http), network: networkFilters(rules.tcp))
        if let custom = rules.custom {
            filters.http = try customHTTPFilters(custom) + filters.http
            filters.network = try customNetworkFilters(custom) + filters.network
        }
        return filters
    }

    // MARK: CUSTOM

    static let customPrefix = "istio-ext-authz-"
    static let extAuthzFilterName = "envoy.filters.http.ext_authz"
    /// istiod's: the RBAC filter's shadow rules mark the requests the provider decides on.
    static let customShadowStatPrefix = "istio_ext_authz_"
    /// istiod's, on the rules that deny in place of a provider that cannot be called.
    static let badCustomSuffix = "-deny-due-to-bad-CUSTOM-action"
    static let networkExtAuthzFilterName = "envoy.filters.network.ext_authz"

    /// istiod's pair for a resolved provider: an RBAC filter whose shadow rules (never enforced) mark
    /// the requests the policies match in dynamic metadata, and the ext_authz filter that calls the
    /// provider for exactly those. Without a provider, an RBAC filter denying them.
    static func customHTTPFilters(_ custom: CustomRules) throws -> [Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter] {
        guard let authorizer = custom.authorizer else {
            return try httpFilters([RuleSet(rules: denying(custom.http, suffix: badCustomSuffix))])
        }
        var rbac = Envoy_Extensions_Filters_Http_Rbac_V3_RBAC()
        rbac.shadowRules = custom.http
        rbac.shadowRulesStatPrefix = customShadowStatPrefix
        var marker = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter()
        marker.name = httpFilterName
        marker.typedConfig = try Google_Protobuf_Any(message: rbac)

        let settings = authorizer.settings
        var config = Envoy_Extensions_Filters_Http_ExtAuthz_V3_ExtAuthz()
        config.grpcService = grpcService(authorizer)
        config.transportApiVersion = .v3
        config.failureModeAllow = settings.failOpen
        if let status = settings.statusOnError {
            config.statusOnError.code = Envoy_Type_V3_StatusCode(rawValue: status) ?? .UNRECOGNIZED(status)
        }
        if let body = settings.requestBody {
            config.withRequestBody.maxRequestBytes = UInt32(body.maxRequestBytes)
            config.withRequestBody.allowPartialMessage = body.allowPartialMessage
            config.withRequestBody.packAsBytes = body.packAsBytes
        }
        config.filterEnabledMetadata = customMarker(filter: httpFilterName)
        var extAuthz = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter()
        extAuthz.name = extAuthzFilterName
        extAuthz.typedConfig = try Google_Protobuf_Any(message: config)
        return [marker, extAuthz]
    }

    /// istiod's pair on TCP chains, for a provider: a network RBAC filter whose shadow rules mark the
    /// connections the policies match, and `envoy.filters.network.ext_authz` asking the provider about
    /// those. Without a provider, a network RBAC filter denying them.
    static func customNetworkFilters(_ custom: CustomRules) throws -> [Envoy_Config_Listener_V3_Filter] {
        guard let authorizer = custom.authorizer else {
            return try networkFilters([RuleSet(rules: denying(custom.tcp, suffix: badCustomSuffix))])
        }
        var rbac = Envoy_Extensions_Filters_Network_Rbac_V3_RBAC()
        rbac.shadowRules = custom.tcp
        rbac.statPrefix = tcpStatPrefix
        rbac.shadowRulesStatPrefix = customShadowStatPrefix
        var marker = Envoy_Config_Listener_V3_Filter()
        marker.name = networkFilterName
        marker.typedConfig = try Google_Protobuf_Any(message: rbac)
        var config = Envoy_Extensions_Filters_Network_ExtAuthz_V3_ExtAuthz()
        config.statPrefix = tcpStatPrefix
        config.grpcService = grpcService(authorizer)
        config.failureModeAllow = authorizer.settings.failOpen
        config.transportApiVersion = .v3
        config.filterEnabledMetadata = customMarker(filter: networkFilterName)
        var extAuthz = Envoy_Config_Listener_V3_Filter()
        extAuthz.name = networkExtAuthzFilterName
        extAuthz.typedConfig = try Google_Protobuf_Any(message: config)
        return [marker, extAuthz]
    }

    /// The provider's service as an `envoy_grpc` target, with its deadline.
    private static func grpcService(_ authorizer: ExternalAuthorizer) -> Envoy_Config_Core_V3_GrpcService {
        var service = Envoy_Config_Core_V3_GrpcService()
        service.envoyGrpc.clusterName = authorizer.cluster
        service.envoyGrpc.authority = authorizer.authority
        let timeout = authorizer.settings.timeout.components
        service.timeout = .init(seconds: timeout.seconds, nanos: Int32(timeout.attoseconds / 1_000_000_000))
        return service
    }

    /// ext_authz's `filter_enabled_metadata`: the marking RBAC filter (`filter`) matched a CUSTOM policy.
    private static func customMarker(filter: String) -> Envoy_Type_Matcher_V3_MetadataMatcher {
        var matcher = Envoy_Type_Matcher_V3_MetadataMatcher()
        matcher.filter = filter
        var segment = Envoy_Type_Matcher_V3_MetadataMatcher.PathSegment()
        segment.key = customShadowStatPrefix + "shadow_effective_policy_id"
        matcher.path = [segment]
        matcher.value.stringMatch.prefix = String(customPrefix.dropLast())
        return matcher
    }

    /// `rules` as enforced DENY rules, each policy's name with `suffix`.
    static func denying(_ rules: RBAC, suffix: String) -> RBAC {
        var rbac = RBAC()
        rbac.action = .deny
        for (name, policy) in rules.policies { rbac.policies[name + suffix] = policy }
        return rbac
    }

    /// The connection manager's RBAC filters, to go first in its `http_filters`.
    static func httpFilters(_ sets: [RuleSet]) throws -> [Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter] {
        try sets.map { set in
            var config = Envoy_Extensions_Filters_Http_Rbac_V3_RBAC()
            if let rules = set.rules { config.rules = rules }
            if let shadow = set.shadowRules { config.shadowRules = shadow }
            config.shadowRulesStatPrefix = set.shadowRulesStatPrefix
            var filter = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter()
            filter.name = httpFilterName
            filter.typedConfig = try Google_Protobuf_Any(message: config)
            return filter
        }
    }

    /// A TCP chain's RBAC filters, to go before `tcp_proxy`.
    static func networkFilters(_ sets: [RuleSet]) throws -> [Envoy_Config_Listener_V3_Filter] {
        try sets.map { set in
            var config = Envoy_Extensions_Filters_Network_Rbac_V3_RBAC()
            if let rules = set.rules { config.rules = rules }
            if let shadow = set.shadowRules { config.shadowRules = shadow }
            config.statPrefix = tcpStatPrefix
            config.shadowRulesStatPrefix = set.shadowRulesStatPrefix
            var filter = Envoy_Config_Listener_V3_Filter()
            filter.name = networkFilterName
            filter.typedConfig = try Google_Protobuf_Any(message: config)
            return filter
        }
    }

    /// One rule set per action present, AUDIT, DENY, ALLOW.
    static func ruleSets(for policies: [AuthorizationPolicy], forTCP: Bool) -> [RuleSet] {
        let actions: [(AuthorizationPolicy.Action, RBAC.Action)] = [(.audit, .log), (.deny, .deny), (.allow, .allow)]
        return actions.compactMap { action, rbacAction in
            let selected = policies.filter { $0.action == action }
            guard !selected.isEmpty else { return nil }
            var set = RuleSet()
            for policy in selected {
                var rbac = (policy.dryRun ? set.shadowRules : set.rules) ?? { var rbac = RBAC(); rbac.action = rbacAction; return rbac }()
                for (index, rule) in policy.rules.enumerated() {
                    if let generated = self.policy(rule, namespace: policy.namespace, action: action, forTCP: forTCP) {
                        rbac.policies[policyName(policy, rule: index)] = generated
                    }
                }
                if policy.rules.isEmpty { rbac.policies[policyName(policy, rule: 0)] = matchNever }
                if policy.dryRun { set.shadowRules = rbac } else { set.rules = rbac }
            }
            return set
        }
    }

    /// istiod's name: `ns[shop]-policy[payments]-rule[0]`.
    static func policyName(_ policy: AuthorizationPolicy, rule: Int) -> String {
        "ns[\(policy.namespace)]-policy[\(policy.name)]-rule[\(rule)]"
    }

    /// What a policy without rules becomes: a policy that matches nothing.
    static let matchNever: Envoy_Config_Rbac_V3_Policy = {
        var any = Permission()
        any.any = true
        var permission = Permission()
        permission.notRule = any
        var anyone = Principal()
        anyone.any = true
        var principal = Principal()
        principal.notID = anyone
        var policy = Envoy_Config_Rbac_V3_Policy()
        policy.permissions = [permission]
        policy.principals = [principal]
        return policy
    }()

    // MARK: Rules

    /// One field's values (or a condition's) turned into matchers, with what TCP makes of it.
    private struct Field<Matcher> {
        var match: AuthorizationPolicy.Match
        var httpOnly: Bool
        var matcher: (String) -> Matcher
    }

    /// The RBAC policy of one rule; nil when the rule is left out (an ALLOW rule using HTTP-only
    /// fields, on TCP). `namespace` is the policy's: service accounts without one are in it.
    static func policy(_ rule: AuthorizationPolicy.Rule, namespace: String, action: AuthorizationPolicy.Action,
                       forTCP: Bool) -> Envoy_Config_Rbac_V3_Policy? {
        if forTCP && action == .allow && rule.hasHTTPOnlyFields { return nil }
        let permissionConditions = rule.when.filter { !$0.attribute.isPrincipal }.map(permissionField)
        let principalConditions = rule.when.filter(\.attribute.isPrincipal).map { principalField($0, namespace: namespace) }
        let operations: [AuthorizationPolicy.Operation?] = rule.to.isEmpty ? [nil] : rule.to
        let sources: [AuthorizationPolicy.Source?] = rule.from.isEmpty ? [nil] : rule.from
        var policy = Envoy_Config_Rbac_V3_Policy()
        policy.permissions = operations.map { operation in
            let fields = (operation.map(operationFields) ?? []) + permissionConditions
            var and = Permission()
            and.andRules.rules = combined(fields, forTCP: forTCP, any: { var any = Permission(); any.any = true; return any }(),
                                          or: { var or = Permission(); or.orRules.rules = $0; return or },
                                          not: { var not = Permission(); not.notRule = $0; return not })
            return and
        }
        policy.principals = sources.map { source in
            let fields = (source.map { sourceFields($0, namespace: namespace) } ?? []) + principalConditions
            var and = Principal()
            and.andIds.ids = combined(fields, forTCP: forTCP, any: { var any = Principal(); any.any = true; return any }(),
                                      or: { var or = Principal(); or.orIds.ids = $0; return or },
                                      not: { var not = Principal(); not.notID = $0; return not })
            return and
        }
        return policy
    }

    /// The AND of fields: per field an OR of its values, a NOT of the OR of its negated values; fields
    /// TCP cannot evaluate left out there; `any` when nothing is left.
    private static func combined<M>(_ fields: [Field<M>], forTCP: Bool, any: M, or: ([M]) -> M, not: (M) -> M) -> [M] {
        var and: [M] = []
        for field in fields where !(forTCP && field.httpOnly) {
            if !field.match.values.isEmpty { and.append(or(field.match.values.map(field.matcher))) }
            if !field.match.notValues.isEmpty { and.append(not(or(field.match.notValues.map(field.matcher)))) }
        }
        return and.isEmpty ? [any] : and
    }

    private static func operationFields(_ operation: AuthorizationPolicy.Operation) -> [Field<Permission>] {
        [
            Field(match: operation.hosts, httpOnly: true) { value in
                var permission = Permission()
                permission.header = hostMatcher(value)
                return permission
            },
            Field(match: operation.methods, httpOnly: true) { value in
                var permission = Permission()
                permission.header = headerMatcher(":method", value)
                return permission
            },
            Field(match: operation.paths, httpOnly: true) { value in
                var permission = Permission()
                permission.urlPath.path = stringMatcher(value)
                return permission
            },
            Field(match: operation.ports, httpOnly: false) { value in
                var permission = Permission()
                permission.destinationPort = UInt32(value) ?? 0
                return permission
            },
        ]
    }

    private static func sourceFields(_ source: AuthorizationPolicy.Source, namespace: String) -> [Field<Principal>] {
        [
            Field(match: source.principals, httpOnly: false, matcher: peerPrincipal),
            Field(match: source.requestPrincipals, httpOnly: true) { authnMetadata(["request.auth.principal"], $0) },
            Field(match: source.serviceAccounts, httpOnly: false) { peerServiceAccount($0, namespace: namespace) },
            Field(match: source.namespaces, httpOnly: false, matcher: peerNamespace),
            Field(match: source.remoteIPBlocks, httpOnly: false) { value in
                var principal = Principal()
                principal.remoteIp = cidrRange(value)
                return principal
            },
            Field(match: source.ipBlocks, httpOnly: false) { value in
                var principal = Principal()
                principal.directRemoteIp = cidrRange(value)
                return principal
            },
        ]
    }

    private static func permissionField(_ condition: AuthorizationPolicy.Condition) -> Field<Permission> {
        Field(match: condition.match, httpOnly: condition.attribute.isHTTPOnly) { value in
            var permission = Permission()
            switch condition.attribute {
            case .destinationIP: permission.destinationIp = cidrRange(value)
            case .destinationPort: permission.destinationPort = UInt32(value) ?? 0
            case .connectionSNI: permission.requestedServerName = stringMatcher(value)
            case .envoyFilter(let filter, let key):
                var metadata = Envoy_Type_Matcher_V3_MetadataMatcher()
                metadata.filter = filter
                metadata.path = [pathSegment(key)]
                // `[v]`: the metadata value is a list, one of whose entries matches.
                if value.hasPrefix("[") && value.hasSuffix("]") && value.count >= 2 {
                    metadata.value.listMatch.oneOf.stringMatch = stringMatcher(String(value.dropFirst().dropLast()))
                } else {
                    metadata.value.stringMatch = stringMatcher(value)
                }
                permission.metadata = metadata
            default: permission.any = true
            }
            return permission
        }
    }

    private static func principalField(_ condition: AuthorizationPolicy.Condition, namespace: String) -> Field<Principal> {
        Field(match: condition.match, httpOnly: condition.attribute.isHTTPOnly) { value in
            switch condition.attribute {
            case .requestHeader(let name):
                var principal = Principal()
                principal.header = headerMatcher(name, value)
                return principal
            case .sourceIP:
                var principal = Principal()
                principal.directRemoteIp = cidrRange(value)
                return principal
            case .remoteIP:
                var principal = Principal()
                principal.remoteIp = cidrRange(value)
                return principal
            case .sourceNamespace: return peerNamespace(value)
            case .sourceServiceAccount: return peerServiceAccount(value, namespace: namespace)
            case .sourcePrincipal: return peerPrincipal(value)
            case .requestPrincipal: return authnMetadata(["request.auth.principal"], value)
            case .requestAudiences: return authnMetadata(["request.auth.audiences"], value)
            case .requestPresenter: return authnMetadata(["request.auth.presenter"], value)
            case .requestClaim(let path): return authnMetadata(["request.auth.claims"] + path, value, list: true)
            default:
                var principal = Principal()
                principal.any = true
                return principal
            }
        }
    }

    // MARK: Matchers

    /// Istio's string forms, with `prefix` before the value: `*` any non-empty value, `abc*` prefix,
    /// `*abc` suffix (a regex when there is a prefix to keep), else exact.
    static func stringMatcher(_ value: String, prefix: String = "") -> StringMatcher {
        var matcher = StringMatcher()
        if value == "*" {
            matcher.safeRegex.regex = ".+"
        } else if value.hasPrefix("*") {
            if prefix.isEmpty { matcher.suffix = String(value.dropFirst()) } else { matcher.safeRegex.regex = prefix + ".*" + value.dropFirst() }
        } else if value.hasSuffix("*") {
            matcher.prefix = prefix + value.dropLast()
        } else {
            matcher.exact = prefix + value
        }
        return matcher
    }

    /// The peer's SPIFFE ID, `spiffe://` followed by the principal as written.
    static func peerPrincipal(_ value: String) -> Principal {
        peerIdentity(stringMatcher(value, prefix: "spiffe://"))
    }

    /// Peers of namespace `value` (`*` wildcards allowed): regex `.*/ns/NAMESPACE/.*` on the SPIFFE ID.
    static func peerNamespace(_ value: String) -> Principal {
        var matcher = StringMatcher()
        matcher.safeRegex.regex = ".*/ns/\(value.replacing("*", with: ".*"))/.*"
        return peerIdentity(matcher)
    }

    /// Peers running as service account `value` (`ACCOUNT`, in `namespace`, or `NAMESPACE/ACCOUNT`), in
    /// any trust domain: istiod's regex on the SPIFFE ID.
    static func peerServiceAccount(_ value: String, namespace: String) -> Principal {
        let parts = value.split(separator: "/", maxSplits: 1)
        let (accountNamespace, account) = parts.count == 2 ? (String(parts[0]), String(parts[1])) : (namespace, value)
        var matcher = StringMatcher()
        matcher.safeRegex.regex = "spiffe://.+/ns/\(accountNamespace)/(.+/|)sa/\(account)(/.+)?"
        return peerIdentity(matcher)
    }

    private static func peerIdentity(_ matcher: StringMatcher) -> Principal {
        var principal = Principal()
        principal.filterState.key = peerPrincipalKey
        principal.filterState.stringMatch = matcher
        return principal
    }

    /// A request header (`:method` included): present for `*`, else exact, prefix or suffix.
    static func headerMatcher(_ name: String, _ value: String) -> Envoy_Config_Route_V3_HeaderMatcher {
        var header = Envoy_Config_Route_V3_HeaderMatcher()
        header.name = name
        if value == "*" {
            header.presentMatch = true
        } else if value.hasPrefix("*") {
            header.suffixMatch = String(value.dropFirst())
        } else if value.hasSuffix("*") {
            header.prefixMatch = String(value.dropLast())
        } else {
            header.exactMatch = value
        }
        return header
    }

    /// `:authority`, case-insensitive: present for `*`, else exact, prefix or suffix.
    static func hostMatcher(_ value: String) -> Envoy_Config_Route_V3_HeaderMatcher {
        var header = Envoy_Config_Route_V3_HeaderMatcher()
        header.name = ":authority"
        if value == "*" {
            header.presentMatch = true
        } else {
            var matcher = stringMatcher(value)
            matcher.ignoreCase = true
            header.stringMatch = matcher
        }
        return header
    }

    /// Dynamic metadata of `istio_authn` at `path`: the value itself, or (`list`) one of its entries.
    static func authnMetadata(_ path: [String], _ value: String, list: Bool = false) -> Principal {
        var metadata = Envoy_Type_Matcher_V3_MetadataMatcher()
        metadata.filter = authnFilter
        metadata.path = path.map(pathSegment)
        if list { metadata.value.listMatch.oneOf.stringMatch = stringMatcher(value) } else { metadata.value.stringMatch = stringMatcher(value) }
        var principal = Principal()
        principal.metadata = metadata
        return principal
    }

    private static func pathSegment(_ key: String) -> Envoy_Type_Matcher_V3_MetadataMatcher.PathSegment {
        var segment = Envoy_Type_Matcher_V3_MetadataMatcher.PathSegment()
        segment.key = key
        return segment
    }

    /// An address or CIDR (the reader checked it) as given, `/32` or `/128` for a single address.
    static func cidrRange(_ value: String) -> Envoy_Config_Core_V3_CidrRange {
        var range = Envoy_Config_Core_V3_CidrRange()
        let network = IPNetwork(value)
        range.addressPrefix = network?.address ?? value
        range.prefixLen = Google_Protobuf_UInt32Value(UInt32(network?.prefixLength ?? 0))
        return range
    }
}
