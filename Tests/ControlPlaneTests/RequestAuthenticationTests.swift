@testable import ControlPlane
import Configuration
import Foundation
import SwiftProtobuf
import Testing
import XDS

/// RequestAuthentications in the generated xDS: the `jwt_authn` filter istiod would put before the
/// RBAC filters of the workloads they reach, and the refusals of what could accept a token istiod refuses.
@Suite struct RequestAuthenticationTests {
    typealias JWTConfig = Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtAuthentication
    typealias Requirement = Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtRequirement
    static let payments = AuthorizationPolicyTests.payments
    static let billing = AuthorizationPolicyTests.billing
    static let jwks = #"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"k1"}]}"#

    /// A RequestAuthentication; `spec` is the YAML under `spec:`, indented two spaces.
    static func authentication(_ name: String, namespace: String = "shop", apiVersion: String = "security.istio.io/v1",
                               _ spec: String) -> String {
        """
        apiVersion: \(apiVersion)
        kind: RequestAuthentication
        metadata:
          name: \(name)
          namespace: \(namespace)
        spec:
        \(spec)
        """
    }

    static func rule(issuer: String = "https://issuer.example", extra: String = "") -> String {
        "  - issuer: \"\(issuer)\"\n    jwks: '\(jwks)'\n" + extra
    }

    static let paymentsOnly = authentication("payments", "  selector: {matchLabels: {app: payments}}\n  jwtRules:\n" + rule())

    func reading(_ documents: [String]) -> MeshConfigReading {
        MeshConfigReader.read([("mesh.yaml", ([AuthorizationPolicyTests.mesh] + documents).joined(separator: "\n---\n"))])
    }

    func httpFilters(_ documents: [String], ip: String = payments, namespace: String = "shop",
                     port: Int = 8080) throws -> [AuthorizationPolicyTests.HTTPFilter] {
        let tests = AuthorizationPolicyTests()
        let listener = try tests.listener(documents, ip: ip, namespace: namespace)
        return try tests.httpFilters(listener, port: port)
    }

    func jwtConfig(_ filters: [AuthorizationPolicyTests.HTTPFilter]) throws -> JWTConfig {
        let filter = try #require(filters.first { $0.name == "envoy.filters.http.jwt_authn" })
        return try JWTConfig(unpackingAny: filter.typedConfig)
    }

    static func provider(_ name: String) -> Requirement { var r = Requirement(); r.providerName = name; return r }
    static var allowMissing: Requirement { var r = Requirement(); r.allowMissing = Google_Protobuf_Empty(); return r }
    static func any(_ list: [Requirement]) -> Requirement { var r = Requirement(); r.requiresAny.requirements = list; return r }
    static func all(_ list: [Requirement]) -> Requirement { var r = Requirement(); r.requiresAll.requirements = list; return r }

    // MARK: The filter

    @Test func oneRuleIsIstiodsProviderAndAllowMissingRequirement() throws {
        let spec = "  selector: {matchLabels: {app: payments}}\n  jwtRules:\n" + Self.rule(extra: """
                audiences: [shop, "api.example"]
                forwardOriginalToken: true
                outputPayloadToHeader: x-jwt-payload
                outputClaimToHeaders: [{header: x-group, claim: groups}]

            """)
        let config = try jwtConfig(try httpFilters([Self.authentication("payments", spec)]))
        #expect(config.providers.keys.sorted() == ["origins-0"])
        let provider = try #require(config.providers["origins-0"])
        #expect(provider.issuer == "https://issuer.example")
        #expect(provider.audiences == ["shop", "api.example"])
        #expect(provider.forward)
        #expect(provider.forwardPayloadHeader == "x-jwt-payload")
        #expect(provider.payloadInMetadata == "https://issuer.example")
        #expect(provider.claimToHeaders.map { [$0.headerName, $0.claimName] } == [["x-group", "groups"]])
        #expect(provider.localJwks.inlineString == Self.jwks)
        // No location given: Envoy's default (Authorization: Bearer, access_token), as istiod leaves it.
        #expect(provider.fromHeaders.isEmpty && provider.fromParams.isEmpty)
        #expect(config.rules.count == 1)
        #expect(config.rules[0].match.prefix == "/")
        #expect(config.rules[0].requires == Self.any([Self.provider("origins-0"), Self.allowMissing]))
        #expect(config.bypassCorsPreflight)
    }

    @Test func severalRulesAcceptAnyProviderOrAllEachAllowedMissing() throws {
        let spec = "  jwtRules:\n" + Self.rule(issuer: "a", extra: "    fromHeaders: [{name: x-token, prefix: \"Token \"}]\n    fromParams: [tok]\n")
            + Self.rule(issuer: "b")
        let config = try jwtConfig(try httpFilters([Self.authentication("ns", spec)]))
        #expect(config.providers.keys.sorted() == ["origins-0", "origins-1"])
        #expect(config.providers["origins-0"]?.fromHeaders.map { [$0.name, $0.valuePrefix] } == [["x-token", "Token "]])
        #expect(config.providers["origins-0"]?.fromParams == ["tok"])
        let each = [Self.any([Self.provider("origins-0"), Self.allowMissing]), Self.any([Self.provider("origins-1"), Self.allowMissing])]
        #expect(config.rules[0].requires == Self.any([Self.provider("origins-0"), Self.provider("origins-1"), Self.all(each)]))
    }

