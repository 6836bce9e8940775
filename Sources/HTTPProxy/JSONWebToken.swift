import SwiftProtobuf

/// A JWT (RFC 7519) as read from a request, before its signature is checked: the header's algorithm and
/// key id, the payload's registered claims, and what the signature covers. Parsed as Envoy's
/// jwt_verify_lib does, with its failures (``JWTFailure``) in the same order: format, header, payload,
/// signature encoding. JSON through SwiftProtobuf's `Struct`, whose numbers are doubles: `exp`, `nbf`
/// and `iat` must be whole numbers.
struct JSONWebToken {
    /// `alg`: `RS256`, `ES256`, `EdDSA`…
    let algorithm: String
    /// `kid`, if given: picks the key of the set.
    let keyID: String?
    /// The whole header, for `header_in_metadata`.
    let header: Google_Protobuf_Struct
    /// The whole payload: every claim, for metadata and `claim_to_headers`.
    let payload: Google_Protobuf_Struct
    /// The payload as it came (base64url), for `forward_payload_header`.
    let encodedPayload: Substring
    let issuer: String?
    let subject: String?
    /// `aud`: a string or a list of strings, read as a list.
    let audiences: [String]
    /// `exp` and `nbf`, seconds since the epoch.
    let expiry: Int64?
    let notBefore: Int64?
    /// `header.payload`, the bytes the signature is over.
    let signedBytes: [UInt8]
    let signature: [UInt8]

    /// The algorithms a key can verify (Envoy's: RSA PKCS#1 and PSS, ECDSA, EdDSA, HMAC).
    static let supportedAlgorithms: Set<String> = [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256", "HS384", "HS512", "EdDSA",
    ]

    init(_ token: Substring) throws(JWTFailure) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw .badFormat }
        guard let headerBytes = Base64URL.decode(parts[0]) else { throw .headerBadBase64 }
        guard let header = try? Google_Protobuf_Struct(jsonUTF8Bytes: headerBytes) else { throw .headerBadJSON }
        guard case .stringValue(let algorithm)? = header.fields["alg"]?.kind else { throw .headerBadAlgorithm }
        guard Self.supportedAlgorithms.contains(algorithm) else { throw .algorithmNotSupported }
        switch header.fields["kid"]?.kind {
        case nil, .nullValue?: keyID = nil
        case .stringValue(let id)?: keyID = id
        default: throw .headerBadKeyID
        }
        guard let payloadBytes = Base64URL.decode(parts[1]) else { throw .payloadBadBase64 }
        guard let payload = try? Google_Protobuf_Struct(jsonUTF8Bytes: payloadBytes) else { throw .payloadBadJSON }
        issuer = try Self.string(payload, "iss", else: .issuerNotString)
        subject = try Self.string(payload, "sub", else: .subjectNotString)
        expiry = try Self.seconds(payload, "exp")
        notBefore = try Self.seconds(payload, "nbf")
        _ = try Self.seconds(payload, "iat")
        switch payload.fields["aud"]?.kind {
        case nil: audiences = []
        case .stringValue(let audience)?: audiences = [audience]
        case .listValue(let list)?:
            audiences = try list.values.map { value throws(JWTFailure) in
                guard case .stringValue(let audience) = value.kind else { throw .audienceNotString }
                return audience
            }
        default: throw .audienceNotString
        }
        guard let signature = Base64URL.decode(parts[2]) else { throw .signatureBadBase64 }
        self.algorithm = algorithm
        self.header = header
        self.payload = payload
        self.encodedPayload = parts[1]
        self.signedBytes = Array(token.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count))
        self.signature = signature
    }

    /// Envoy's time checks: not before `nbf`, not after `exp`, each with `skew` seconds of grace.
    func checkTime(now: Int64, skew: Int64) throws(JWTFailure) {
        if let notBefore, now + skew < notBefore { throw .notYetValid }
        if let expiry, now > expiry + skew { throw .expired }
    }

    private static func string(_ payload: Google_Protobuf_Struct, _ claim: String, else failure: JWTFailure) throws(JWTFailure) -> String? {
        switch payload.fields[claim]?.kind {
        case nil: nil
        case .stringValue(let value)?: value
        default: throw failure
        }
    }

    private static func seconds(_ payload: Google_Protobuf_Struct, _ claim: String) throws(JWTFailure) -> Int64? {
        switch payload.fields[claim]?.kind {
        case nil: return nil
        case .numberValue(let number)? where number >= 0 && number < 9.2e18 && number.rounded(.towardZero) == number:
            return Int64(number)
        default: throw .numericClaimNotInteger(claim)
        }
    }
}
