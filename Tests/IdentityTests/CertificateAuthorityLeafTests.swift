import Foundation
@testable import Identity
import Testing
import X509

/// What every certificate a CA issues shares, worked out once when the CA is made: issuer, authority
/// key identifier, extensions in Istio's order, and the chain that follows the leaf.
@Suite struct CertificateAuthorityLeafTests {
    /// Signs for two identities; checks each leaf, and returns the chains with the leaves left out.
    func expectLeaves(from authority: CertificateAuthority, authorityKeyID: ArraySlice<UInt8>?) throws -> Set<[String]> {
        var rest: Set<[String]> = []
        for account in ["payments", "ledger"] {
            let identity = try Fixtures.identity("shop", account)
            let key = try WorkloadKey()
            let chain = try authority.sign(csrPEM: try WorkloadCSR(for: identity, key: key).pemEncoded, for: identity, now: Fixtures.now)
            rest.insert(Array(chain.dropFirst()))
            let leaf = try WorkloadCertificate(key: key, chainPEM: chain, rootCertificatePEM: authority.rootCertificatePEM).leaf
            #expect(leaf.issuer == authority.signingCertificate.subject)
            #expect(authority.signingCertificate.publicKey.isValidSignature(leaf.signature, for: leaf))
            #expect(try leaf.extensions.authorityKeyIdentifier?.keyIdentifier == authorityKeyID)
            // basicConstraints, keyUsage, extendedKeyUsage, authorityKeyIdentifier, subjectAltName; critical or not.
            let expected = ["2.5.29.19 critical", "2.5.29.15 critical", "2.5.29.37"]
                + (authorityKeyID == nil ? [] : ["2.5.29.35"]) + ["2.5.29.17 critical"]
            #expect(leaf.extensions.map { "\($0.oid)" + ($0.critical ? " critical" : "") } == expected)
            #expect(try leaf.extensions.subjectAlternativeNames == SubjectAlternativeNames([.uniformResourceIdentifier(identity.spiffeID)]))
        }
        return rest
    }

    @Test func rootAndIntermediateLeavesNameTheirIssuerAndShareTheChainAboveThem() throws {
        let scratch = try Scratch()
        let root = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let intermediate = try CertificateAuthority(directory: try Fixtures.pluggedInCA(under: root, in: scratch))
        for authority in [root, intermediate] {
            let keyID = try #require(try authority.signingCertificate.extensions.subjectKeyIdentifier).keyIdentifier
            #expect(try expectLeaves(from: authority, authorityKeyID: keyID) == [authority.issuingChainPEM + [authority.rootCertificatePEM]])
        }
        #expect(intermediate.issuingChainPEM.count == 1)
    }

    @Test func aSigningCertificateWithoutSubjectKeyIdentifierGivesLeavesWithoutAuthorityKeyIdentifier() throws {
        let key = try WorkloadKey()
        let name = try DistinguishedName { OrganizationName("cluster.local"); CommonName("root without SKI") }
        let root = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: Fixtures.now.addingTimeInterval(-3600), notValidAfter: Fixtures.now.addingTimeInterval(86400 * 30),
            issuer: name, subject: name,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: key.certificateKey)
        let authority = try CertificateAuthority(signingCertificate: root, signingKey: key, roots: [root])
        #expect(try expectLeaves(from: authority, authorityKeyID: nil) == [[authority.rootCertificatePEM]])
    }

    @Test func servingCertificatesAreSignedWithTheSameIssuerAndKey() throws {
        let scratch = try Scratch()
        let root = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let intermediate = try CertificateAuthority(directory: try Fixtures.pluggedInCA(under: root, in: scratch))
        let (chain, _) = try intermediate.issueServingCertificate(for: ["istiod.istio-system.svc", "127.0.0.1"], now: Fixtures.now)
        #expect(Array(chain.dropFirst()) == intermediate.issuingChainPEM)
        let leaf = try #require(try Fixtures.certificates(chain[0]).first)
        #expect(leaf.issuer == intermediate.signingCertificate.subject)
        #expect(intermediate.signingCertificate.publicKey.isValidSignature(leaf.signature, for: leaf))
    }

    @Test func theTrustDomainIsCheckedAndLowercasedInOnePlace() throws {
        #expect(try WorkloadIdentity.checkTrustDomain("Example.ORG") == "example.org")
        #expect(try Fixtures.identity(trustDomain: "Example.ORG").trustDomain == "example.org")
        #expect(throws: WorkloadIdentityError.badName("trust domain", "cluster/local")) { try WorkloadIdentity.checkTrustDomain("cluster/local") }
        #expect(throws: WorkloadIdentityError.badName("trust domain", "")) { try Fixtures.identity(trustDomain: "") }
        let root = try CertificateAuthority.generateRoot(trustDomain: "Example.ORG", now: Fixtures.now)
        #expect(root.signingCertificate.subject == (try DistinguishedName { OrganizationName("example.org"); CommonName("Capstan root CA") }))
    }
}
