import Foundation
import Identity
import Testing

@Suite struct CertificateFilesTests {
    @Test func writesIstiosOutputCertsLayout() throws {
        let scratch = try Scratch()
        let authority = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let certificate = try Fixtures.issue(by: authority, for: try Fixtures.identity())
        let files = CertificateFiles(directory: scratch.file("output/certs"))
        try files.write(certificate)

        #expect(try FileManager.default.contentsOfDirectory(atPath: files.directory).sorted()
                == ["cert-chain.pem", "key.pem", "root-cert.pem"])
        #expect(Scratch.mode(of: files.path("key.pem")) == 0o600)
        #expect(Scratch.mode(of: files.path("cert-chain.pem")) == 0o644)
        #expect(Scratch.mode(of: files.path("root-cert.pem")) == 0o644)
        #expect(Scratch.mode(of: files.directory) == 0o755)

        let contents = try files.read()
        #expect(contents.keyPEM == certificate.key.pkcs8PEM)
        #expect(contents.rootCertificatePEM == authority.rootCertificatePEM)
        // The chain file holds the leaf only: Istio leaves the root out of cert-chain.pem.
        #expect(try Fixtures.certificates(contents.certificateChainPEM) == [certificate.leaf])
        #expect(!String(describing: contents).contains(contents.keyPEM.split(separator: "\n")[1]))

        let reread = try WorkloadCertificate(key: try WorkloadKey(pemEncoded: contents.keyPEM),
                                             chainPEM: [contents.certificateChainPEM],
                                             rootCertificatePEM: contents.rootCertificatePEM)
        #expect(reread.identity == certificate.identity)
        #expect(reread.leaf == certificate.leaf)
    }

    @Test func replacesTheFilesOnRotationWithTheIntermediate() throws {
        let scratch = try Scratch()
        let root = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let authority = try CertificateAuthority(directory: try Fixtures.pluggedInCA(under: root, in: scratch))
        let files = CertificateFiles(directory: scratch.file("out"))
        try files.write(try Fixtures.issue(by: authority, for: try Fixtures.identity()))
        let next = try Fixtures.issue(by: authority, for: try Fixtures.identity())
        // A leftover key with open permissions must not keep them.
        chmod(files.path("key.pem"), 0o644)
        try files.write(next)

        let contents = try files.read()
        #expect(contents.keyPEM == next.key.pkcs8PEM)
        #expect(try Fixtures.certificates(contents.certificateChainPEM) == [next.leaf, authority.signingCertificate])
        #expect(contents.rootCertificatePEM == root.rootCertificatePEM)
        #expect(Scratch.mode(of: files.path("key.pem")) == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: files.directory).count == 3, "no temporary files left")
    }

    @Test func reportsTheFileItCannotWrite() throws {
        let scratch = try Scratch()
        try scratch.write("plain-file", "")
        let authority = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let files = CertificateFiles(directory: scratch.file("plain-file"))
        let error = #expect(throws: CredentialFileError.self) {
            try files.write(try Fixtures.issue(by: authority, for: try Fixtures.identity()))
        }
        #expect(error?.path == scratch.file("plain-file"))
    }
}