    @Test func jwtFilterGoesBeforeTheRBACFilters() throws {
        let allow = AuthorizationPolicyTests.policy("payments", "  selector: {matchLabels: {app: payments}}\n  rules: [{from: [{source: {requestPrincipals: [\"*\"]}}]}]")
        let filters = try httpFilters([Self.paymentsOnly, allow])
        #expect(filters.map(\.name) == ["envoy.filters.http.jwt_authn", "envoy.filters.http.rbac", "envoy.filters.http.fault", "envoy.filters.http.cors", "envoy.filters.http.router"])
    }

    @Test func tcpChainsGetNoJWTFilter() throws {
        let listener = try AuthorizationPolicyTests().listener([Self.paymentsOnly])
        let chain = try AuthorizationPolicyTests().chain(listener, port: 9000)
        #expect(chain.filters.map(\.name) == ["envoy.filters.network.tcp_proxy"])
    }

    // MARK: Scope

    @Test func scopeIsAuthorizationPolicys() throws {
        // A selector reaches its workloads only.
        #expect(try jwtConfig(try httpFilters([Self.paymentsOnly])).providers.count == 1)
        #expect(try httpFilters([Self.paymentsOnly], ip: Self.billing).contains { $0.name == "envoy.filters.http.jwt_authn" } == false)
        // Namespace-wide reaches both; another namespace's reaches neither.
        let namespaceWide = Self.authentication("ns", "  jwtRules:\n" + Self.rule(issuer: "ns"))
        #expect(try jwtConfig(try httpFilters([namespaceWide], ip: Self.billing)).providers["origins-0"]?.issuer == "ns")
        let elsewhere = Self.authentication("other", namespace: "other", "  jwtRules:\n" + Self.rule(issuer: "other"))
        #expect(try httpFilters([elsewhere]).contains { $0.name == "envoy.filters.http.jwt_authn" } == false)
        // The root namespace's reaches the mesh, and comes first.
        let mesh = Self.authentication("mesh", namespace: "istio-system", "  jwtRules:\n" + Self.rule(issuer: "mesh"))
        let config = try jwtConfig(try httpFilters([namespaceWide, mesh, Self.paymentsOnly]))
        #expect(config.providers["origins-0"]?.issuer == "mesh")
        #expect(config.providers["origins-1"]?.issuer == "ns")
        #expect(config.providers["origins-2"]?.issuer == "https://issuer.example")
    }

    @Test func v1beta1IsReadToo() throws {
        let text = Self.authentication("b", apiVersion: "security.istio.io/v1beta1", "  jwtRules:\n" + Self.rule())
        #expect(try jwtConfig(try httpFilters([text])).providers.count == 1)
    }

