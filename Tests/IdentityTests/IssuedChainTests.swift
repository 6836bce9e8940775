import Foundation
@testable import Identity
import Testing
import XDS

/// A CA's answer in each of the forms Istio's API allows, read into the chain and the trust bundle.
@Suite struct IssuedChainTests {
    /// An intermediate CA under a root, a second root (a rotation in progress), and a leaf from the intermediate.
    struct Material {
        let leafPEM: String
        let intermediatePEM: String
        let rootPEM: String
        let nextRootPEM: String
        let key: WorkloadKey

        init() throws {
            let root = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
            let next = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
            let (certificate, signingKey) = try Fixtures.intermediate(under: root)
            let intermediate = try CertificateAuthority(signingCertificate: certificate, signingKey: signingKey, roots: root.roots)
            key = try WorkloadKey()
            let identity = try Fixtures.identity()
            let chain = try intermediate.sign(csrPEM: try WorkloadCSR(for: identity, key: key).pemEncoded, for: identity, now: Fixtures.now)
            (leafPEM, intermediatePEM, rootPEM, nextRootPEM) = (chain[0], chain[1], root.rootCertificatePEM, next.rootCertificatePEM)
        }

        func accept(_ issued: IssuedChain) throws -> WorkloadCertificate {
            try WorkloadCertificate(key: key, chainPEM: issued.chainPEM, rootCertificatePEM: issued.trustBundlePEM)
        }
    }

    @Test func istiodsFormOneCertificateAnEntryWithTheRootsLast() throws {
        let m = try Material()
        let issued = try IssuedChain(certChain: [m.leafPEM, m.intermediatePEM, m.rootPEM, m.nextRootPEM], rootCertificates: [])
        #expect(issued.chainPEM == [m.leafPEM, m.intermediatePEM])
        #expect(issued.trustBundlePEM == m.rootPEM + m.nextRootPEM)
        let certificate = try m.accept(issued)
        #expect(try Fixtures.certificates(certificate.certificateChainPEM).count == 2)
        #expect(try Fixtures.certificates(certificate.rootCertificatePEM).count == 2)
    }

    @Test func olderFormWithTheRootsConcatenatedInTheLastEntry() throws {
        let m = try Material()
        let issued = try IssuedChain(certChain: [m.leafPEM, m.intermediatePEM, m.rootPEM + m.nextRootPEM], rootCertificates: [])
        #expect(issued.chainPEM == [m.leafPEM, m.intermediatePEM])
        #expect(issued.trustBundlePEM == m.rootPEM + m.nextRootPEM)
        _ = try m.accept(issued)
    }

    @Test func newerFormWithRootCert() throws {
        let m = try Material()
        var response = Istio_V1_Auth_IstioCertificateResponse()
        response.certChain = [m.leafPEM, m.intermediatePEM]
        response.rootCert.caCert = [m.rootPEM, m.nextRootPEM]
        let issued = try IssuedChain(response)
        #expect(issued.chainPEM == [m.leafPEM, m.intermediatePEM])
        #expect(issued.trustBundlePEM == m.rootPEM + m.nextRootPEM)
        // With root_cert, a one-entry chain is complete: the leaf signed by a root.
        let root = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let key = try WorkloadKey()
        let identity = try Fixtures.identity()
        let leaf = try root.sign(csrPEM: try WorkloadCSR(for: identity, key: key).pemEncoded, for: identity, now: Fixtures.now)[0]
        let single = try IssuedChain(certChain: [leaf], rootCertificates: [root.rootCertificatePEM])
        _ = try WorkloadCertificate(key: key, chainPEM: single.chainPEM, rootCertificatePEM: single.trustBundlePEM)
    }

    /// The intermediate is not self-signed, so it stays in the chain even when it comes just before the root.
    @Test func anIntermediateIsNeverTakenForARoot() throws {
        let m = try Material()
        let issued = try IssuedChain(certChain: [m.leafPEM, m.intermediatePEM, m.rootPEM], rootCertificates: [])
        #expect(issued.chainPEM == [m.leafPEM, m.intermediatePEM])
        #expect(issued.trustBundlePEM == m.rootPEM)
    }

    /// A PEM entry without its final newline still makes a readable bundle.
    @Test func entriesWithoutANewlineStillBundle() throws {
        let m = try Material()
        let trimmed = [m.rootPEM, m.nextRootPEM].map { String($0.dropLast()) }
        let issued = try IssuedChain(certChain: [m.leafPEM, m.intermediatePEM], rootCertificates: trimmed)
        #expect(try Fixtures.certificates(issued.trustBundlePEM).count == 2)
    }

    @Test func refusesAnswersWithoutALeafOrWithoutARoot() throws {
        let m = try Material()
        #expect(throws: WorkloadCertificateError.emptyChain) { try IssuedChain(certChain: [], rootCertificates: [m.rootPEM]) }
        #expect(throws: WorkloadCertificateError.noTrustBundle) { try IssuedChain(certChain: [m.leafPEM], rootCertificates: []) }
        let error = #expect(throws: WorkloadCertificateError.self) {
            try IssuedChain(certChain: [m.leafPEM, "not a certificate", m.rootPEM], rootCertificates: [])
        }
        guard case .unreadable(let reason) = error else { Issue.record("expected unreadable, got \(String(describing: error))"); return }
        #expect(reason.contains("cert_chain entry 2"), "\(reason)")
    }
}
