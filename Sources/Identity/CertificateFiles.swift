/// The agent's `OUTPUT_CERTS` directory, as Istio's pilot-agent writes it, for applications that want the
/// workload's certificate themselves: `key.pem` (0600), `cert-chain.pem` (leaf and intermediates, no root)
/// and `root-cert.pem`. Each file is replaced atomically; a reader sees the old file or the new one.
public struct CertificateFiles: Sendable {
    public static let keyFileName = "key.pem"
    public static let certificateChainFileName = "cert-chain.pem"
    public static let rootCertificateFileName = "root-cert.pem"

    public let directory: String

    public init(directory: String) {
        self.directory = directory
    }

    /// Writes `certificate` (the key first, the root last), creating the directory 0755 if missing: the
    /// certificates are public, the key file alone is private.
    public func write(_ certificate: WorkloadCertificate) throws(CredentialFileError) {
        try CredentialFile.makeDirectory(directory, mode: 0o755)
        try CredentialFile.replace(path(Self.keyFileName), with: certificate.key.pkcs8PEM, mode: 0o600)
        try CredentialFile.replace(path(Self.certificateChainFileName), with: certificate.certificateChainPEM, mode: 0o644)
        try CredentialFile.replace(path(Self.rootCertificateFileName), with: certificate.rootCertificatePEM, mode: 0o644)
    }

    /// The three files as they are, unchecked (build a `WorkloadCertificate` from them to check them).
    public func read() throws(CredentialFileError) -> Contents {
        Contents(keyPEM: try CredentialFile.read(path(Self.keyFileName)),
                 certificateChainPEM: try CredentialFile.read(path(Self.certificateChainFileName)),
                 rootCertificatePEM: try CredentialFile.read(path(Self.rootCertificateFileName)))
    }

    /// The full path of one of the files.
    public func path(_ fileName: String) -> String {
        directory.hasSuffix("/") ? directory + fileName : "\(directory)/\(fileName)"
    }

    /// What the directory holds.
    public struct Contents: Sendable, Equatable, CustomStringConvertible, CustomReflectable {
        /// Secret.
        public var keyPEM: String
        public var certificateChainPEM: String
        public var rootCertificatePEM: String

        public var description: String {
            "CertificateFiles.Contents(key: \(keyPEM.utf8.count) bytes, chain: \(certificateChainPEM.utf8.count) bytes, root: \(rootCertificatePEM.utf8.count) bytes)"
        }
        /// No children: `dump` must not reach the key.
        public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
    }
}
