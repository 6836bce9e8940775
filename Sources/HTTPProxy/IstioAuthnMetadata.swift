import SwiftProtobuf

/// Istio's view of a verified token, as dynamic metadata under `istio_authn`, which istiod's
/// AuthorizationPolicy rules read: `request.auth.principal` (`iss/sub`), `request.auth.audiences`
/// (the first `aud`), `request.auth.presenter` (`azp`) and `request.auth.claims`, every claim as
/// Istio's authn filter wrote it: a string as the list of its space-separated words, a list of strings
/// as it is, an object recursively, other values left out. That is why istiod matches claims with
/// `list_match`.
///
/// Istio's proxy filled this from Envoy's JWT metadata with its own `istio_authn` HTTP filter (up to
/// Istio 1.17 or so); later istiod sends no such filter (none is in the 1.18 and 1.20 dumps), and
/// newer istiod reads claims from `envoy.filters.http.jwt_authn`'s `payload_in_metadata` instead,
/// which the JWT filter writes as Envoy does. Capstan's JWT filter writes both, so rules of either
/// generation find the claims.
enum IstioAuthnMetadata {
    static let filterName = "istio_authn"

    /// The metadata for `token`.
    static func of(_ token: JSONWebToken) -> Google_Protobuf_Struct {
        var metadata = Google_Protobuf_Struct()
        let claims = istioClaims(token.payload)
        if let issuer = token.issuer, let subject = token.subject {
            metadata.fields["request.auth.principal"] = Google_Protobuf_Value(stringValue: "\(issuer)/\(subject)")
        }
        if let audience = token.audiences.first {
            metadata.fields["request.auth.audiences"] = Google_Protobuf_Value(stringValue: audience)
        }
        if case .listValue(let presenter)? = claims.fields["azp"]?.kind, case .stringValue(let first)? = presenter.values.first?.kind {
            metadata.fields["request.auth.presenter"] = Google_Protobuf_Value(stringValue: first)
        }
        metadata.fields["request.auth.claims"] = Google_Protobuf_Value(structValue: claims)
        return metadata
    }

    /// Claims in Istio's shape (see above).
    static func istioClaims(_ payload: Google_Protobuf_Struct) -> Google_Protobuf_Struct {
        var claims = Google_Protobuf_Struct()
        for (name, value) in payload.fields {
            switch value.kind {
            case .stringValue(let text)?:
                claims.fields[name] = list(text.split(separator: " ").map(String.init))
            case .listValue(let values)?:
                var strings: [String] = []
                for element in values.values {
                    guard case .stringValue(let text)? = element.kind else { strings = []; break }
                    strings.append(text)
                }
                if strings.count == values.values.count { claims.fields[name] = list(strings) }
            case .structValue(let nested)?:
                claims.fields[name] = Google_Protobuf_Value(structValue: istioClaims(nested))
            default:
                continue
            }
        }
        return claims
    }

    private static func list(_ strings: [String]) -> Google_Protobuf_Value {
        Google_Protobuf_Value(listValue: Google_Protobuf_ListValue(values: strings.map { Google_Protobuf_Value(stringValue: $0) }))
    }
}
