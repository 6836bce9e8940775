import Authorization
import Configuration
import Crypto
import Foundation
import HTTPTypes
import NIOCore
import NIOEmbedded
import Routing
import SwiftProtobuf
import Testing
import XDS
import _CryptoExtras
@testable import HTTPProxy

/// Envoy's jwt_authn filter: tokens signed here with swift-crypto keys (RS256, ES256, EdDSA) and
/// verified against a local JWKS of their public keys; Envoy's answers for every failure; what a
/// verified token leaves (metadata, headers); the requirement shapes istiod writes; refusals.
@Suite struct JWTAuthenticationTests {
    typealias Proto = Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtAuthentication
    typealias ProviderProto = Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtProvider
    typealias RequirementProto = Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtRequirement

    static let issuer = "https://issuer.example"
    /// The tests' clock: 2026-01-01T00:00:00Z.
    static let now: Int64 = 1_767_225_600

    /// The keys tokens are signed with; their public halves are the JWKS.
    enum Keys {
        static let rsa = try! _RSA.Signing.PrivateKey(keySize: .bits2048)
        static let p256 = P256.Signing.PrivateKey()
        static let ed25519 = Curve25519.Signing.PrivateKey()
        static let other = P256.Signing.PrivateKey()

        static var jwks: String {
            let primitives = try! rsa.publicKey.getKeyPrimitives()
            let point = p256.publicKey.rawRepresentation
            return """
                {"keys": [
                  {"kty": "RSA", "kid": "rsa", "alg": "RS256", "n": "\(Base64URL.encode(primitives.modulus))", "e": "\(Base64URL.encode(primitives.publicExponent))"},
                  {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "\(Base64URL.encode(point.prefix(32)))", "y": "\(Base64URL.encode(point.suffix(32)))"},
                  {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "\(Base64URL.encode(ed25519.publicKey.rawRepresentation))"},
                  {"kty": "unknown", "kid": "skipped"}
                ]}
                """
        }
    }

    enum Algorithm { case rs256, es256, edDSA, es256WithOtherKey }

    /// A token over `claims` (JSON members), signed with `algorithm`.
    static func token(_ claims: String, algorithm: Algorithm = .rs256) -> String {
        let header: String = switch algorithm {
        case .rs256: #"{"alg":"RS256","kid":"rsa","typ":"JWT"}"#
        case .es256, .es256WithOtherKey: #"{"alg":"ES256","kid":"ec"}"#
        case .edDSA: #"{"alg":"EdDSA","kid":"ed"}"#
        }
        let signed = Base64URL.encode(Array(header.utf8)) + "." + Base64URL.encode(Array("{\(claims)}".utf8))
        let data = Array(signed.utf8)
        let signature: [UInt8] = switch algorithm {
        case .rs256: Array(try! Keys.rsa.signature(for: SHA256.hash(data: data), padding: .insecurePKCS1v1_5).rawRepresentation)
        case .es256: Array(try! Keys.p256.signature(for: data).rawRepresentation)
        case .es256WithOtherKey: Array(try! Keys.other.signature(for: data).rawRepresentation)
        case .edDSA: Array(try! Keys.ed25519.signature(for: data))
        }
        return signed + "." + Base64URL.encode(signature)
    }

    /// Claims valid at ``now``.
    static let validClaims = #""iss":"https://issuer.example","sub":"alice","aud":["bookinfo","other"],"azp":"web","scope":"read write","exp":1767229200,"iat":1767225000,"n":3"#

    static func provider(_ configure: (inout ProviderProto) -> Void = { _ in }) -> ProviderProto {
        var provider = ProviderProto()
        provider.issuer = issuer
        provider.localJwks.inlineString = Keys.jwks
        provider.payloadInMetadata = "payload"
        configure(&provider)
        return provider
    }

    static func requires(_ provider: String) -> RequirementProto {
        var requirement = RequirementProto()
        requirement.providerName = provider
        return requirement
    }

    /// Istio's shape: the provider, or no token at all.
    static func istioRequirement(_ provider: String = "origins-0") -> RequirementProto {
        var allowMissing = RequirementProto()
        allowMissing.allowMissing = Google_Protobuf_Empty()
        var requirement = RequirementProto()
        requirement.requiresAny.requirements = [requires(provider), allowMissing]
        return requirement
    }

