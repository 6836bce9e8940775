import Atomics
import Authorization
import Configuration
import HTTPTypes
import NIOCore
import Routing
import SwiftProtobuf
import XDS

/// An RBAC filter's rules, enforced and tried (`shadow_rules`, Istio's dry run), with the counters of
/// their outcomes: what the HTTP filter and the network filter (in DataPlane) share.
public final class RBACEngine: Sendable {
    /// Enforced: nil allows everything (Envoy's filter without `rules`).
    public let rules: RoleBasedAccessControl?
    /// Tried and counted, never enforced.
    public let shadowRules: RoleBasedAccessControl?
    public let statNames: RBACCounters.Names
    /// Envoy's dynamic metadata keys for the shadow rules' outcome (`<shadow_rules_stat_prefix>shadow_effective_policy_id`
    /// and `…shadow_engine_result`), which ext_authz's `filter_enabled_metadata` reads; nil without shadow rules.
    public let shadowMetadataKeys: (policyID: String, result: String)?
    /// Bound by the proxy to the counters of `statNames` when a connection first uses the filter, so they
    /// outlive configuration updates, as Envoy's statistics do; unbound, nothing is counted.
    public let counters = ManagedAtomicLazyReference<RBACCounters>()

    /// `statPrefix` comes before `rbac.` (the network filter's `stat_prefix`); the rules' prefixes after it.
    public init(rules: RoleBasedAccessControl?, shadowRules: RoleBasedAccessControl?, statPrefix: String = "",
                rulesStatPrefix: String = "", shadowRulesStatPrefix: String = "") {
        self.rules = rules
        self.shadowRules = shadowRules
        statNames = RBACCounters.Names(allowed: "\(statPrefix)rbac.\(rulesStatPrefix)allowed", denied: "\(statPrefix)rbac.\(rulesStatPrefix)denied",
                                       shadowAllowed: shadowRules == nil ? nil : "\(statPrefix)rbac.\(shadowRulesStatPrefix)shadow_allowed",
                                       shadowDenied: shadowRules == nil ? nil : "\(statPrefix)rbac.\(shadowRulesStatPrefix)shadow_denied")
        shadowMetadataKeys = shadowRules == nil ? nil
            : ("\(shadowRulesStatPrefix)shadow_effective_policy_id", "\(shadowRulesStatPrefix)shadow_engine_result")
    }

    /// From the rules of a filter's configuration: `path` names them in refusals, `field` in the fields
    /// not acted on. Unknown fields at the top (the xDS matcher forms) are refused: Capstan does not
    /// evaluate them, and leaving them out would change what is allowed.
    public convenience init(rules: Envoy_Config_Rbac_V3_RBAC?, shadowRules: Envoy_Config_Rbac_V3_RBAC?, unknownFields: [String],
                            statPrefix: String = "", rulesStatPrefix: String = "", shadowRulesStatPrefix: String = "",
                            path: String, field: String, notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        for auditLogging in ["#1.#3", "#2.#3"] where unknownFields.contains(auditLogging) {
            notActedOn.append(.init(path: "\(field).\(auditLogging == "#1.#3" ? "rules" : "shadow_rules").audit_logging_options",
                                    reason: "Capstan writes no RBAC audit log: outcomes are counted and the access log shows denials"))
        }
        if let first = unknownFields.first(where: { !$0.contains(".") }) {
            throw ConfigError(path: "\(path).\(first)", message: "is not supported (the matcher and shadow_matcher forms are not evaluated), and leaving it out would change what is allowed")
        }
        self.init(rules: try rules.map { proto throws(ConfigError) in try RoleBasedAccessControl(proto, path: "\(path).rules") },
                  shadowRules: try shadowRules.map { proto throws(ConfigError) in try RoleBasedAccessControl(proto, path: "\(path).shadow_rules") },
                  statPrefix: statPrefix, rulesStatPrefix: rulesStatPrefix, shadowRulesStatPrefix: shadowRulesStatPrefix)
    }

    /// The enforced rules' verdict on `request` (allowed when there are none); both outcomes counted.
    public func check(_ request: AuthorizationRequest) -> RoleBasedAccessControl.Verdict {
        checkWithShadow(request).enforced
    }

    /// The enforced rules' verdict and the shadow rules' (nil without shadow rules); both counted.
    public func checkWithShadow(_ request: AuthorizationRequest) -> (enforced: RoleBasedAccessControl.Verdict, shadow: RoleBasedAccessControl.Verdict?) {
        let counters = self.counters.load()
        let shadow = shadowRules?.evaluate(request)
        if let shadow { counters?.count(shadow: shadow.allowed) }
        guard let rules else { return (.init(allowed: true, matchedPolicy: nil), shadow) }
        let verdict = rules.evaluate(request)
        counters?.count(enforced: verdict.allowed)
        return (verdict, shadow)
    }
}

/// `envoy.filters.http.rbac`: a request its rules deny is answered 403 `RBAC: access denied`, with
/// Envoy's response code details naming the policy. Stateless per request, so the configuration is
/// its own ``HTTPFilter``: nothing is made for a request.
public final class RBACFilterConfig: HTTPFilter, Sendable {
    static let deniedBody = "RBAC: access denied"

    public let engine: RBACEngine

    public init(engine: RBACEngine) { self.engine = engine }

