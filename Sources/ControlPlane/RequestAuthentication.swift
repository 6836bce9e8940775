import Configuration
import FoundationEssentials
import SwiftProtobuf
import XDS

/// `security.istio.io` RequestAuthentication (v1 and v1beta1): which JWTs a workload's sidecar
/// verifies inbound. Scoped as AuthorizationPolicy is (``RequestAuthenticationScope``): selector in
/// its namespace, its namespace, or the mesh from the root namespace; every one that applies adds its
/// rules. A request without a token passes (AuthorizationPolicy's `requestPrincipals` keeps it out);
/// one with a token that fails verification is refused with 401. ``JWTAuthnGenerator`` makes the filter.
public struct RequestAuthentication: WorkloadScopedPolicy {
    /// `spec.jwtRules[]`.
    public struct JWTRule: Sendable, Equatable {
        /// Where the keys come from.
        public enum Keys: Sendable, Equatable {
            /// `jwks`: the JWKS document itself.
            case inline(String)
            /// `jwksUri` naming a service of this mesh: fetched by the proxy through `cluster`
            /// (`outbound|PORT||HOST`, resolved once every document is read).
            case remote(uri: String, cluster: String)
        }

        /// `fromHeaders[]`.
        public struct Header: Sendable, Equatable {
            public var name: String
            public var prefix: String
        }

        /// `outputClaimToHeaders[]`.
        public struct ClaimHeader: Sendable, Equatable {
            public var header: String
            public var claim: String
        }

        public var issuer: String
        public var audiences: [String] = []
        public var keys: Keys
        public var fromHeaders: [Header] = []
        public var fromParams: [String] = []
        public var fromCookies: [String] = []
        public var outputPayloadToHeader: String = ""
        public var outputClaimToHeaders: [ClaimHeader] = []
        public var forwardOriginalToken = false
    }

    public var origin: ResourceOrigin
    public var namespace: String
    public var name: String
    /// `spec.selector.matchLabels`; nil (or empty in the YAML) for a namespace- or mesh-wide one.
    public var selector: [String: String]?
    public var jwtRules: [JWTRule]
}

/// Reads a RequestAuthentication's `spec`, refusing what Istio's validation refuses and what Capstan
/// cannot generate honestly, each refusal naming the field: an empty issuer, an issuer given twice, a
/// `jwks` that is not a JWKS, a rule with neither `jwks` nor `jwksUri` (istiod would fetch the issuer's
/// OpenID discovery document from the internet) or with both, `targetRef`s, and unknown fields (an
/// ignored field could accept a token istiod would refuse). A `jwksUri` must name a service of this
/// mesh; that is checked once every document is read (``MeshConfigReader``).
enum RequestAuthenticationReader {
    static func read(_ spec: ConfigReader, origin: ResourceOrigin, namespace: String, name: String) throws(ConfigError) -> RequestAuthentication {
        try refusingUnknown(spec, ["selector", "jwtRules", "targetRef", "targetRefs"])
        for key in ["targetRef", "targetRefs"] {
            if let field = try spec.optional(key) {
                throw field.fail("not supported: it attaches a policy to a gateway or waypoint, and Capstan configures sidecars (use spec.selector)")
            }
        }
        var selector: [String: String]?
        if let reader = try spec.optional("selector") {
            try refusingUnknown(reader, ["matchLabels"])
            if let labels = try reader.optional("matchLabels").map(MeshConfigReader.labels), !labels.isEmpty { selector = labels }
        }
        var rules: [RequestAuthentication.JWTRule] = []
        var issuers: Set<String> = []
        for reader in try spec.optional("jwtRules")?.list() ?? [] {
            let rule = try jwtRule(reader)
            guard issuers.insert(rule.issuer).inserted else {
                throw ConfigError(path: "\(reader.path).issuer", message: "issuer \"\(rule.issuer)\" is already given by another rule of this RequestAuthentication")
            }
            rules.append(rule)
        }
        return RequestAuthentication(origin: origin, namespace: namespace, name: name, selector: selector, jwtRules: rules)
    }