    @Test func proxiesTheConfigurationDoesNotDescribeGetTheirNamespacesRules() throws {
        let namespaceWide = Self.authentication("ns", "  jwtRules:\n" + Self.rule(issuer: "ns"))
        let reading = reading([namespaceWide])
        let config = try #require(reading.config)
        let resources = try ProxyConfigGenerator().resources(for: config)
        #expect(resources.inbound(ip: "203.0.113.9", namespace: "shop").authentication?.providers["origins-0"]?.issuer == "ns")
        #expect(resources.inbound(ip: "203.0.113.9", namespace: "other").authentication == nil)
        // A change to it moves the listeners.
        let before = try ProxyConfigGenerator().resources(for: try #require(self.reading([]).config))
        #expect(resources.differs(from: before, in: .listener))
        #expect(!resources.differs(from: before, in: .cluster))
    }

    // MARK: jwksUri

    static let jwksService = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: keys, namespace: auth}
        spec:
          hosts: [keys.auth.svc.cluster.local]
          ports: [{number: 8000, name: http, protocol: HTTP}]
          resolution: STATIC
          endpoints: [{address: 198.51.100.30}]
        """

    @Test func jwksUriOfAMeshServiceIsFetchedByTheProxyThroughItsCluster() throws {
        let spec = "  jwtRules:\n  - issuer: a\n    jwksUri: http://keys.auth.svc.cluster.local:8000/jwks.json\n"
        let config = try jwtConfig(try httpFilters([Self.jwksService, Self.authentication("ns", spec)]))
        let remote = try #require(config.providers["origins-0"]?.remoteJwks)
        #expect(remote.httpUri.uri == "http://keys.auth.svc.cluster.local:8000/jwks.json")
        #expect(remote.httpUri.cluster == "outbound|8000||keys.auth.svc.cluster.local")
        #expect(remote.httpUri.timeout.seconds == 5)
        #expect(remote.cacheDuration.seconds == 300)
    }

    @Test(arguments: [
        ("https://www.googleapis.com/oauth2/v3/certs", "spec.jwtRules[0].jwksUri: \"https://www.googleapis.com/oauth2/v3/certs\" is not an http:// URL with a host: jwksUri can only name a service of this mesh; give jwks inline"),
        ("http://elsewhere.example/keys", "spec.jwtRules[0].jwksUri: elsewhere.example is not defined by any ServiceEntry: jwksUri can only name a service of this mesh"),
        ("http://keys.auth.svc.cluster.local/keys", "spec.jwtRules[0].jwksUri: keys.auth.svc.cluster.local has no port 80"),
    ])
    func otherJwksUrisAreRefused(uri: String, message: String) {
        let spec = "  jwtRules:\n  - issuer: a\n    jwksUri: \(uri)\n"
        let reading = reading([Self.jwksService, Self.authentication("bad", spec)])
        #expect(reading.config == nil)
        let problem = reading.problems.first?.description ?? ""
        #expect(problem.hasPrefix("mesh.yaml: document 5 (line "), "\(problem)")
        #expect(problem.contains("RequestAuthentication shop/bad: \(message)"), "\(problem)")
    }

    // MARK: Refusals

    @Test(arguments: [
        ("  jwtRules:\n  - issuer: \"\"\n    jwks: '\(RequestAuthenticationTests.jwks)'\n", "spec.jwtRules[0].issuer: must not be empty"),
        ("  jwtRules:\n  - jwks: '\(RequestAuthenticationTests.jwks)'\n", "spec.jwtRules[0].issuer"),
        ("  jwtRules:\n  - issuer: a\n    jwks: 'not json'\n", "spec.jwtRules[0].jwks: is not a JWKS"),
        ("  jwtRules:\n  - issuer: a\n    jwks: '{\"keys\": 3}'\n", "spec.jwtRules[0].jwks: is not a JWKS"),
        ("  jwtRules:\n" + RequestAuthenticationTests.rule(issuer: "a") + RequestAuthenticationTests.rule(issuer: "a"), "spec.jwtRules[1].issuer: issuer \"a\" is already given by another rule"),
        ("  jwtRules:\n  - issuer: a\n", "spec.jwtRules[0]: needs jwks (the keys inline) or jwksUri"),
        ("  jwtRules:\n" + RequestAuthenticationTests.rule(extra: "    jwksUri: http://keys.auth.svc.cluster.local:8000/k\n"), "spec.jwtRules[0]: give jwks or jwksUri, not both"),
        ("  jwtRules:\n" + RequestAuthenticationTests.rule(extra: "    timeout: 3s\n"), "spec.jwtRules[0].timeout: not a field Capstan knows here"),
        ("  jwtRules:\n" + RequestAuthenticationTests.rule(extra: "    fromHeaders: [{name: x, prefx: y}]\n"), "spec.jwtRules[0].fromHeaders[0].prefx: not a field Capstan knows here"),
        ("  jwtRules:\n" + RequestAuthenticationTests.rule(extra: "    fromHeaders: [{prefix: y}]\n"), "spec.jwtRules[0].fromHeaders[0].name"),
        ("  jwtRules:\n" + RequestAuthenticationTests.rule(extra: "    outputClaimToHeaders: [{header: \"\", claim: c}]\n"), "spec.jwtRules[0].outputClaimToHeaders[0].header: must not be empty"),
        ("  jwtRules:\n" + RequestAuthenticationTests.rule(extra: "    audiences: [\"\"]\n"), "spec.jwtRules[0].audiences[0]: must not be empty"),
        ("  targetRefs: [{kind: Gateway, name: gw}]", "spec.targetRefs: not supported"),
        ("  selector: {matchLabels: {app: payments}, matchExpressions: []}", "spec.selector.matchExpressions: not a field Capstan knows here"),
        ("  jwtRule: []", "spec.jwtRule: not a field Capstan knows here"),
    ])
    func refusalsNameTheFileDocumentAndField(spec: String, message: String) {
        let reading = reading([Self.paymentsOnly, Self.authentication("bad", spec)])
        #expect(reading.config == nil, "nothing is half-applied")
        #expect(reading.problems.count == 1)
        let problem = reading.problems.first?.description ?? ""
        #expect(problem.hasPrefix("mesh.yaml: document 5 (line "), "\(problem)")
        #expect(problem.contains("RequestAuthentication shop/bad: \(message)"), "\(problem)")
    }

    @Test func anOtherAPIVersionIsRefused() {
        let reading = reading([Self.authentication("x", apiVersion: "security.istio.io/v1alpha1", "  jwtRules: []")])
        #expect(reading.problems.first?.description.contains("apiVersion: \"security.istio.io/v1alpha1\" does not serve RequestAuthentication") == true)
    }

    @Test func aSelectorThatReachesNoWorkloadIsAWarningAndNoKindWarningRemains() {
        let stray = Self.authentication("stray", "  selector: {matchLabels: {app: nobody}}\n  jwtRules:\n" + Self.rule())
        let reading = reading([stray])
        #expect(reading.config != nil)
        #expect(reading.warnings.contains { $0.contains("RequestAuthentication shop/stray: spec.selector.matchLabels: selects no workload") })
        #expect(!reading.warnings.contains { $0.contains("not acted on") })
    }
}
