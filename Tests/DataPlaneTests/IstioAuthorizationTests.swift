import Authorization
import Configuration
@testable import DataPlane
import Foundation
@testable import HTTPProxy
import HTTPTypes
import SwiftProtobuf
import Testing
import XDS

/// The RBAC filters istiod generated for a sidecar with AuthorizationPolicies (istioctl's authz test
/// data in `../shared/istio-config/`, read by path): every one is decoded as Envoy decodes it, and the
/// ALLOW policy decides as Istio means it.
@Suite struct IstioAuthorizationTests {
    static let file = "sidecar-listeners-rbac-extauthz.istioctl-authz-testdata.yaml"

    /// Every filter of the dump's listeners with a typed_config of `type`, as JSON.
    static func filters(ofType type: String) throws -> [[String: Any]] {
        func walk(_ value: Any) -> [[String: Any]] {
            if let object = value as? [String: Any] {
                if object["@type"] as? String == "type.googleapis.com/\(type)" { return [object] }
                return object.values.flatMap(walk)
            }
            return (value as? [Any])?.flatMap(walk) ?? []
        }
        return try IstioDumps.listeners(in: file).flatMap { walk($0.json) }
    }

    @Test func everyRBACFilterIstiodGeneratedIsDecoded() throws {
        let http = try Self.filters(ofType: "envoy.extensions.filters.http.rbac.v3.RBAC")
        let network = try Self.filters(ofType: "envoy.extensions.filters.network.rbac.v3.RBAC")
        #expect(http.count == 10 && network.count == 3)
        var notActedOn: [FieldNotActedOn] = []
        for (index, json) in http.enumerated() {
            let any = try Google_Protobuf_Any(message: try IstioDumps.message(json, as: Envoy_Extensions_Filters_Http_Rbac_V3_RBAC.self))
            _ = try RBACFilterConfig(unpacking: any, path: "http[\(index)]", field: "http[\(index)]", notActedOn: &notActedOn)
        }
        for (index, json) in network.enumerated() {
            var authorization = NetworkAuthorization()
            let any = try Google_Protobuf_Any(message: try IstioDumps.message(json, as: Envoy_Extensions_Filters_Network_Rbac_V3_RBAC.self))
            try authorization.add(any, path: "tcp[\(index)]", field: "tcp[\(index)]", notActedOn: &notActedOn)
            // `rules: {}`: an ALLOW without policies, istiod's way to refuse a TCP port an HTTP-only rule was for.
            #expect(authorization.engines.first?.check(AuthorizationRequest(peerPrincipal: "spiffe://cluster.local/ns/default/sa/sleep")).allowed == false)
            #expect(authorization.engines.first?.statNames.denied == "tcp.rbac.denied")
        }
        #expect(notActedOn.isEmpty)
    }

    /// `ns[default]-policy[httpbin]`: GET /info* or POST /data, by sleep (or anyone of namespace test)
    /// holding a token issued by accounts.google.com.
    @Test func istiodsAllowPolicyDecidesAsIstioMeansIt() throws {
        let json = try #require(try Self.filters(ofType: "envoy.extensions.filters.http.rbac.v3.RBAC").first { ($0["rules"] as? [String: Any]) != nil })
        var notActedOn: [FieldNotActedOn] = []
        let any = try Google_Protobuf_Any(message: try IstioDumps.message(json, as: Envoy_Extensions_Filters_Http_Rbac_V3_RBAC.self))
        let rules = try #require(try RBACFilterConfig(unpacking: any, path: "rbac", field: "rbac", notActedOn: &notActedOn).engine.rules)
        func asked(_ method: HTTPRequest.Method, _ path: String, peer: String, issuer: String?) -> AuthorizationRequest {
            var metadata = DynamicMetadata()
            if let issuer {
                var claims = Google_Protobuf_Struct()
                claims.fields["iss"] = Google_Protobuf_Value(listValue: .init(values: [.init(stringValue: issuer)]))
                metadata["istio_authn"] = Google_Protobuf_Struct(fields: ["request.auth.claims": Google_Protobuf_Value(structValue: claims)])
            }
            return AuthorizationRequest(peerPrincipal: peer, request: HTTPRequest(method: method, scheme: "http", authority: "httpbin", path: path),
                                        metadata: metadata)
        }
        let sleep = "spiffe://cluster.local/ns/default/sa/sleep", google = "https://accounts.google.com"
        #expect(rules.evaluate(asked(.get, "/info/status", peer: sleep, issuer: google))
            == .init(allowed: true, matchedPolicy: "ns[default]-policy[httpbin]-rule[0]"))
        #expect(rules.evaluate(asked(.post, "/data", peer: "spiffe://cluster.local/ns/test/sa/any", issuer: google)).allowed)
        #expect(!rules.evaluate(asked(.post, "/info", peer: sleep, issuer: google)).allowed)
        #expect(!rules.evaluate(asked(.get, "/info", peer: sleep, issuer: nil)).allowed)
        #expect(!rules.evaluate(asked(.get, "/info", peer: "spiffe://cluster.local/ns/default/sa/other", issuer: google)).allowed)
    }
}
