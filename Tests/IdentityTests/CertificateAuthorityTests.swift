import Foundation
import Crypto
@testable import Identity
import Testing
import X509

@Suite struct CertificateAuthorityTests {
    @Test func issuesACertificateForTheCallersIdentity() throws {
        let authority = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let identity = try Fixtures.identity()
        let key = try WorkloadKey()
        let csr = try WorkloadCSR(for: identity, key: key)
        let chain = try authority.sign(csrPEM: csr.pemEncoded, for: identity, now: Fixtures.now)
        #expect(chain.count == 2)
        #expect(chain.last == authority.rootCertificatePEM)

        let certificate = try WorkloadCertificate(key: key, chainPEM: chain, rootCertificatePEM: authority.rootCertificatePEM)
        #expect(certificate.identity == identity)
        #expect(certificate.notBefore == Fixtures.now.addingTimeInterval(-60))
        #expect(certificate.notAfter == Fixtures.now.addingTimeInterval(24 * 3600))
        #expect(try Fixtures.certificates(certificate.certificateChainPEM).count == 1)

        let leaf = certificate.leaf
        #expect(leaf.subject.isEmpty)
        #expect(leaf.issuer == authority.signingCertificate.subject)
        #expect(try leaf.extensions.basicConstraints == .notCertificateAuthority)
        #expect(try leaf.extensions.keyUsage == KeyUsage(digitalSignature: true, keyEncipherment: true))
        #expect(try leaf.extensions.extendedKeyUsage == ExtendedKeyUsage([.serverAuth, .clientAuth]))
        #expect(try leaf.extensions.subjectAlternativeNames == SubjectAlternativeNames([.uniformResourceIdentifier(identity.spiffeID)]))
    }

    @Test func theRootIsACertificateAuthorityForTheTrustDomain() throws {
        let authority = try CertificateAuthority.generateRoot(trustDomain: "example.org", now: Fixtures.now)
        let root = authority.signingCertificate
        #expect(authority.roots == [root])
        #expect(authority.issuingChain.isEmpty)
        #expect(root.subject == (try DistinguishedName { OrganizationName("example.org"); CommonName("Capstan root CA") }))
        #expect(try root.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: nil))
        #expect(try root.extensions.keyUsage == KeyUsage(keyCertSign: true, cRLSign: true))
        #expect(root.notValidAfter == Fixtures.now.addingTimeInterval(10 * 365 * 86400))
        #expect(P256.Signing.PublicKey(root.publicKey) != nil)
        #expect(throws: CertificateAuthorityError.self) { try CertificateAuthority.generateRoot(trustDomain: "bad domain") }
    }

    @Test func ignoresTheSANsTheCSRAsksFor() throws {
        let authority = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let caller = try Fixtures.identity("shop", "payments")
        let key = try WorkloadKey()
        let greedy = try WorkloadCSR(for: try Fixtures.identity("kube-system", "admin"), key: key)
        let chain = try authority.sign(csrPEM: greedy.pemEncoded, for: caller, now: Fixtures.now)
        let certificate = try WorkloadCertificate(key: key, chainPEM: chain, rootCertificatePEM: authority.rootCertificatePEM)
        #expect(certificate.identity == caller)
        #expect(try certificate.leaf.extensions.subjectAlternativeNames?.count == 1)
    }

    @Test func signsRSAKeys() throws {
        let authority = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let key = try WorkloadKey(generating: .rsa(bits: 2048))
        let certificate = try Fixtures.issue(by: authority, for: try Fixtures.identity(), key: key)
        #expect(certificate.leaf.publicKey == key.publicKey)
    }

