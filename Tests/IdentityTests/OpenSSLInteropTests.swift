import Foundation
import Identity
import Testing

/// What we make is checked by a tool we did not write, and what that tool makes is read by us.
@Suite struct OpenSSLInteropTests {
    @Test func opensslVerifiesOurCSR() throws {
        let scratch = try Scratch()
        let identity = try Fixtures.identity()
        for key in [try WorkloadKey(), try WorkloadKey(generating: .rsa(bits: 2048))] {
            try scratch.write("csr.pem", try WorkloadCSR(for: identity, key: key).pemEncoded)
            try ExternalTool.openssl(["req", "-verify", "-noout", "-in", scratch.file("csr.pem")], scratch: scratch)
            let text = try ExternalTool.openssl(["req", "-noout", "-text", "-in", scratch.file("csr.pem")], scratch: scratch)
            #expect(text.contains("URI:spiffe://cluster.local/ns/shop/sa/payments"), "\(text)")
            // And it reads our PKCS#8 key.
            try scratch.write("key.pem", key.pkcs8PEM)
            try ExternalTool.openssl(["pkey", "-noout", "-in", scratch.file("key.pem")], scratch: scratch)
        }
    }

    @Test func opensslVerifiesAnIssuedChain() throws {
        let scratch = try Scratch()
        let now = Date()  // openssl checks validity against the real clock
        let root = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: now)
        let authority = try CertificateAuthority(directory: try Fixtures.pluggedInCA(under: root, in: scratch, now: now))
        let certificate = try Fixtures.issue(by: authority, for: try Fixtures.identity(), now: now)
        let chain = try Fixtures.certificates(certificate.certificateChainPEM)
        try scratch.write("leaf.pem", try chain[0].serializeAsPEM().pemString + "\n")
        try scratch.write("untrusted.pem", try chain[1].serializeAsPEM().pemString + "\n")
        try scratch.write("root.pem", certificate.rootCertificatePEM)
        for purpose in ["sslserver", "sslclient"] {
            let output = try ExternalTool.openssl(["verify", "-x509_strict", "-purpose", purpose, "-CAfile", scratch.file("root.pem"),
                                                   "-untrusted", scratch.file("untrusted.pem"), scratch.file("leaf.pem")], scratch: scratch)
            #expect(output.contains("leaf.pem: OK"), "\(output)")
        }

        let stranger = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: now)
        try scratch.write("stranger.pem", stranger.rootCertificatePEM)
        let refused = try ExternalTool.run(["openssl", "verify", "-CAfile", scratch.file("stranger.pem"),
                                            "-untrusted", scratch.file("untrusted.pem"), scratch.file("leaf.pem")], scratch: scratch)
        #expect(refused.status != 0, "\(refused)")
    }

    @Test func refusesAWeakRSACSRMadeByOpenSSL() throws {
        let scratch = try Scratch()
        try ExternalTool.openssl(["req", "-new", "-newkey", "rsa:1024", "-nodes", "-subj", "/O=weak",
                                  "-keyout", scratch.file("weak-key.pem"), "-out", scratch.file("weak.csr")], scratch: scratch)
        let authority = try CertificateAuthority.generateRoot(trustDomain: "cluster.local")
        let error = #expect(throws: CertificateAuthorityError.self) {
            try authority.sign(csrPEM: try scratch.read("weak.csr"), for: try Fixtures.identity())
        }
        #expect(error == .weakKey("an RSA key of 1024 bits"), "\(String(describing: error))")
        #expect(error?.description.contains("1024 bits") == true)
        // The key itself is refused too, by its size.
        #expect(throws: WorkloadKeyError.unsupportedRSASize(1024)) { try WorkloadKey(pemEncoded: try scratch.read("weak-key.pem")) }
    }

    @Test func readsKeysAndCSRsOpenSSLMakes() throws {
        let scratch = try Scratch()
        try ExternalTool.openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", scratch.file("sec1.pem")], scratch: scratch)
        try ExternalTool.openssl(["genrsa", "-traditional", "-out", scratch.file("pkcs1.pem"), "2048"], scratch: scratch)
        #expect(try scratch.read("sec1.pem").hasPrefix("-----BEGIN EC PRIVATE KEY-----"))
        #expect(try scratch.read("pkcs1.pem").hasPrefix("-----BEGIN RSA PRIVATE KEY-----"))
        let authority = try CertificateAuthority.generateRoot(trustDomain: "cluster.local")
        let identity = try Fixtures.identity()
        for (file, algorithm) in [("sec1.pem", KeyAlgorithm.ecdsaP256), ("pkcs1.pem", .rsa(bits: 2048))] {
            let key = try WorkloadKey(pemEncoded: try scratch.read(file))
            #expect(key.algorithm == algorithm)
            // A CSR openssl makes with that key, asking for something else: the caller's identity wins.
            try ExternalTool.openssl(["req", "-new", "-key", scratch.file(file), "-subj", "/CN=someone-else",
                                      "-addext", "subjectAltName=URI:spiffe://evil.example/ns/x/sa/y",
                                      "-out", scratch.file("\(file).csr")], scratch: scratch)
            let chain = try authority.sign(csrPEM: try scratch.read("\(file).csr"), for: identity)
            let certificate = try WorkloadCertificate(key: key, chainPEM: chain, rootCertificatePEM: authority.rootCertificatePEM)
            #expect(certificate.identity == identity)
            #expect(certificate.leaf.subject.isEmpty)
        }
    }
}