    /// One provider `origins-0`; `requirement` on `prefix`.
    static func config(_ provider: ProviderProto = provider(), requirement: RequirementProto = requires("origins-0"),
                       prefix: String = "/", _ configure: (inout Proto) -> Void = { _ in }) throws -> JWTAuthenticationConfig {
        var proto = Proto()
        proto.providers["origins-0"] = provider
        var rule = Envoy_Extensions_Filters_Http_JwtAuthn_V3_RequirementRule()
        rule.match.prefix = prefix
        rule.requires = requirement
        proto.rules = [rule]
        configure(&proto)
        var notActedOn: [FieldNotActedOn] = []
        return try JWTAuthenticationConfig(proto, path: "jwt", notActedOn: &notActedOn, now: { now })
    }

    /// The filter's stream callbacks, recording what it left.
    final class Stream: HTTPFilterCallbacks {
        let eventLoop: any EventLoop = EmbeddedEventLoop()
        let downstream = DownstreamConnectionInfo(remoteAddress: nil, localAddress: nil)
        var metadata = DynamicMetadata()
        var details: String?
        func resume() {}
        func resume(_ change: (inout HTTPRequest) -> Void) {}
        var protocolName: String { "HTTP/1.1" }
        func upstream(named cluster: String) -> (cluster: any UpstreamCluster, pools: UpstreamPools)? { nil }
        func reply(_ reply: HTTPLocalReply) {}
        func addFlags(_ flags: ResponseFlags) {}
        func setResponseCodeDetails(_ details: String) { self.details = details }
    }

    struct Outcome {
        var status: HTTPFilterStatus
        var request: HTTPRequest
        var stream: Stream

        var reply: HTTPLocalReply? {
            if case .reply(let reply) = status { return reply }
            return nil
        }
        var proceeded: Bool {
            if case .proceed = status { return true }
            return false
        }
    }

    static func run(_ config: JWTAuthenticationConfig, path: String = "/books", headers: [String: String] = [:],
                    method: HTTPRequest.Method = .get) -> Outcome {
        var request = HTTPRequest(method: method, scheme: "http", authority: "bookinfo.local", path: path)
        for (name, value) in headers { request.headerFields[HTTPField.Name(name)!] = value }
        let stream = Stream()
        let status = JWTAuthenticationFilter(config: config).decodeHeaders(&request, route: nil, stream: stream)
        return Outcome(status: status, request: request, stream: stream)
    }

    static func bearer(_ token: String) -> [String: String] { ["authorization": "Bearer \(token)"] }

    // MARK: Accepted

    @Test func anRS256TokenPassesAndLeavesItsClaims() throws {
        let outcome = Self.run(try Self.config(), headers: Self.bearer(Self.token(Self.validClaims)))
        #expect(outcome.proceeded)
        #expect(outcome.request.headerFields[.authorization] == nil, "forward is false: the token is not sent upstream")
        let payload = outcome.stream.metadata.value(filter: "envoy.filters.http.jwt_authn", path: ["payload", "sub"])
        #expect(payload?.stringValue == "alice")
        let istio = outcome.stream.metadata
        #expect(istio.value(filter: "istio_authn", path: ["request.auth.principal"])?.stringValue == "https://issuer.example/alice")
        #expect(istio.value(filter: "istio_authn", path: ["request.auth.audiences"])?.stringValue == "bookinfo")
        #expect(istio.value(filter: "istio_authn", path: ["request.auth.presenter"])?.stringValue == "web")
        // Claims as Istio wrote them: strings as lists of their words, numbers left out.
        let scope = istio.value(filter: "istio_authn", path: ["request.auth.claims", "scope"])?.listValue.values.map(\.stringValue)
        #expect(scope == ["read", "write"])
        #expect(istio.value(filter: "istio_authn", path: ["request.auth.claims", "iss"])?.listValue.values.map(\.stringValue) == [Self.issuer])
        #expect(istio.value(filter: "istio_authn", path: ["request.auth.claims", "n"]) == nil)
    }

    @Test(arguments: [Algorithm.es256, .edDSA])
    func ecdsaAndEdDSATokensPass(_ algorithm: Algorithm) throws {
        let outcome = Self.run(try Self.config(), headers: Self.bearer(Self.token(Self.validClaims, algorithm: algorithm)))
        #expect(outcome.proceeded)
    }

