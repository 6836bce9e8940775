import _CryptoExtras
import Crypto
import SwiftASN1
import X509

/// A private key a workload (or a CA) signs with. Its description, debug description and mirror name
/// the algorithm only: key material never reaches a log line.
public struct WorkloadKey: Sendable {
    private enum Backing: Sendable {
        case p256(P256.Signing.PrivateKey)
        case rsa(_RSA.Signing.PrivateKey)
    }

    private let backing: Backing

    /// A fresh key from the system's random source.
    public init(generating algorithm: KeyAlgorithm = .default) throws(WorkloadKeyError) {
        switch try algorithm.validated() {
        case .ecdsaP256:
            backing = .p256(P256.Signing.PrivateKey())
        case .rsa(let bits):
            do {
                backing = .rsa(try _RSA.Signing.PrivateKey(keySize: .init(bitCount: bits)))
            } catch {
                throw .generation("\(algorithm): \(error)")
            }
        }
    }

    /// Reads a PEM private key: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
    /// Only ECDSA P-256 and RSA 2048–4096 are accepted; anything else is refused with the reason.
    public init(pemEncoded pem: String) throws(WorkloadKeyError) {
        let document: PEMDocument
        do {
            document = try PEMDocument(pemString: pem)
        } catch {
            throw .notPEM("\(error)")
        }
        switch document.discriminator {
        case "EC PRIVATE KEY":
            guard let key = try? P256.Signing.PrivateKey(pemRepresentation: pem) else {
                throw .unsupportedKey("an EC PRIVATE KEY that is not a valid P-256 key")
            }
            backing = .p256(key)
        case "RSA PRIVATE KEY":
            backing = .rsa(try Self.rsa(pem))
        case "PRIVATE KEY":
            // PKCS#8 names its algorithm inside; each parser checks it and refuses the other's keys.
            if let key = try? P256.Signing.PrivateKey(pemRepresentation: pem) {
                backing = .p256(key)
            } else {
                backing = .rsa(try Self.rsa(pem))
            }
        default:
            throw .unsupportedKey("a \"\(document.discriminator)\" PEM block (expected PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY, unencrypted)")
        }
    }

    /// RSA keys are parsed with the lenient reader so a short key is refused by its size, not a parse error.
    private static func rsa(_ pem: String) throws(WorkloadKeyError) -> _RSA.Signing.PrivateKey {
        guard let key = try? _RSA.Signing.PrivateKey(unsafePEMRepresentation: pem) else {
            throw .unsupportedKey("neither an ECDSA P-256 nor an RSA key")
        }
        guard KeyAlgorithm.rsaBits.contains(key.keySizeInBits) else { throw .unsupportedRSASize(key.keySizeInBits) }
        return key
    }

    /// What kind of key this is.
    public var algorithm: KeyAlgorithm {
        switch backing {
        case .p256: .ecdsaP256
        case .rsa(let key): .rsa(bits: key.keySizeInBits)
        }
    }

    /// The key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), the form Envoy, Istio and OpenSSL all read.
    /// Secret: write it only to 0600 files or an SDS response, never to a log.
    public var pkcs8PEM: String {
        switch backing {
        case .p256(let key): key.pemRepresentation
        case .rsa(let key): key.pkcs8PEMRepresentation
        }
    }

    /// The key as swift-certificates signs with it (CSRs, certificates).
    public var certificateKey: Certificate.PrivateKey {
        switch backing {
        case .p256(let key): Certificate.PrivateKey(key)
        case .rsa(let key): Certificate.PrivateKey(key)
        }
    }

    /// The public half, as a certificate carries it.
    public var publicKey: Certificate.PublicKey {
        switch backing {
        case .p256(let key): Certificate.PublicKey(key.publicKey)
        case .rsa(let key): Certificate.PublicKey(key.publicKey)
        }
    }
}

extension WorkloadKey: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String { "WorkloadKey(\(algorithm))" }
    public var debugDescription: String { description }
    /// No children: `dump` and reflection must not reach the key.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// Why a key could not be made or read; never contains key material.
public enum WorkloadKeyError: Error, Equatable, Sendable, CustomStringConvertible {
    case unsupportedRSASize(Int)
    case notPEM(String)
    case unsupportedKey(String)
    case generation(String)

    public var description: String {
        switch self {
        case .unsupportedRSASize(let bits):
            "an RSA key of \(bits) bits is not accepted: use \(KeyAlgorithm.rsaBits.lowerBound) to \(KeyAlgorithm.rsaBits.upperBound) bits, a multiple of 128"
        case .notPEM(let reason): "the key is not PEM: \(reason)"
        case .unsupportedKey(let what): "unsupported private key: \(what); expected ECDSA P-256 or RSA"
        case .generation(let reason): "generating a key failed: \(reason)"
        }
    }
}
