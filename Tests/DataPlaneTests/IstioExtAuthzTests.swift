import Authorization
import Configuration
@testable import DataPlane
import Foundation
@testable import HTTPProxy
import HTTPTypes
import SwiftProtobuf
import Testing
import XDS

/// The ext_authz filters istiod generated for an AuthorizationPolicy with `action: CUSTOM` (istioctl's
/// authz test data in `../shared/istio-config/`), with the shadow RBAC filter before each that selects
/// the requests to check.
@Suite struct IstioExtAuthzTests {
    static let extAuthzType = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"

    static func extAuthz(_ json: [String: Any], path: String, notActedOn: inout [FieldNotActedOn]) throws -> ExtAuthzFilterConfig {
        let any = try Google_Protobuf_Any(message: try IstioDumps.message(json, as: Envoy_Extensions_Filters_Http_ExtAuthz_V3_ExtAuthz.self))
        return try ExtAuthzFilterConfig(unpacking: any, path: path, field: path, notActedOn: &notActedOn)
    }

    /// istioctl's provider sets `includeRequestBodyInCheck`: every filter waits for up to 8,000 bytes of body.
    @Test func everyExtAuthzFilterIstiodGeneratedIsDecoded() throws {
        let filters = try IstioAuthorizationTests.filters(ofType: Self.extAuthzType)
        #expect(!filters.isEmpty)
        for (index, json) in filters.enumerated() {
            var notActedOn: [FieldNotActedOn] = []
            let config = try Self.extAuthz(json, path: "ext_authz[\(index)]", notActedOn: &notActedOn)
            #expect(config.requestBody == RequestBodySettings(maxBytes: 8000))
            #expect(notActedOn.isEmpty)
        }
    }

    /// The service, its authority and deadline are read, and the filter runs on the requests the shadow
    /// RBAC filter's CUSTOM policy matched, by the metadata that filter leaves.
    @Test func istiodsFilterChecksWhatItsShadowPolicyMatches() throws {
        let json = try #require(try IstioAuthorizationTests.filters(ofType: Self.extAuthzType).first)
        var notActedOn: [FieldNotActedOn] = []
        let config = try Self.extAuthz(json, path: "ext_authz", notActedOn: &notActedOn)
        #expect(notActedOn.isEmpty)
        #expect(config.clusterName == "outbound|9191||sample-ext-authz-grpc")
        #expect(config.authority == "sample-ext-authz-grpc.local")
        #expect(config.timeout == .seconds(600))
        #expect(config.statusOnError == .forbidden && !config.failureModeAllow)

        let shadowJSON = try #require(try IstioAuthorizationTests.filters(ofType: "envoy.extensions.filters.http.rbac.v3.RBAC")
            .first { $0["shadow_rules_stat_prefix"] as? String == "istio_ext_authz_" })
        let shadow = try RBACFilterConfig(unpacking: try Google_Protobuf_Any(message: try IstioDumps.message(shadowJSON, as: Envoy_Extensions_Filters_Http_Rbac_V3_RBAC.self)),
                                          path: "rbac", field: "rbac", notActedOn: &notActedOn)
        func metadata(_ method: HTTPRequest.Method, _ path: String) throws -> DynamicMetadata {
            var claims = Google_Protobuf_Struct()
            claims.fields["iss"] = Google_Protobuf_Value(listValue: .init(values: [.init(stringValue: "https://accounts.google.com")]))
            var metadata = DynamicMetadata()
            metadata["istio_authn"] = Google_Protobuf_Struct(fields: ["request.auth.claims": Google_Protobuf_Value(structValue: claims)])
            let request = AuthorizationRequest(peerPrincipal: "spiffe://cluster.local/ns/default/sa/sleep",
                                               request: HTTPRequest(method: method, scheme: "http", authority: "httpbin", path: path), metadata: metadata)
            let verdict = try #require(shadow.engine.checkWithShadow(request).shadow)
            RBACFilterConfig.record(verdict, keys: try #require(shadow.engine.shadowMetadataKeys), in: &metadata)
            return metadata
        }
        let enabled = try #require(config.enabledMetadata)
        #expect(enabled.matches(try metadata(.get, "/info")))
        #expect(!enabled.matches(try metadata(.delete, "/info")))
    }
}
