#if canImport(Glibc)
import Glibc
#endif
import Configuration
import HTTPTypes
import Routing
import SwiftProtobuf
import XDS

/// `envoy.filters.http.jwt_authn` as configured on a listener: its providers, and the rules that pick a
/// requirement for a request (the first whose route match holds; no rule matching, no verification).
/// Decoded once per listener update; used by every event loop.
public final class JWTAuthenticationConfig: Sendable {
    static let typeName = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
    /// The filter's name in dynamic metadata (`payload_in_metadata` is written under it).
    static let metadataNamespace = "envoy.filters.http.jwt_authn"

    /// One `rules` entry.
    struct Rule: Sendable {
        var match: RouteMatch
        var requirement: JWTRequirement
    }

    let providers: [JWTProvider]
    /// The providers' `remote_jwks`, fetched before a request is verified.
    let remoteKeySets: [RemoteJWKS]
    let rules: [Rule]
    /// `bypass_cors_preflight`: CORS preflight requests are not verified.
    let bypassesCORSPreflight: Bool
    /// `strip_failure_response`: a failure answers with no body.
    let stripsFailureResponse: Bool
    /// Seconds since the epoch (tests set the time).
    let now: @Sendable () -> Int64

    /// Decodes `any` (the filter's typed_config); `path` names it in refusals, and fields accepted but
    /// not acted on are added to `notActedOn` with paths under it.
    convenience init(unpacking any: Google_Protobuf_Any, path: String, notActedOn: inout [FieldNotActedOn],
         now: @escaping @Sendable () -> Int64 = JWTAuthenticationConfig.systemTime) throws(ConfigError) {
        let proto: Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtAuthentication
        do {
            if HTTPFilterRegistry.typeName(any.typeURL) == Self.typeName {
                proto = try .init(unpackingAny: any)
            } else {
                // Inside a TypedStruct: its value is the configuration's JSON.
                let wrapped = try Udpa_Type_V1_TypedStruct(serializedBytes: [UInt8](any.value))
                proto = try .init(jsonString: try wrapped.value.jsonString())
            }
        } catch {
            throw ConfigError(path: path, message: "is not a \(Self.typeName): \(error)")
        }
        try self.init(proto, path: path, notActedOn: &notActedOn, now: now)
    }

    init(_ proto: Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtAuthentication, path: String,
         notActedOn: inout [FieldNotActedOn], now: @escaping @Sendable () -> Int64 = JWTAuthenticationConfig.systemTime) throws(ConfigError) {
        var providers: [String: JWTProvider] = [:]
        for name in proto.providers.keys.sorted() {
            providers[name] = try JWTProvider(name: name, proto.providers[name]!, path: "\(path).providers[\"\(name)\"]", notActedOn: &notActedOn)
        }
        var requirements: [String: JWTRequirement] = [:]
        for name in proto.requirementMap.keys.sorted() {
            requirements[name] = try JWTRequirement(proto.requirementMap[name]!, providers: providers, path: "\(path).requirement_map[\"\(name)\"]")
        }
        var rules: [Rule] = []
        for (index, rule) in proto.rules.enumerated() {
            let rulePath = "\(path).rules[\(index)]"
            let match = try RouteMatch(rule.match, path: "\(rulePath).match")
            let requirement: JWTRequirement
            switch rule.requirementType {
            case .requires(let requires)?:
                requirement = try JWTRequirement(requires, providers: providers, path: "\(rulePath).requires")
            case .requirementName(let name)?:
                guard let named = requirements[name] else {
                    throw ConfigError(path: "\(rulePath).requirement_name", message: "\"\(name)\" is not in requirement_map")
                }
                requirement = named
            case nil:
                // Envoy: a rule without a requirement matches requests that need no verification.
                requirement = .allowMissingOrFailed
            }
            rules.append(Rule(match: match, requirement: requirement))
        }
        if proto.hasFilterStateRules {
            throw ConfigError(path: "\(path).filter_state_rules", message: "is not supported: the requirements it picks would not be enforced")
        }
        if !proto.statPrefix.isEmpty {
            notActedOn.append(.init(path: "\(path).stat_prefix", reason: "Capstan keeps no jwt_authn statistics"))
        }
        notActedOn += UnknownFields.paths(in: proto).map { FieldNotActedOn(path: "\(path).\($0)", reason: UnknownFields.reason) }
        self.providers = providers.keys.sorted().map { providers[$0]! }
        remoteKeySets = self.providers.compactMap { provider in
            if case .remote(let remote) = provider.keySource { return remote }
            return nil
        }
        self.rules = rules
        bypassesCORSPreflight = proto.bypassCorsPreflight
        stripsFailureResponse = proto.stripFailureResponse
        self.now = now
    }

    /// The requirement for `request`: its first matching rule's.
    func requirement(for request: HTTPRequest) -> JWTRequirement? {
        guard !rules.isEmpty, let path = request.path else { return nil }
        let whole = Substring(path)
        let pathOnly = RouteMatch.pathOnly(whole)
        return rules.first { $0.match.matches(request, path: whole, pathOnly: pathOnly) }?.requirement
    }

    @Sendable public static func systemTime() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec)
    }
}
