/// Why a token was not accepted, with Envoy's words for it (jwt_verify_lib's status strings), which
/// are the body of the 401 (403 for audiences) and, spaces made `_`, the response code details.
enum JWTFailure: Error, Equatable {
    case missing
    case notYetValid
    case expired
    case badFormat
    case headerBadBase64
    case headerBadJSON
    case headerBadAlgorithm
    case algorithmNotSupported
    case headerBadKeyID
    case payloadBadBase64
    case payloadBadJSON
    case issuerNotString
    case subjectNotString
    case numericClaimNotInteger(String)
    case audienceNotString
    case signatureBadBase64
    case unknownIssuer
    case audienceNotAllowed
    case verificationFailed
    case noMatchingKey
    case noKeys
    case jwksFetchFailed

    var message: String {
        switch self {
        case .missing: "Jwt is missing"
        case .notYetValid: "Jwt not yet valid"
        case .expired: "Jwt is expired"
        case .badFormat: "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
        case .headerBadBase64: "Jwt header is an invalid Base64url encoded"
        case .headerBadJSON: "Jwt header is an invalid JSON"
        case .headerBadAlgorithm: "Jwt header [alg] field is required and must be a string"
        case .algorithmNotSupported: "Jwt header [alg] is not supported"
        case .headerBadKeyID: "Jwt header [kid] field is not a string"
        case .payloadBadBase64: "Jwt payload is an invalid Base64url encoded"
        case .payloadBadJSON: "Jwt payload is an invalid JSON"
        case .issuerNotString: "Jwt payload [iss] field is not a string"
        case .subjectNotString: "Jwt payload [sub] field is not a string"
        case .numericClaimNotInteger(let claim): "Jwt payload [\(claim)] field is not an integer"
        case .audienceNotString: "Jwt payload [aud] field is not a string or string list"
        case .signatureBadBase64: "Jwt signature is an invalid Base64url encoded"
        case .unknownIssuer: "Jwt issuer is not configured"
        case .audienceNotAllowed: "Audiences in Jwt are not allowed"
        case .verificationFailed: "Jwt verification fails"
        case .noMatchingKey: "Jwks doesn't have key to match kid or alg from Jwt"
        case .noKeys: "Jwks doesn't have any valid public key"
        case .jwksFetchFailed: "Jwks remote fetch is failed"
        }
    }

    /// Envoy answers a token for other audiences with 403, every other failure with 401.
    var status: Int { self == .audienceNotAllowed ? 403 : 401 }

    /// `%RESPONSE_CODE_DETAILS%`: `jwt_authn_access_denied{Jwt_is_missing}`.
    var responseCodeDetails: String {
        "jwt_authn_access_denied{\(message.replacingSpaces())}"
    }
}

private extension String {
    func replacingSpaces() -> String {
        String(unicodeScalars.map { $0 == " " ? "_" : Character($0) })
    }
}
