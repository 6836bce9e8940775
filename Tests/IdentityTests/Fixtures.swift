import Foundation
@testable import Identity
import X509

/// Identities, CAs and certificates made in the test: nothing is checked in.
enum Fixtures {
    /// A fixed instant, so lifetimes and rotation times are exact.
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    static func identity(_ namespace: String = "shop", _ serviceAccount: String = "payments",
                         trustDomain: String = "cluster.local") throws -> WorkloadIdentity {
        try WorkloadIdentity(trustDomain: trustDomain, namespace: namespace, serviceAccount: serviceAccount)
    }

    /// A key, a CSR for `identity`, signed by `authority`, checked against the authority's roots.
    static func issue(by authority: CertificateAuthority, for identity: WorkloadIdentity,
                      key: WorkloadKey? = nil, lifetime: Duration = .zero, now: Date = now) throws -> WorkloadCertificate {
        let key = try key ?? WorkloadKey()
        let csr = try WorkloadCSR(for: identity, key: key)
        let chain = try authority.sign(csrPEM: csr.pemEncoded, for: identity, requestedLifetime: lifetime, now: now)
        return try WorkloadCertificate(key: key, chainPEM: chain, rootCertificatePEM: authority.rootCertificatePEM)
    }

    /// An intermediate CA certificate and its key, signed by `root`, as an operator would make for `cacerts`.
    static func intermediate(under root: CertificateAuthority, now: Date = now) throws -> (certificate: Certificate, key: WorkloadKey) {
        let key = try WorkloadKey()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(365 * 86400),
            issuer: root.signingCertificate.subject,
            subject: try DistinguishedName { OrganizationName("cluster.local"); CommonName("Capstan intermediate CA") },
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: key.publicKey)
                AuthorityKeyIdentifier(keyIdentifier: try root.signingCertificate.extensions.subjectKeyIdentifier?.keyIdentifier)
            },
            issuerPrivateKey: root.signingKey.certificateKey)
        return (certificate, key)
    }

    /// A directory in Istio's `cacerts` layout for an intermediate under `root`.
    static func pluggedInCA(under root: CertificateAuthority, in scratch: Scratch, now: Date = now) throws -> String {
        let (certificate, key) = try intermediate(under: root, now: now)
        let directory = scratch.file("cacerts")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let certificatePEM = try certificate.serializeAsPEM().pemString + "\n"
        try certificatePEM.write(toFile: "\(directory)/ca-cert.pem", atomically: false, encoding: .utf8)
        try key.pkcs8PEM.write(toFile: "\(directory)/ca-key.pem", atomically: false, encoding: .utf8)
        try (certificatePEM + root.rootCertificatePEM).write(toFile: "\(directory)/cert-chain.pem", atomically: false, encoding: .utf8)
        try root.rootCertificatePEM.write(toFile: "\(directory)/root-cert.pem", atomically: false, encoding: .utf8)
        return directory
    }

    /// The certificates in a PEM bundle.
    static func certificates(_ pem: String) throws -> [Certificate] {
        try CertificateChain.certificates(in: pem, what: "test bundle")
    }
}