    @Test func forwardKeepsTheTokenAndPayloadAndClaimsBecomeHeaders() throws {
        let provider = Self.provider {
            $0.forward = true
            $0.forwardPayloadHeader = "x-jwt-payload"
            var sub = Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtClaimToHeader()
            sub.headerName = "x-jwt-sub"
            sub.claimName = "sub"
            var aud = Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtClaimToHeader()
            aud.headerName = "x-jwt-aud"
            aud.claimName = "aud"
            $0.claimToHeaders = [sub, aud]
        }
        let token = Self.token(Self.validClaims)
        let outcome = Self.run(try Self.config(provider), headers: Self.bearer(token))
        #expect(outcome.proceeded)
        #expect(outcome.request.headerFields[.authorization] == "Bearer \(token)")
        #expect(outcome.request.headerFields[HTTPField.Name("x-jwt-payload")!] == String(token.split(separator: ".")[1]))
        #expect(outcome.request.headerFields[HTTPField.Name("x-jwt-sub")!] == "alice")
        #expect(outcome.request.headerFields[HTTPField.Name("x-jwt-aud")!] == "bookinfo,other")
    }

    @Test func theAccessTokenQueryParameterIsADefaultLocation() throws {
        let outcome = Self.run(try Self.config(), path: "/books?access_token=\(Self.token(Self.validClaims))")
        #expect(outcome.proceeded)
    }

    @Test func fromHeadersReplacesTheDefaults() throws {
        let provider = Self.provider {
            var header = Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtHeader()
            header.name = "x-token"
            header.valuePrefix = "Istio "
            $0.fromHeaders = [header]
        }
        let token = Self.token(Self.validClaims)
        #expect(Self.run(try Self.config(provider), headers: ["x-token": "Istio \(token)"]).proceeded)
        let bearer = Self.run(try Self.config(provider), headers: Self.bearer(token))
        #expect(bearer.reply?.body == "Jwt is missing")
    }

    @Test func everyTokenFoundMustVerify() throws {
        let good = Self.token(Self.validClaims)
        let outcome = Self.run(try Self.config(), path: "/books?access_token=bad!.token.here", headers: Self.bearer(good))
        #expect(outcome.reply?.body == "Jwt header is an invalid Base64url encoded")
        #expect(Self.run(try Self.config(), path: "/books?access_token=\(good)", headers: Self.bearer(good)).proceeded)
    }

    @Test func aTokenNotYetValidPassesWithinTheClockSkew() throws {
        let soon = #""iss":"https://issuer.example","sub":"a","nbf":1767225630"#
        #expect(Self.run(try Self.config(), headers: Self.bearer(Self.token(soon))).proceeded, "30 s early, within the default 60 s")
    }

    // MARK: Refused

    @Test func aMissingTokenIs401WithABearerChallenge() throws {
        let outcome = Self.run(try Self.config(), path: "/books?x=1")
        let reply = try #require(outcome.reply)
        #expect(reply.status.code == 401)
        #expect(reply.body == "Jwt is missing")
        #expect(reply.headers[.wwwAuthenticate] == #"Bearer realm="http://bookinfo.local/books?x=1""#)
        #expect(outcome.stream.details == "jwt_authn_access_denied{Jwt_is_missing}")
    }

