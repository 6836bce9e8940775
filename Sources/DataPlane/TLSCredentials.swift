import Configuration
import FoundationEssentials
import Identity
import NIOSSL
import XDS
#if canImport(Glibc)
import Glibc
#endif

/// A certificate chain (leaf first) and its private key, parsed from PEM and checked to belong
/// together: what a TLS context presents to its peer. The key is never printed or dumped.
struct TLSCredentials: Sendable, Equatable {
    let chain: [NIOSSLCertificate]
    let key: NIOSSLPrivateKey
    /// The leaf's SPIFFE ID, the principal this proxy is known by; nil when it has none.
    let identity: String?
    /// When the leaf expires, in seconds since 1970.
    let notAfter: Int
    /// The chain as it came (PEM), for `/config_dump`.
    let chainPEM: [UInt8]
    /// Where the chain came from, as Envoy's `/certs` names it: the file, or `<inline>`.
    let chainSource: String

    /// Reads Envoy's `TlsCertificate`; errors name the field under `path`.
    init(_ proto: Envoy_Extensions_TransportSockets_Tls_V3_TlsCertificate, path: String) throws(ConfigError) {
        guard proto.hasCertificateChain else { throw ConfigError(path: "\(path).certificate_chain", message: "is required") }
        guard proto.hasPrivateKey else { throw ConfigError(path: "\(path).private_key", message: "is required") }
        let chainPEM = try proto.certificateChain.bytes(path: "\(path).certificate_chain")
        let keyPEM = try proto.privateKey.bytes(path: "\(path).private_key")
        try self.init(chainPEM: chainPEM, keyPEM: keyPEM, path: path, source: proto.certificateChain.sourceName)
    }

    init(chainPEM: [UInt8], keyPEM: [UInt8], path: String, source: String = "<inline>") throws(ConfigError) {
        let chain = try Self.certificates(chainPEM, path: "\(path).certificate_chain")
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(bytes: keyPEM, format: .pem)
        } catch {
            // The reason only: the bytes are a key, or meant to be one.
            throw ConfigError(path: "\(path).private_key", message: "is not a PEM private key (\(error))")
        }
        // BoringSSL refuses a key that does not go with the leaf when it is put in a context.
        do {
            _ = try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                                          privateKey: .privateKey(key)))
        } catch {
            throw ConfigError(path: "\(path).private_key", message: "is not the key of the certificate chain's first certificate (\(error))")
        }
        self.chain = chain
        self.key = key
        self.identity = PeerIdentity.spiffeID(in: PeerIdentity.subjectAltNames(of: chain[0]))
        self.notAfter = Int(chain[0].notValidAfter)
        self.chainPEM = chainPEM
        self.chainSource = source
    }

    /// The PEM certificates in `bytes`: at least one, or an error naming `path`.
    static func certificates(_ bytes: [UInt8], path: String) throws(ConfigError) -> [NIOSSLCertificate] {
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMBytes(bytes)
        } catch {
            throw ConfigError(path: path, message: "is not PEM certificates (\(error))")
        }
        guard !certificates.isEmpty else { throw ConfigError(path: path, message: "has no PEM CERTIFICATE block") }
        return certificates
    }

    /// The same chain and key. The key object itself first: comparing two keys asks BoringSSL, and
    /// the TLS context cache compares the credentials of a key it found on every connection.
    static func == (lhs: TLSCredentials, rhs: TLSCredentials) -> Bool {
        lhs.chainPEM == rhs.chainPEM && (lhs.key === rhs.key || lhs.key == rhs.key)
    }
}

extension Envoy_Config_Core_V3_DataSource {
    /// The file this source reads, or `<inline>` (Envoy's name in `/certs` for data that came in the configuration).
    var sourceName: String {
        if case .filename(let name)? = specifier { return name }
        return "<inline>"
    }

    /// The bytes this source names: inline, from a file, or from an environment variable.
    func bytes(path: String) throws(ConfigError) -> [UInt8] {
        switch specifier {
        case .inlineBytes(let data)?:
            return [UInt8](data)
        case .inlineString(let text)?:
            return Array(text.utf8)
        case .filename(let name)?:
            do {
                return Array(try CredentialFile.read(name).utf8)
            } catch {
                throw ConfigError(path: "\(path).filename", message: "cannot read \"\(name)\": \(error)")
            }
        case .environmentVariable(let name)?:
            guard let value = getenv(name) else {
                throw ConfigError(path: "\(path).environment_variable", message: "\"\(name)\" is not set")
            }
            return Array(String(cString: value).utf8)
        case nil:
            throw ConfigError(path: path, message: "is empty: needs inline_bytes, inline_string, filename or environment_variable")
        }
    }
}