    static func jwtRule(_ reader: ConfigReader) throws(ConfigError) -> RequestAuthentication.JWTRule {
        try refusingUnknown(reader, ["issuer", "audiences", "jwksUri", "jwks", "fromHeaders", "fromParams", "fromCookies",
                                     "outputPayloadToHeader", "outputClaimToHeaders", "forwardOriginalToken"])
        let issuerReader = try reader.required("issuer")
        let issuer = try issuerReader.string()
        if issuer.isEmpty { throw issuerReader.fail("must not be empty") }
        let keys: RequestAuthentication.JWTRule.Keys
        switch (try reader.optional("jwks"), try reader.optional("jwksUri")) {
        case (let jwks?, nil):
            let text = try jwks.string()
            if let problem = jwksProblem(text) { throw jwks.fail(problem) }
            keys = .inline(text)
        case (nil, let uri?):
            let text = try uri.string()
            guard meshServiceAddress(text) != nil else {
                throw uri.fail("\"\(text)\" is not an http:// URL with a host: jwksUri can only name a service of this mesh; give jwks inline")
            }
            keys = .remote(uri: text, cluster: "")
        case (_?, _?):
            throw reader.fail("give jwks or jwksUri, not both")
        case (nil, nil):
            throw reader.fail("needs jwks (the keys inline) or jwksUri (a service of this mesh): Capstan does not fetch the issuer's OpenID discovery document")
        }
        var rule = RequestAuthentication.JWTRule(issuer: issuer, keys: keys)
        rule.audiences = try strings(reader, "audiences")
        for header in try reader.optional("fromHeaders")?.list() ?? [] {
            try refusingUnknown(header, ["name", "prefix"])
            let nameReader = try header.required("name")
            let name = try nameReader.string()
            if name.isEmpty { throw nameReader.fail("must not be empty") }
            rule.fromHeaders.append(.init(name: name, prefix: try header.optional("prefix")?.string() ?? ""))
        }
        rule.fromParams = try strings(reader, "fromParams")
        rule.fromCookies = try strings(reader, "fromCookies")
        rule.outputPayloadToHeader = try reader.optional("outputPayloadToHeader")?.string() ?? ""
        for entry in try reader.optional("outputClaimToHeaders")?.list() ?? [] {
            try refusingUnknown(entry, ["header", "claim"])
            let headerReader = try entry.required("header")
            let claimReader = try entry.required("claim")
            let header = try headerReader.string()
            let claim = try claimReader.string()
            if header.isEmpty { throw headerReader.fail("must not be empty") }
            if claim.isEmpty { throw claimReader.fail("must not be empty") }
            rule.outputClaimToHeaders.append(.init(header: header, claim: claim))
        }
        rule.forwardOriginalToken = try reader.optional("forwardOriginalToken")?.bool() ?? false
        return rule
    }

    /// Why `text` is not a JWKS (a JSON object whose `keys` is a list of objects with a `kty`), or nil.
    static func jwksProblem(_ text: String) -> String? {
        struct KeySet: Decodable {
            struct Key: Decodable { var kty: String }
            var keys: [Key]
        }
        do {
            _ = try JSONDecoder().decode(KeySet.self, from: Data(text.utf8))
            return nil
        } catch {
            return "is not a JWKS (a JSON object {\"keys\": [{\"kty\": …}, …]}): \(error)"
        }
    }

    /// `http://HOST[:PORT]/…` as its host and port (80 if none), as istiod reads a jwksUri for a mesh
    /// cluster; nil for another scheme or no host.
    static func meshServiceAddress(_ uri: String) -> (host: String, port: Int)? {
        guard uri.hasPrefix("http://") else { return nil }
        let rest = uri.dropFirst("http://".count)
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard !authority.isEmpty, !authority.contains("@") else { return nil }
        let parts = authority.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count <= 2, !parts[0].isEmpty else { return nil }
        var port = 80
        if parts.count == 2 {
            guard let number = Int(parts[1]), (1...65535).contains(number) else { return nil }
            port = number
        }
        return (String(parts[0]).lowercased(), port)
    }

    static func strings(_ reader: ConfigReader, _ key: String) throws(ConfigError) -> [String] {
        var values: [String] = []
        for item in try reader.optional(key)?.list() ?? [] {
            let text = try item.string()
            if text.isEmpty { throw item.fail("must not be empty") }
            values.append(text)
        }
        return values
    }

    static func refusingUnknown(_ reader: ConfigReader, _ known: Set<String>) throws(ConfigError) {
        for key in try reader.fields().keys.sorted() where !known.contains(key) {
            let path = reader.path.isEmpty ? key : "\(reader.path).\(key)"
            throw ConfigError(path: path, message: "not a field Capstan knows here: refused, since leaving an authentication field out could accept a token istiod would refuse")
        }
    }
}

