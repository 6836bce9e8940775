#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials
import X509

/// A CA kept in a directory with Istio's `cacerts` layout, so material made for istiod plugs in unchanged.
extension CertificateAuthority {
    /// The files of Istio's `cacerts` secret.
    public enum FileName {
        /// The signing certificate (the root itself for a self-signed CA).
        public static let caCertificate = "ca-cert.pem"
        /// The signing certificate's private key, 0600.
        public static let caKey = "ca-key.pem"
        /// The signing certificate, then any intermediates, then the root.
        public static let certificateChain = "cert-chain.pem"
        /// The trusted root(s).
        public static let rootCertificate = "root-cert.pem"

        public static let all = [caCertificate, caKey, certificateChain, rootCertificate]
    }

    /// Reads a CA from `directory`: all four `cacerts` files must be there. Refused with the file and the
    /// reason: a file that is missing or unreadable, ca-cert.pem holding other than one certificate, a key
    /// that is not ca-cert.pem's, or a chain that does not verify up to root-cert.pem. In cert-chain.pem,
    /// copies of the root are ignored and ca-cert.pem may be left out (it is put first).
    public init(directory: String, maximumLifetime: Duration = defaultMaximumLifetime) throws(CertificateAuthorityError) {
        func read(_ name: String) throws(CertificateAuthorityError) -> String {
            do {
                return try CredentialFile.read("\(directory)/\(name)")
            } catch {
                throw .file(error)
            }
        }
        func certificates(_ name: String) throws(CertificateAuthorityError) -> [Certificate] {
            let text = try read(name)
            do {
                return try CertificateChain.certificates(in: text, what: "\(directory)/\(name)")
            } catch {
                throw .invalidMaterial("\(directory)/\(name)", error.reason)
            }
        }
        let signing = try certificates(FileName.caCertificate)
        guard signing.count == 1 else {
            throw .invalidMaterial("\(directory)/\(FileName.caCertificate)", "holds \(signing.count) certificates, expected one")
        }
        let keyPEM = try read(FileName.caKey)
        let key: WorkloadKey
        do {
            key = try WorkloadKey(pemEncoded: keyPEM)
        } catch {
            throw .invalidMaterial("\(directory)/\(FileName.caKey)", error.description)
        }
        let roots = try certificates(FileName.rootCertificate)
        let intermediates = try certificates(FileName.certificateChain).filter { $0 != signing[0] && !roots.contains($0) }
        guard key.publicKey == signing[0].publicKey else {
            throw .keyMismatch("\(directory)/\(FileName.caKey) is not the key of \(directory)/\(FileName.caCertificate)")
        }
        do {
            try self.init(signingCertificate: signing[0], signingKey: key, intermediates: intermediates, roots: roots,
                          maximumLifetime: maximumLifetime)
        } catch {
            if case .invalidMaterial(_, let reason) = error { throw .invalidMaterial(directory, reason) }
            throw error
        }
    }

    /// Writes the CA to `directory` in the `cacerts` layout, creating it 0700 if missing. Each file is
    /// replaced atomically; ca-key.pem is 0600, the certificates 0644.
    public func persist(to directory: String) throws(CertificateAuthorityError) {
        let signingPEM: String
        do {
            signingPEM = try CertificateChain.pem(signingCertificate)
        } catch {
            throw .invalidMaterial(FileName.caCertificate, error.reason)
        }
        // The signing certificate, then the intermediates, then the root: for a root CA, just the root.
        let chainPEM = issuingChainPEM.joined() + rootCertificatePEM
        do throws(CredentialFileError) {
            try CredentialFile.makeDirectory(directory, mode: 0o700)
            try CredentialFile.replace("\(directory)/\(FileName.caCertificate)", with: signingPEM, mode: 0o644)
            try CredentialFile.replace("\(directory)/\(FileName.certificateChain)", with: chainPEM, mode: 0o644)
            try CredentialFile.replace("\(directory)/\(FileName.rootCertificate)", with: rootCertificatePEM, mode: 0o644)
            try CredentialFile.replace("\(directory)/\(FileName.caKey)", with: signingKey.pkcs8PEM, mode: 0o600)
        } catch {
            throw .file(error)
        }
    }

    /// What `capstan control-plane` does at start: reads the CA in `directory` if it is there, otherwise
    /// generates a root for `trustDomain` and persists it, so it survives restarts. A directory holding
    /// only some of the files is refused rather than overwritten: it may be an operator's half-copied CA.
    public static func loadOrGenerate(directory: String, trustDomain: String, now: Date = Date(),
                                      maximumLifetime: Duration = defaultMaximumLifetime) throws(CertificateAuthorityError) -> CertificateAuthority {
        let missing = FileName.all.filter { !CredentialFile.exists("\(directory)/\($0)") }
        if missing.isEmpty { return try CertificateAuthority(directory: directory, maximumLifetime: maximumLifetime) }
        guard missing.count == FileName.all.count else { throw .incompleteDirectory(directory, missing: missing) }
        var authority = try generateRoot(trustDomain: trustDomain, now: now)
        authority.maximumLifetime = maximumLifetime
        try authority.persist(to: directory)
        return authority
    }
}