    /// From a filter's `typed_config`; `path` names it in refusals, `field` in the fields not acted on.
    convenience init(unpacking any: Google_Protobuf_Any, path: String, field: String,
                     notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        let proto: Envoy_Extensions_Filters_Http_Rbac_V3_RBAC
        do {
            proto = try Envoy_Extensions_Filters_Http_Rbac_V3_RBAC(unpackingAny: any)
        } catch {
            throw ConfigError(path: path, message: "is not an envoy.extensions.filters.http.rbac.v3.RBAC: \(error)")
        }
        if proto.trackPerRuleStats {
            notActedOn.append(.init(path: "\(field).track_per_rule_stats", reason: "Capstan counts RBAC outcomes per filter, not per policy"))
        }
        self.init(engine: try RBACEngine(rules: proto.hasRules ? proto.rules : nil, shadowRules: proto.hasShadowRules ? proto.shadowRules : nil,
                                         unknownFields: UnknownFields.paths(in: proto), rulesStatPrefix: proto.rulesStatPrefix,
                                         shadowRulesStatPrefix: proto.shadowRulesStatPrefix, path: path, field: field, notActedOn: &notActedOn))
    }

    func decodeHeaders(_ request: inout HTTPRequest, route: RouteDecision?, stream: any HTTPFilterCallbacks) -> HTTPFilterStatus {
        let (verdict, shadow) = engine.checkWithShadow(AuthorizationRequest(connection: stream.downstream, request: request, metadata: stream.metadata))
        if let shadow, let keys = engine.shadowMetadataKeys { Self.record(shadow, keys: keys, in: &stream.metadata) }
        guard !verdict.allowed else { return .proceed }
        stream.setResponseCodeDetails("rbac_access_denied_matched_policy[\(verdict.matchedPolicy ?? "none")]")
        return .reply(HTTPLocalReply(status: .forbidden, body: Self.deniedBody, flags: [], grpcStatus: nil))
    }

    func requestEnded() {}

    /// The shadow rules' outcome as Envoy leaves it under `envoy.filters.http.rbac`: the policy that
    /// matched (only when one did) and `allowed` or `denied`. Istio's ext_authz runs on it.
    /// `filter`: the network RBAC filter's name on a connection's metadata.
    public static func record(_ shadow: RoleBasedAccessControl.Verdict, keys: (policyID: String, result: String), in metadata: inout DynamicMetadata,
                              under filter: String = metadataNamespace) {
        var fields = metadata[filter] ?? Google_Protobuf_Struct()
        if let policy = shadow.matchedPolicy { fields.fields[keys.policyID] = Google_Protobuf_Value(stringValue: policy) }
        fields.fields[keys.result] = Google_Protobuf_Value(stringValue: shadow.allowed ? "allowed" : "denied")
        metadata[filter] = fields
    }

    /// The filter name Envoy's RBAC filter leaves its dynamic metadata under.
    public static let metadataNamespace = "envoy.filters.http.rbac"
}

/// One RBAC filter's counters: Envoy's `rbac.allowed`, `rbac.denied`, `rbac.shadow_allowed` and
/// `rbac.shadow_denied` (with the filter's stat prefixes). Atomics, counted from every event loop.
public final class RBACCounters: Sendable {
    public struct Names: Hashable, Sendable {
        public var allowed: String
        public var denied: String
        public var shadowAllowed: String?
        public var shadowDenied: String?
    }

    public let names: Names
    private let allowed = ManagedAtomic<Int>(0)
    private let denied = ManagedAtomic<Int>(0)
    private let shadowAllowed = ManagedAtomic<Int>(0)
    private let shadowDenied = ManagedAtomic<Int>(0)

    public init(names: Names) { self.names = names }

    public func count(enforced allowedNow: Bool) {
        (allowedNow ? allowed : denied).wrappingIncrement(ordering: .relaxed)
    }

    public func count(shadow allowedNow: Bool) {
        (allowedNow ? shadowAllowed : shadowDenied).wrappingIncrement(ordering: .relaxed)
    }

    /// Name and value of each counter the filter has.
    public var entries: [(String, Int)] {
        var entries = [(names.allowed, allowed.load(ordering: .relaxed)), (names.denied, denied.load(ordering: .relaxed))]
        if let name = names.shadowAllowed { entries.append((name, shadowAllowed.load(ordering: .relaxed))) }
        if let name = names.shadowDenied { entries.append((name, shadowDenied.load(ordering: .relaxed))) }
        return entries
    }
}

extension AuthorizationRequest {
    /// What RBAC checks of a connection (and, on an HTTP connection manager, of a request on it).
    public init(connection: DownstreamConnectionInfo, request: HTTPRequest? = nil, metadata: DynamicMetadata = DynamicMetadata()) {
        self.init(peerPrincipal: connection.peerPrincipal, localPrincipal: connection.localPrincipal,
                  sourceAddress: connection.remoteIP, destinationAddress: connection.localIP,
                  destinationPort: connection.localAddress?.port, requestedServerName: connection.requestedServerName,
                  request: request, metadata: metadata)
    }
}

extension IPAddress {
    /// A socket address's IP address (nil for a Unix socket).
    public init?(socketAddress: SocketAddress) {
        let address: IPAddress?
        switch socketAddress {
        case .v4(let socket): address = withUnsafeBytes(of: socket.address.sin_addr) { IPAddress(networkBytes: $0) }
        case .v6(let socket): address = withUnsafeBytes(of: socket.address.sin6_addr) { IPAddress(networkBytes: $0) }
        default: address = nil
        }
        guard let address else { return nil }
        self = address
    }
}