    @Test func refusesATamperedCSR() throws {
        let authority = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let csr = try WorkloadCSR(for: try Fixtures.identity("shop", "payments"), key: try WorkloadKey())
        // Change the SAN the key holder signed ("payments" → "paymentz"): the DER stays well-formed.
        var der = try PEMBlock(csr.pemEncoded).der
        let asked = Array("payments".utf8)
        let at = try #require((0...(der.count - asked.count)).first { Array(der[$0..<$0 + asked.count]) == asked })
        der[at + asked.count - 1] = UInt8(ascii: "z")
        let tampered = PEMBlock(type: "CERTIFICATE REQUEST", der: der).pem
        #expect(throws: CertificateAuthorityError.badCSRSignature) {
            try authority.sign(csrPEM: tampered, for: try Fixtures.identity(), now: Fixtures.now)
        }
    }

    @Test func refusesWhatIsNotACSR() throws {
        let authority = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        for text in [authority.rootCertificatePEM, "hello", ""] {
            let error = #expect(throws: CertificateAuthorityError.self) {
                try authority.sign(csrPEM: text, for: try Fixtures.identity(), now: Fixtures.now)
            }
            guard case .malformedCSR = error else { Issue.record("expected malformedCSR, got \(String(describing: error))"); continue }
        }
    }

    @Test func boundsTheLifetime() throws {
        let authority = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let identity = try Fixtures.identity()
        let cases: [(Duration, TimeInterval)] = [
            (.seconds(3600), 3600), (.zero, 24 * 3600), (.seconds(-5), 24 * 3600), (.seconds(1000 * 86400), 90 * 86400),
        ]
        for (requested, expected) in cases {
            let certificate = try Fixtures.issue(by: authority, for: identity, lifetime: requested)
            #expect(certificate.notAfter == Fixtures.now.addingTimeInterval(expected), "requested \(requested)")
        }
    }

    @Test func neverIssuesPastItsOwnExpiry() throws {
        let authority = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", validity: .seconds(7200), now: Fixtures.now)
        let certificate = try Fixtures.issue(by: authority, for: try Fixtures.identity(), lifetime: .seconds(86400))
        #expect(certificate.notAfter == authority.signingCertificate.notValidAfter)

        let later = Fixtures.now.addingTimeInterval(7201)
        let csr = try WorkloadCSR(for: try Fixtures.identity(), key: try WorkloadKey())
        let error = #expect(throws: CertificateAuthorityError.self) {
            try authority.sign(csrPEM: csr.pemEncoded, for: try Fixtures.identity(), now: later)
        }
        guard case .expired = error else { Issue.record("expected expired, got \(String(describing: error))"); return }
    }

    @Test func persistsAndReloads() throws {
        let scratch = try Scratch()
        let directory = scratch.file("ca/nested")
        let first = try CertificateAuthority.loadOrGenerate(directory: directory, trustDomain: "cluster.local")
        #expect(Scratch.mode(of: directory) == 0o700)
        #expect(Scratch.mode(of: "\(directory)/ca-key.pem") == 0o600)
        #expect(Scratch.mode(of: "\(directory)/ca-cert.pem") == 0o644)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
                == ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"])

        let second = try CertificateAuthority.loadOrGenerate(directory: directory, trustDomain: "cluster.local")
        #expect(second.signingCertificate == first.signingCertificate)
        #expect(second.rootCertificatePEM == first.rootCertificatePEM)
        // What the reloaded CA signs verifies against the first one's root.
        let key = try WorkloadKey()
        let chain = try second.sign(csrPEM: try WorkloadCSR(for: try Fixtures.identity(), key: key).pemEncoded, for: try Fixtures.identity())
        _ = try WorkloadCertificate(key: key, chainPEM: chain, rootCertificatePEM: first.rootCertificatePEM)
    }

    @Test func refusesAPartialDirectory() throws {
        let scratch = try Scratch()
        let directory = scratch.file("ca")
        try CertificateAuthority.generateRoot(trustDomain: "cluster.local").persist(to: directory)
        try FileManager.default.removeItem(atPath: "\(directory)/root-cert.pem")
        #expect(throws: CertificateAuthorityError.incompleteDirectory(directory, missing: ["root-cert.pem"])) {
            try CertificateAuthority.loadOrGenerate(directory: directory, trustDomain: "cluster.local")
        }
        #expect(FileManager.default.fileExists(atPath: "\(directory)/ca-key.pem"))
    }

    @Test func refusesAKeyThatIsNotTheCertificates() throws {
        let scratch = try Scratch()
        let directory = scratch.file("ca")
        try CertificateAuthority.generateRoot(trustDomain: "cluster.local").persist(to: directory)
        try scratch.write("ca/ca-key.pem", try WorkloadKey().pkcs8PEM)
        let error = #expect(throws: CertificateAuthorityError.self) { try CertificateAuthority(directory: directory) }
        guard case .keyMismatch(let reason) = error else { Issue.record("expected keyMismatch, got \(String(describing: error))"); return }
        #expect(reason.contains("ca-key.pem"))
    }

    @Test func signsAsAPluggedInIntermediate() throws {
        let scratch = try Scratch()
        let root = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let authority = try CertificateAuthority(directory: try Fixtures.pluggedInCA(under: root, in: scratch))
        #expect(authority.roots == root.roots)
        #expect(authority.issuingChain == [authority.signingCertificate])

        let key = try WorkloadKey()
        let identity = try Fixtures.identity()
        let chain = try authority.sign(csrPEM: try WorkloadCSR(for: identity, key: key).pemEncoded, for: identity, now: Fixtures.now)
        #expect(chain.count == 3)
        #expect(try Fixtures.certificates(chain[1]) == [authority.signingCertificate])
        #expect(chain[2] == root.rootCertificatePEM)
        let certificate = try WorkloadCertificate(key: key, chainPEM: chain, rootCertificatePEM: root.rootCertificatePEM)
        #expect(certificate.identity == identity)
        #expect(try Fixtures.certificates(certificate.certificateChainPEM).count == 2)
    }

    @Test func refusesAnIntermediateThatDoesNotChainToTheRoot() throws {
        let scratch = try Scratch()
        let root = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let directory = try Fixtures.pluggedInCA(under: root, in: scratch)
        let other = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        try scratch.write("cacerts/root-cert.pem", other.rootCertificatePEM)
        try scratch.write("cacerts/cert-chain.pem", try scratch.read("cacerts/ca-cert.pem"))
        let error = #expect(throws: CertificateAuthorityError.self) { try CertificateAuthority(directory: directory) }
        guard case .invalidMaterial(_, let reason) = error else { Issue.record("expected invalidMaterial, got \(String(describing: error))"); return }
        #expect(reason.contains("not signed by the trusted root"))
    }
}

/// A PEM block taken apart and put back together, for tampering with DER in tests.
struct PEMBlock {
    var type: String
    var der: [UInt8]

    init(type: String, der: [UInt8]) {
        self.type = type
        self.der = der
    }

    init(_ pem: String) throws {
        let lines = pem.split(separator: "\n")
        guard let first = lines.first, first.hasPrefix("-----BEGIN "),
              let data = Data(base64Encoded: lines.dropFirst().dropLast().joined()) else { throw ScratchError("not PEM") }
        type = String(first.dropFirst("-----BEGIN ".count).dropLast(5))
        der = Array(data)
    }

    var pem: String {
        let body = Data(der).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        return "-----BEGIN \(type)-----\n\(body)\n-----END \(type)-----\n"
    }
}
