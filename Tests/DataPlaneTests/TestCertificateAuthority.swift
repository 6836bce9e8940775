import Identity
import NIOSSL

/// A throw-away mesh CA made for one test (Identity's CertificateAuthority with a fresh root), issuing
/// workload certificates for SPIFFE IDs, as istiod would. Nothing is written to disk.
struct TestCertificateAuthority {
    /// A workload's certificate chain (leaf only) and key, as PEM, as SDS carries them.
    struct Credentials {
        var chainPEM: String
        var keyPEM: String
        /// The leaf's serial number, to tell certificates for the same identity apart.
        var serial: [UInt8]
    }

    let authority: CertificateAuthority

    init(trustDomain: String = "cluster.local") throws {
        authority = try CertificateAuthority.generateRoot(trustDomain: trustDomain)
    }

    var rootPEM: String { authority.rootCertificatePEM }

    var root: NIOSSLCertificate {
        get throws { try NIOSSLCertificate.fromPEMBytes(Array(rootPEM.utf8))[0] }
    }

    /// A new key and a certificate for `spiffeID` (`spiffe://cluster.local/ns/NS/sa/SA`).
    func issue(_ spiffeID: String) throws -> Credentials {
        let identity = try WorkloadIdentity(spiffeID: spiffeID)
        let key = try WorkloadKey(generating: .ecdsaP256)
        let csr = try WorkloadCSR(for: identity, key: key)
        let chain = try authority.sign(csrPEM: csr.pemEncoded, for: identity)
        let leaf = try NIOSSLCertificate.fromPEMBytes(Array(chain[0].utf8))[0]
        return Credentials(chainPEM: chain[0], keyPEM: key.pkcs8PEM, serial: leaf.serialNumber)
    }
}

extension TestCertificateAuthority.Credentials {
    var certificates: [NIOSSLCertificate] {
        get throws { try NIOSSLCertificate.fromPEMBytes(Array(chainPEM.utf8)) }
    }

    var key: NIOSSLPrivateKey {
        get throws { try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem) }
    }

    /// A TLS context presenting these credentials (a client may present none) and verifying the peer against `roots`.
    func context(server: Bool, roots: [NIOSSLCertificate], alpn: [String] = [], presentsCertificate: Bool = true) throws -> NIOSSLContext {
        var configuration = server
            ? TLSConfiguration.makeServerConfiguration(certificateChain: try certificates.map { .certificate($0) },
                                                       privateKey: .privateKey(try key))
            : TLSConfiguration.makeClientConfiguration()
        if !server && presentsCertificate {
            configuration.certificateChain = try certificates.map { .certificate($0) }
            configuration.privateKey = .privateKey(try key)
        }
        configuration.trustRoots = .certificates(roots)
        configuration.certificateVerification = .noHostnameVerification
        configuration.applicationProtocols = alpn
        return try NIOSSLContext(configuration: configuration)
    }
}