    @Test(arguments: [
        (#""iss":"https://issuer.example","sub":"a","exp":1767225000"#, "Jwt is expired"),
        (#""iss":"https://issuer.example","sub":"a","nbf":1767229200"#, "Jwt not yet valid"),
        (#""iss":"https://other.example","sub":"a""#, "Jwt issuer is not configured"),
        (#""iss":"https://issuer.example","sub":"a","exp":"soon""#, "Jwt payload [exp] field is not an integer"),
        (#""iss":"https://issuer.example","sub":"a","aud":5"#, "Jwt payload [aud] field is not a string or string list"),
    ])
    func aTokenThatFailsIs401(_ claims: String, _ message: String) throws {
        let outcome = Self.run(try Self.config(), headers: Self.bearer(Self.token(claims)))
        let reply = try #require(outcome.reply)
        #expect(reply.status.code == 401)
        #expect(reply.body == message)
        #expect(reply.headers[.wwwAuthenticate] == #"Bearer realm="http://bookinfo.local/books", error="invalid_token""#)
        #expect(outcome.stream.details == "jwt_authn_access_denied{\(message.replacingOccurrences(of: " ", with: "_"))}")
        #expect(outcome.stream.metadata.isEmpty)
    }

    @Test func aTokenForOtherAudiencesIs403() throws {
        let provider = Self.provider { $0.audiences = ["https://reviews/"] }
        let reply = try #require(Self.run(try Self.config(provider), headers: Self.bearer(Self.token(Self.validClaims))).reply)
        #expect(reply.status.code == 403)
        #expect(reply.body == "Audiences in Jwt are not allowed")
        // Envoy compares audiences without scheme and trailing slash.
        let matching = Self.provider { $0.audiences = ["http://bookinfo/"] }
        #expect(Self.run(try Self.config(matching), headers: Self.bearer(Self.token(Self.validClaims))).proceeded)
    }

    @Test func aBadSignatureFails() throws {
        let outcome = Self.run(try Self.config(), headers: Self.bearer(Self.token(Self.validClaims, algorithm: .es256WithOtherKey)))
        #expect(outcome.reply?.body == "Jwt verification fails")
        // The payload changed after signing.
        let parts = Self.token(Self.validClaims).split(separator: ".")
        let forged = parts[0] + "." + Base64URL.encode(Array(#"{"iss":"https://issuer.example","sub":"root"}"#.utf8)) + "." + parts[2]
        #expect(Self.run(try Self.config(), headers: Self.bearer(String(forged))).reply?.body == "Jwt verification fails")
    }

    @Test(arguments: [
        ("not-a-jwt", "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
        ("a.b.c.d", "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"),
        ("!!.e30.c2ln", "Jwt header is an invalid Base64url encoded"),
        ("bm90IGpzb24.e30.c2ln", "Jwt header is an invalid JSON"),
        ("e30.e30.c2ln", "Jwt header [alg] field is required and must be a string"),
        ("eyJhbGciOiJub25lIn0.e30.c2ln", "Jwt header [alg] is not supported"),
    ])
    func aMalformedTokenFails(_ token: String, _ message: String) throws {
        let reply = try #require(Self.run(try Self.config(), headers: Self.bearer(token)).reply)
        #expect(reply.status.code == 401)
        #expect(reply.body == message)
    }

    @Test func aKeyIDNoKeyHasFails() throws {
        let header = Base64URL.encode(Array(#"{"alg":"RS256","kid":"gone"}"#.utf8))
        let token = header + "." + Base64URL.encode(Array("{\(Self.validClaims)}".utf8)) + ".c2ln"
        #expect(Self.run(try Self.config(), headers: Self.bearer(token)).reply?.body == "Jwks doesn't have key to match kid or alg from Jwt")
    }

    // MARK: Requirements and rules

    @Test func istiosRequirementLetsAMissingTokenThroughButNotABadOne() throws {
        let config = try Self.config(requirement: Self.istioRequirement())
        let missing = Self.run(config)
        #expect(missing.proceeded)
        #expect(missing.stream.metadata.isEmpty)
        #expect(Self.run(config, headers: Self.bearer(Self.token(Self.validClaims))).proceeded)
        let expired = Self.run(config, headers: Self.bearer(Self.token(#""iss":"https://issuer.example","exp":1"#)))
        #expect(expired.reply?.body == "Jwt is expired")
    }

    @Test func allowMissingOrFailedPassesEverythingAndKeepsGoodClaims() throws {
        var requirement = RequirementProto()
        requirement.allowMissingOrFailed = Google_Protobuf_Empty()
        let config = try Self.config(requirement: requirement)
        #expect(Self.run(config, headers: Self.bearer("garbage")).proceeded)
        let good = Self.run(config, headers: Self.bearer(Self.token(Self.validClaims)))
        #expect(good.proceeded)
        #expect(good.stream.metadata.value(filter: "istio_authn", path: ["request.auth.principal"])?.stringValue == "https://issuer.example/alice")
    }

    @Test func requiresAllNeedsEveryProvider() throws {
        var proto = Proto()
        proto.providers["a"] = Self.provider()
        proto.providers["b"] = Self.provider {
            var header = Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtHeader()
            header.name = "x-second"
            $0.fromHeaders = [header]
        }
        var rule = Envoy_Extensions_Filters_Http_JwtAuthn_V3_RequirementRule()
        rule.match.prefix = "/"
        rule.requirementName = "both"
        var both = RequirementProto()
        both.requiresAll.requirements = [Self.requires("a"), Self.requires("b")]
        proto.requirementMap["both"] = both
        proto.rules = [rule]
        var notActedOn: [FieldNotActedOn] = []
        let config = try JWTAuthenticationConfig(proto, path: "jwt", notActedOn: &notActedOn, now: { Self.now })
        let token = Self.token(Self.validClaims)
        #expect(Self.run(config, headers: Self.bearer(token)).reply?.body == "Jwt is missing")
        #expect(Self.run(config, headers: ["authorization": "Bearer \(token)", "x-second": token]).proceeded)
    }

    @Test func onlyRequestsARuleMatchesAreVerified() throws {
        let config = try Self.config(prefix: "/secure")
        #expect(Self.run(config, path: "/public").proceeded)
        #expect(Self.run(config, path: "/secure/x").reply?.body == "Jwt is missing")
    }

    @Test func corsPreflightBypassesVerificationWhenAsked() throws {
        let config = try Self.config { $0.bypassCorsPreflight = true }
        let preflight = ["origin": "https://app.example", "access-control-request-method": "POST"]
        #expect(Self.run(config, headers: preflight, method: .options).proceeded)
        #expect(Self.run(try Self.config(), headers: preflight, method: .options).reply?.body == "Jwt is missing")
    }

    @Test func stripFailureResponseSendsNoBody() throws {
        let reply = try #require(Self.run(try Self.config { $0.stripFailureResponse = true }).reply)
        #expect(reply.status.code == 401)
        #expect(reply.body.isEmpty)
    }

    // MARK: Configuration

    @Test func fieldsThatWouldLetTokensThroughAreRefusedWithTheirPaths() throws {
        var remote = Self.provider()
        remote.remoteJwks.httpUri.uri = "https://issuer.example/jwks"
        let remoteError = #expect(throws: ConfigError.self) { try Self.config(remote) }
        #expect(remoteError?.path == "jwt.providers[\"origins-0\"].remote_jwks.http_uri.cluster")

        let subjects = Self.provider { $0.subjects.prefix = "spiffe://" }
        #expect((#expect(throws: ConfigError.self) { try Self.config(subjects) })?.path == "jwt.providers[\"origins-0\"].subjects")

        let unknown = #expect(throws: ConfigError.self) { try Self.config(requirement: Self.istioRequirement("nobody")) }
        #expect(unknown?.path == "jwt.rules[0].requires.requires_any.requirements[0].provider_name")

        let stateRules = #expect(throws: ConfigError.self) { try Self.config { $0.filterStateRules.name = "state" } }
        #expect(stateRules?.path == "jwt.filter_state_rules")
    }

    @Test func aJWKSWithoutUsableKeysIsListedAndFailsEveryToken() throws {
        let provider = Self.provider { $0.localJwks.inlineString = #"{"keys": []}"# }
        var proto = Proto()
        proto.providers["origins-0"] = provider
        var rule = Envoy_Extensions_Filters_Http_JwtAuthn_V3_RequirementRule()
        rule.match.prefix = "/"
        rule.requires = Self.requires("origins-0")
        proto.rules = [rule]
        var notActedOn: [FieldNotActedOn] = []
        let config = try JWTAuthenticationConfig(proto, path: "jwt", notActedOn: &notActedOn, now: { Self.now })
        #expect(notActedOn.map(\.path) == ["jwt.providers[\"origins-0\"].local_jwks"])
        #expect(Self.run(config, headers: Self.bearer(Self.token(Self.validClaims))).reply?.body == "Jwks doesn't have any valid public key")
    }

    @Test func aRoutesOwnRequirementIsRefusedAndDisabledListed() throws {
        func table(_ perRoute: Envoy_Extensions_Filters_Http_JwtAuthn_V3_PerRouteConfig) throws -> RouteTable {
            var route = Envoy_Config_Route_V3_Route()
            route.match.prefix = "/"
            route.route.cluster = "backend"
            route.typedPerFilterConfig["envoy.filters.http.jwt_authn"] = try Google_Protobuf_Any(message: perRoute)
            var host = Envoy_Config_Route_V3_VirtualHost()
            host.name = "app"
            host.domains = ["*"]
            host.routes = [route]
            var proto = Envoy_Config_Route_V3_RouteConfiguration()
            proto.name = "r"
            proto.virtualHosts = [host]
            return try RouteTable(proto, path: "r")
        }
        var named = Envoy_Extensions_Filters_Http_JwtAuthn_V3_PerRouteConfig()
        named.requirementName = "strict"
        let error = #expect(throws: ConfigError.self) { try table(named) }
        #expect(error?.path.hasSuffix(#"typed_per_filter_config["envoy.filters.http.jwt_authn"].requirement_name"#) == true)
        var disabled = Envoy_Extensions_Filters_Http_JwtAuthn_V3_PerRouteConfig()
        disabled.disabled = true
        #expect(try table(disabled).fieldsNotActedOn.map(\.path).contains { $0.hasSuffix(#"["envoy.filters.http.jwt_authn"].disabled"#) })
    }

    @Test func base64URLRoundTrips() {
        for length in 0..<10 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 * 37 + 250) }
            #expect(Base64URL.decode(Base64URL.encode(bytes)) == bytes)
        }
        #expect(Base64URL.decode("YQ==") == Array("a".utf8))
        #expect(Base64URL.decode("Y") == nil)
        #expect(Base64URL.decode("a b") == nil)
    }

    // MARK: In the connection manager

    /// The connection manager with jwt_authn (Istio's requirement, in JSON as istiod sends it) before the router.
    static func connectionManager() throws -> HTTPConnectionManagerConfig {
        var jwksJSON = ""
        for scalar in Keys.jwks.unicodeScalars {
            switch scalar {
            case "\"": jwksJSON += "\\\""
            case "\n": jwksJSON += "\\n"
            default: jwksJSON.unicodeScalars.append(scalar)
            }
        }
        let json = """
            {"stat_prefix": "test", "codec_type": "HTTP1", "server_name": "istio-envoy",
             "route_config": {"name": "test", "virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]},
             "http_filters": [
               {"name": "envoy.filters.http.jwt_authn", "typed_config": {
                 "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                 "providers": {"origins-0": {"issuer": "\(issuer)", "local_jwks": {"inline_string": "\(jwksJSON)"},
                   "payload_in_metadata": "\(issuer)"}},
                 "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                   {"provider_name": "origins-0"}, {"allow_missing": {}}]}}}],
                 "bypass_cors_preflight": true}},
               {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
            """
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_Router_V3_Router.self)
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtAuthentication.self)
        return try HTTPConnectionManagerConfig(try HTTPConnectionManagerConfig.Proto(jsonString: json), path: "hcm")
    }

    @Test func theConnectionManagerAnswersABadTokenAndForwardsAGoodOneWithoutIt() throws {
        let config = try Self.connectionManager()
        let fixture = try HTTPStreamHandlerTests.Fixture(config: config)
        try fixture.send("GET /books HTTP/1.1\r\nHost: bookinfo.local\r\nAuthorization: Bearer a.b\r\n\r\n")
        let refused = try fixture.downstreamText()
        #expect(refused.hasPrefix("HTTP/1.1 401 Unauthorized\r\n"))
        #expect(refused.lowercased().contains(#"www-authenticate: bearer realm="http://bookinfo.local/books", error="invalid_token""#))
        #expect(refused.hasSuffix("\r\n\r\nJwt is not in the form of Header.Payload.Signature with two dots and 3 sections"))
        #expect(fixture.backend.connections.isEmpty)

        // A real token's exp is checked against the system clock here.
        let exp = JWTAuthenticationConfig.systemTime() + 3600
        let token = Self.token(#""iss":"https://issuer.example","sub":"alice","exp":\#(exp)"#)
        try fixture.send("GET /books HTTP/1.1\r\nHost: bookinfo.local\r\nAuthorization: Bearer \(token)\r\n\r\n")
        let upstream = try fixture.upstreamText()
        #expect(upstream.hasPrefix("GET /books HTTP/1.1\r\n"))
        #expect(!upstream.lowercased().contains("authorization:"))
    }

    /// jwt_authn with the provider's keys fetched from `http://jwks.local/keys` through `backend`.
    static func remoteConnectionManager(cacheDuration: String = "600s") throws -> HTTPConnectionManagerConfig {
        let json = """
            {"stat_prefix": "test", "codec_type": "HTTP1", "server_name": "istio-envoy",
             "route_config": {"name": "test", "virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]},
             "http_filters": [
               {"name": "envoy.filters.http.jwt_authn", "typed_config": {
                 "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                 "providers": {"origins-0": {"issuer": "\(issuer)", "remote_jwks": {
                   "http_uri": {"uri": "http://jwks.local/keys", "cluster": "backend", "timeout": "1s"}, "cache_duration": "\(cacheDuration)"}}},
                 "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "origins-0"}}]}},
               {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
            """
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_Router_V3_Router.self)
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtAuthentication.self)
        return try HTTPConnectionManagerConfig(try HTTPConnectionManagerConfig.Proto(jsonString: json), path: "hcm")
    }

    static func allUpstreamText(_ fixture: HTTPStreamHandlerTests.Fixture) throws -> String {
        try fixture.backend.connections.indices.map { try fixture.upstreamText($0) }.joined()
    }

    @Test func aRemoteJWKSIsFetchedThroughItsClusterOnceThenCached() throws {
        let fixture = try HTTPStreamHandlerTests.Fixture(config: try Self.remoteConnectionManager())
        let exp = JWTAuthenticationConfig.systemTime() + 3600
        let token = Self.token(#""iss":"https://issuer.example","sub":"alice","exp":\#(exp)"#)
        try fixture.send("GET /books HTTP/1.1\r\nHost: bookinfo.local\r\nAuthorization: Bearer \(token)\r\n\r\n")
        let fetch = try Self.allUpstreamText(fixture)
        #expect(fetch.hasPrefix("GET /keys HTTP/1.1\r\n"), "the request waits for the JWKS: \(fetch)")
        #expect(fetch.lowercased().contains("host: jwks.local"))
        let jwks = Keys.jwks
        try fixture.answer("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: \(jwks.utf8.count)\r\n\r\n\(jwks)")
        let forwarded = try Self.allUpstreamText(fixture)
        #expect(forwarded.contains("GET /books HTTP/1.1\r\n"), "verified with the fetched keys: \(forwarded)")
        #expect(!forwarded.lowercased().contains("authorization:"))
        try fixture.answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 200 OK"))
        // The set is cached: the next request goes straight on.
        try fixture.send("GET /reviews HTTP/1.1\r\nHost: bookinfo.local\r\nAuthorization: Bearer \(token)\r\n\r\n")
        let next = try Self.allUpstreamText(fixture)
        #expect(next.hasPrefix("GET /reviews HTTP/1.1\r\n"), "\(next)")
        #expect(!next.contains("/keys"))
    }

    @Test func tokensFailWhileNoRemoteJWKSWasFetched() throws {
        let fixture = try HTTPStreamHandlerTests.Fixture(config: try Self.remoteConnectionManager())
        let exp = JWTAuthenticationConfig.systemTime() + 3600
        let token = Self.token(#""iss":"https://issuer.example","sub":"alice","exp":\#(exp)"#)
        try fixture.send("GET /books HTTP/1.1\r\nHost: bookinfo.local\r\nAuthorization: Bearer \(token)\r\n\r\n")
        #expect(try Self.allUpstreamText(fixture).hasPrefix("GET /keys HTTP/1.1\r\n"))
        try fixture.answer("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
        let refused = try fixture.downstreamText()
        #expect(refused.hasPrefix("HTTP/1.1 401 Unauthorized\r\n"), "\(refused)")
        #expect(refused.hasSuffix("Jwks remote fetch is failed"))
    }

    @Test func aDisabledJWTFilterIsRefused() throws {
        var proto = try HTTPConnectionManagerConfig.Proto(jsonString: """
            {"stat_prefix": "t", "route_config": {"name": "r"},
             "http_filters": [{"name": "envoy.filters.http.jwt_authn", "disabled": true, "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"}},
               {"name": "envoy.filters.http.router"}]}
            """)
        proto.statPrefix = "t"
        let error = #expect(throws: ConfigError.self) { try HTTPConnectionManagerConfig(proto, path: "hcm") }
        #expect(error?.path == "hcm.http_filters[0].disabled")
    }
}
