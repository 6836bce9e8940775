import Configuration
import NIOSSL
import XDS

/// The certificates a TLS context verifies its peer against (Istio's `ROOTCA`), with any peer names
/// the validation context that carried them requires.
struct TrustBundle: Sendable, Equatable {
    let roots: [NIOSSLCertificate]
    let subjectAltNames: [SubjectAltNameMatcher]
    /// The first expiry among the roots, in seconds since 1970.
    let notAfter: Int
    /// The roots as they came (PEM), for `/config_dump`.
    let pem: [UInt8]
    /// Where the roots came from, as Envoy's `/certs` names it: the file, or `<inline>`.
    let source: String

    /// Reads a `CertificateValidationContext` that carries `trusted_ca`.
    init(_ proto: Envoy_Extensions_TransportSockets_Tls_V3_CertificateValidationContext, path: String) throws(ConfigError) {
        guard proto.hasTrustedCa else { throw ConfigError(path: "\(path).trusted_ca", message: "is required") }
        let pem = try proto.trustedCa.bytes(path: "\(path).trusted_ca")
        roots = try TLSCredentials.certificates(pem, path: "\(path).trusted_ca")
        subjectAltNames = try SubjectAltNameMatcher.decode(proto, path: path)
        notAfter = roots.map { Int($0.notValidAfter) }.min() ?? 0
        self.pem = pem
        source = proto.trustedCa.sourceName
    }

    static func == (lhs: TrustBundle, rhs: TrustBundle) -> Bool {
        lhs.pem == rhs.pem && lhs.subjectAltNames == rhs.subjectAltNames
    }
}
