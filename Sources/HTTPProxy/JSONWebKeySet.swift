import Crypto
import SwiftProtobuf
import _CryptoExtras

/// A JWKS (RFC 7517): the public keys a provider's tokens are verified with. Keys Capstan cannot use
/// (an unknown `kty` or curve, a bad number) are left out, as jwt_verify_lib leaves them; a set with no
/// usable key verifies nothing.
struct JSONWebKeySet: Sendable {
    let keys: [JSONWebKey]

    init(keys: [JSONWebKey]) { self.keys = keys }

    /// Parses `json`; throws only when it is not a JSON object with a `keys` array.
    init(json: String) throws(JWKSError) {
        guard let set = try? Google_Protobuf_Struct(jsonUTF8Bytes: Array(json.utf8)) else { throw .notJSON }
        guard case .listValue(let list)? = set.fields["keys"]?.kind else { throw .noKeysArray }
        keys = list.values.compactMap { value in
            guard case .structValue(let key) = value.kind else { return nil }
            return JSONWebKey(key)
        }
    }

    enum JWKSError: Error, CustomStringConvertible {
        case notJSON
        case noKeysArray
        var description: String {
            switch self {
            case .notJSON: "is not a JSON object"
            case .noKeysArray: "has no [keys] array"
            }
        }
    }

    /// Checks `token`'s signature as jwt_verify_lib does: every key whose `kid` (when both have one)
    /// and `alg` (when the key has one) fit the token is tried; one that verifies is enough. None
    /// fitting is ``JWTFailure/noMatchingKey``, none verifying ``JWTFailure/verificationFailed``.
    func verify(_ token: JSONWebToken) throws(JWTFailure) {
        guard !keys.isEmpty else { throw .noKeys }
        var fitted = false
        for key in keys {
            if let id = token.keyID, let keyID = key.id, id != keyID { continue }
            if let algorithm = key.algorithm, algorithm != token.algorithm { continue }
            fitted = true
            if key.verifies(token.signature, over: token.signedBytes, algorithm: token.algorithm) { return }
        }
        throw fitted ? .verificationFailed : .noMatchingKey
    }
}

/// One key of a set, with its `kid` and `alg` when given.
struct JSONWebKey: Sendable {
    enum Material: Sendable {
        case rsa(_RSA.Signing.PublicKey)
        case p256(P256.Signing.PublicKey)
        case p384(P384.Signing.PublicKey)
        case p521(P521.Signing.PublicKey)
        case ed25519(Curve25519.Signing.PublicKey)
        case hmac(SymmetricKey)
    }

    let id: String?
    let algorithm: String?
    let material: Material

    init(id: String?, algorithm: String?, material: Material) {
        self.id = id
        self.algorithm = algorithm
        self.material = material
    }

    /// nil for a key Capstan cannot use.
    init?(_ json: Google_Protobuf_Struct) {
        func string(_ name: String) -> String? {
            if case .stringValue(let value)? = json.fields[name]?.kind { return value }
            return nil
        }
        func bytes(_ name: String) -> [UInt8]? { string(name).flatMap { Base64URL.decode($0) } }
        id = string("kid")
        algorithm = string("alg")
        switch string("kty") {
        case "RSA":
            if let algorithm, !algorithm.hasPrefix("RS"), !algorithm.hasPrefix("PS") { return nil }
            guard let n = bytes("n"), let e = bytes("e"), let key = try? _RSA.Signing.PublicKey(n: n, e: e) else { return nil }
            material = .rsa(key)
        case "EC":
            if let algorithm, !algorithm.hasPrefix("ES") { return nil }
            guard let x = bytes("x"), let y = bytes("y") else { return nil }
            let point = x + y
            switch string("crv") {
            case "P-256": guard let key = try? P256.Signing.PublicKey(rawRepresentation: point) else { return nil }; material = .p256(key)
            case "P-384": guard let key = try? P384.Signing.PublicKey(rawRepresentation: point) else { return nil }; material = .p384(key)
            case "P-521": guard let key = try? P521.Signing.PublicKey(rawRepresentation: point) else { return nil }; material = .p521(key)
            default: return nil
            }
        case "OKP":
            guard string("crv") == "Ed25519", algorithm == nil || algorithm == "EdDSA",
                  let x = bytes("x"), let key = try? Curve25519.Signing.PublicKey(rawRepresentation: x) else { return nil }
            material = .ed25519(key)
        case "oct":
            if let algorithm, !algorithm.hasPrefix("HS") { return nil }
            guard let k = bytes("k"), !k.isEmpty else { return nil }
            material = .hmac(SymmetricKey(data: k))
        default:
            return nil
        }
    }

    /// Whether `signature` over `data` verifies with this key under `algorithm` (a key of another
    /// kind than the algorithm's verifies nothing).
    func verifies(_ signature: [UInt8], over data: [UInt8], algorithm: String) -> Bool {
        switch (material, algorithm) {
        case (.rsa(let key), "RS256"): Self.rsa(key, signature, SHA256.hash(data: data), .insecurePKCS1v1_5)
        case (.rsa(let key), "RS384"): Self.rsa(key, signature, SHA384.hash(data: data), .insecurePKCS1v1_5)
        case (.rsa(let key), "RS512"): Self.rsa(key, signature, SHA512.hash(data: data), .insecurePKCS1v1_5)
        case (.rsa(let key), "PS256"): Self.rsa(key, signature, SHA256.hash(data: data), .PSS)
        case (.rsa(let key), "PS384"): Self.rsa(key, signature, SHA384.hash(data: data), .PSS)
        case (.rsa(let key), "PS512"): Self.rsa(key, signature, SHA512.hash(data: data), .PSS)
        case (.p256(let key), "ES256"):
            (try? P256.Signing.ECDSASignature(rawRepresentation: signature)).map { key.isValidSignature($0, for: SHA256.hash(data: data)) } ?? false
        case (.p384(let key), "ES384"):
            (try? P384.Signing.ECDSASignature(rawRepresentation: signature)).map { key.isValidSignature($0, for: SHA384.hash(data: data)) } ?? false
        case (.p521(let key), "ES512"):
            (try? P521.Signing.ECDSASignature(rawRepresentation: signature)).map { key.isValidSignature($0, for: SHA512.hash(data: data)) } ?? false
        case (.ed25519(let key), "EdDSA"): key.isValidSignature(signature, for: data)
        case (.hmac(let key), "HS256"): HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: data, using: key)
        case (.hmac(let key), "HS384"): HMAC<SHA384>.isValidAuthenticationCode(signature, authenticating: data, using: key)
        case (.hmac(let key), "HS512"): HMAC<SHA512>.isValidAuthenticationCode(signature, authenticating: data, using: key)
        default: false
        }
    }

    private static func rsa<D: Digest>(_ key: _RSA.Signing.PublicKey, _ signature: [UInt8], _ digest: D, _ padding: _RSA.Signing.Padding) -> Bool {
        key.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: signature), for: digest, padding: padding)
    }
}