/// Envoy's `envoy.filters.http.jwt_authn` for the RequestAuthentications that apply to one workload,
/// in the shape istiod generates (`pilot/pkg/security/authn`, `convertToEnvoyJwtConfig`): each JWT
/// rule, in order (root namespace's policies first), is provider `origins-INDEX` with its issuer,
/// audiences, token locations (none: Envoy's default, `Authorization: Bearer` and `access_token`),
/// `forward`, `forward_payload_header`, `claim_to_headers` and `payload_in_metadata: ISSUER`; keys inline
/// (`local_jwks.inline_string`), or fetched by the proxy from a mesh service (`remote_jwks`, timeout 5s,
/// cache 5 minutes: istiod's PILOT_JWT_ENABLE_REMOTE_JWKS form). One rule for prefix `/`: with one
/// provider it `requires_any` of the provider or `allow_missing`; with several, any single provider,
/// or all of them each allowed missing. `bypass_cors_preflight` is set. It goes before the RBAC filters.
enum JWTAuthnGenerator {
    static let filterName = "envoy.filters.http.jwt_authn"

    typealias Config = Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtAuthentication
    typealias Requirement = Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtRequirement

    /// The filter's configuration for `policies` (those that apply to a workload, in order); nil when none has a rule.
    static func config(for policies: [RequestAuthentication]) -> Config? {
        let rules = policies.flatMap(\.jwtRules)
        guard !rules.isEmpty else { return nil }
        var config = Config()
        var each: [Requirement] = []
        var anyOne: [Requirement] = []
        for (index, rule) in rules.enumerated() {
            let name = "origins-\(index)"
            config.providers[name] = provider(rule)
            var named = Requirement()
            named.providerName = name
            var missing = Requirement()
            missing.allowMissing = Google_Protobuf_Empty()
            var either = Requirement()
            either.requiresAny.requirements = [named, missing]
            each.append(either)
            anyOne.append(named)
        }
        var requires: Requirement
        if each.count == 1 {
            requires = each[0]
        } else {
            var all = Requirement()
            all.requiresAll.requirements = each
            requires = Requirement()
            requires.requiresAny.requirements = anyOne + [all]
        }
        var rule = Envoy_Extensions_Filters_Http_JwtAuthn_V3_RequirementRule()
        rule.match.prefix = "/"
        rule.requires = requires
        config.rules = [rule]
        config.bypassCorsPreflight = true
        return config
    }

    static func provider(_ rule: RequestAuthentication.JWTRule) -> Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtProvider {
        var provider = Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtProvider()
        provider.issuer = rule.issuer
        provider.audiences = rule.audiences
        provider.forward = rule.forwardOriginalToken
        provider.forwardPayloadHeader = rule.outputPayloadToHeader
        provider.payloadInMetadata = rule.issuer
        provider.fromHeaders = rule.fromHeaders.map { header in
            var location = Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtHeader()
            location.name = header.name
            location.valuePrefix = header.prefix
            return location
        }
        provider.fromParams = rule.fromParams
        provider.fromCookies = rule.fromCookies
        provider.claimToHeaders = rule.outputClaimToHeaders.map { entry in
            var claim = Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtClaimToHeader()
            claim.headerName = entry.header
            claim.claimName = entry.claim
            return claim
        }
        switch rule.keys {
        case .inline(let jwks):
            var source = Envoy_Config_Core_V3_DataSource()
            source.inlineString = jwks
            provider.localJwks = source
        case .remote(let uri, let cluster):
            var remote = Envoy_Extensions_Filters_Http_JwtAuthn_V3_RemoteJwks()
            remote.httpUri.uri = uri
            remote.httpUri.cluster = cluster
            remote.httpUri.timeout = Google_Protobuf_Duration(seconds: 5)
            remote.cacheDuration = Google_Protobuf_Duration(seconds: 300)
            provider.remoteJwks = remote
        }
        return provider
    }

    /// The connection manager's filter, or none.
    static func httpFilters(_ config: Config?) throws -> [Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter] {
        guard let config else { return [] }
        var filter = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter()
        filter.name = filterName
        filter.typedConfig = try Google_Protobuf_Any(message: config)
        return [filter]
    }
}
