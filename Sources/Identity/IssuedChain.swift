import X509
import XDS

/// A CA's answer read as Istio's API defines it, in either of its two forms:
/// - with `root_cert`: `cert_chain` is the leaf then any intermediates, and `root_cert.ca_cert` is the whole
///   trust bundle;
/// - without (istiod's form): the roots end `cert_chain`. Its last entry holds a root, or several roots
///   concatenated; istiod splits such a bundle into one entry per certificate, so the self-signed entries
///   just before the last one are roots too. An intermediate is never self-signed.
public struct IssuedChain: Sendable, Equatable {
    /// The leaf first, then the intermediates, as PEM (an entry may hold several certificates).
    public let chainPEM: [String]
    /// The trusted roots, as one PEM bundle.
    public let trustBundlePEM: String

    public init(_ response: Istio_V1_Auth_IstioCertificateResponse) throws(WorkloadCertificateError) {
        try self.init(certChain: response.certChain, rootCertificates: response.hasRootCert ? response.rootCert.caCert : [])
    }

    /// `certChain` and `rootCertificates` as the response's fields hold them; an empty `rootCertificates` is
    /// the older form. Refused: an empty chain, an entry that is not PEM certificates, and an answer of the
    /// older form with a single entry (a leaf and no root; pilot-agent refuses it too).
    public init(certChain: [String], rootCertificates: [String]) throws(WorkloadCertificateError) {
        guard !certChain.isEmpty else { throw .emptyChain }
        if !rootCertificates.isEmpty {
            chainPEM = certChain
            trustBundlePEM = Self.bundle(rootCertificates)
            return
        }
        guard certChain.count > 1 else { throw .noTrustBundle }
        var firstRoot = certChain.count - 1
        while firstRoot > 1, try Self.isSelfSigned(certChain[firstRoot - 1], entry: firstRoot) { firstRoot -= 1 }
        chainPEM = Array(certChain[..<firstRoot])
        trustBundlePEM = Self.bundle(certChain[firstRoot...])
    }

    /// Whether every certificate in a `cert_chain` entry is self-signed (names and verifies itself).
    private static func isSelfSigned(_ entry: String, entry index: Int) throws(WorkloadCertificateError) -> Bool {
        let certificates: [Certificate]
        do {
            certificates = try CertificateChain.certificates(in: entry, what: "cert_chain entry \(index)")
        } catch {
            throw .unreadable(error.reason)
        }
        return certificates.allSatisfy { $0.subject == $0.issuer && $0.publicKey.isValidSignature($0.signature, for: $0) }
    }

    /// PEM entries as one bundle, each ending with a newline so none runs into the next.
    private static func bundle(_ entries: some Collection<String>) -> String {
        entries.map { $0.hasSuffix("\n") ? $0 : $0 + "\n" }.joined()
    }
}
