import Foundation
import Identity
import Testing

@Suite struct WorkloadCertificateTests {
    @Test func refusesAChainFromAnotherRoot() throws {
        let issuer = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let stranger = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let key = try WorkloadKey()
        let identity = try Fixtures.identity()
        let chain = try issuer.sign(csrPEM: try WorkloadCSR(for: identity, key: key).pemEncoded, for: identity, now: Fixtures.now)
        let error = #expect(throws: WorkloadCertificateError.self) {
            try WorkloadCertificate(key: key, chainPEM: Array(chain.dropLast()), rootCertificatePEM: stranger.rootCertificatePEM)
        }
        guard case .untrusted(let reason) = error else { Issue.record("expected untrusted, got \(String(describing: error))"); return }
        #expect(reason.contains("not signed by the trusted root"))
        // The issuer's root, even though the answer carried it, is not trusted unless it is the one given.
        #expect(throws: WorkloadCertificateError.self) {
            try WorkloadCertificate(key: key, chainPEM: chain, rootCertificatePEM: stranger.rootCertificatePEM)
        }
    }

    @Test func refusesAChainForAnotherKey() throws {
        let authority = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let issued = try Fixtures.issue(by: authority, for: try Fixtures.identity())
        let error = #expect(throws: WorkloadCertificateError.self) {
            try WorkloadCertificate(key: try WorkloadKey(), chainPEM: [issued.certificateChainPEM],
                                    rootCertificatePEM: authority.rootCertificatePEM)
        }
        guard case .keyMismatch = error else { Issue.record("expected keyMismatch, got \(String(describing: error))"); return }
    }

    @Test func refusesTheRootAsALeaf() throws {
        let authority = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        #expect(throws: WorkloadCertificateError.emptyChain) {
            try WorkloadCertificate(key: try WorkloadKey(), chainPEM: [authority.rootCertificatePEM],
                                    rootCertificatePEM: authority.rootCertificatePEM)
        }
    }

    @Test func rotatesAtTheGraceRatioWithJitter() throws {
        let authority = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let certificate = try Fixtures.issue(by: authority, for: try Fixtures.identity())
        let lifetime = 24 * 3600 + 60.0  // notBefore is a minute early
        #expect(certificate.lifetime == .seconds(lifetime))
        let halfway = certificate.notAfter.addingTimeInterval(-0.5 * lifetime)
        #expect(same(certificate.rotationTime(graceRatio: 0.5), halfway))
        #expect(same(certificate.rotationTime(graceRatio: 0.5, jitter: 0.01), certificate.notAfter.addingTimeInterval(-0.51 * lifetime)))
        #expect(same(certificate.rotationTime(graceRatio: 0.5, jitter: -0.01), certificate.notAfter.addingTimeInterval(-0.49 * lifetime)))
        // Istio's ratio is what is left: 0.2 rotates at 80 % of the lifetime.
        #expect(same(certificate.rotationTime(graceRatio: 0.2), certificate.notBefore.addingTimeInterval(0.8 * lifetime)))
        #expect(same(certificate.rotationTime(graceRatio: 0.9, jitter: 0.5), certificate.notBefore))
        #expect(same(certificate.rotationTime(graceRatio: 0.1, jitter: -0.5), certificate.notAfter))

        var generator = SplitMix64(seed: 7)
        var seen: Set<Date> = []
        for _ in 0..<50 {
            let time = certificate.rotationTime(graceRatio: 0.5, maximumJitter: 0.01, using: &generator)
            #expect(abs(time.timeIntervalSince(halfway)) <= 0.01 * lifetime)
            seen.insert(time)
        }
        #expect(seen.count > 1, "the jitter spreads rotation times")
        var replay = SplitMix64(seed: 7)
        var again = SplitMix64(seed: 7)
        #expect(certificate.rotationTime(graceRatio: 0.5, maximumJitter: 0.01, using: &replay)
                == certificate.rotationTime(graceRatio: 0.5, maximumJitter: 0.01, using: &again))
    }

    @Test func knowsWhenItHasExpired() throws {
        let authority = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let certificate = try Fixtures.issue(by: authority, for: try Fixtures.identity(), lifetime: .seconds(3600))
        #expect(certificate.isValid(at: Fixtures.now))
        #expect(certificate.isValid(at: certificate.notAfter))
        #expect(!certificate.isValid(at: certificate.notAfter.addingTimeInterval(1)))
        #expect(!certificate.isValid(at: certificate.notBefore.addingTimeInterval(-1)))
        #expect(certificate.remaining(at: Fixtures.now) == .seconds(3600))
        #expect(certificate.remaining(at: Fixtures.now.addingTimeInterval(7200)) == .zero)
    }

    @Test func describesItselfWithoutTheKey() throws {
        let authority = try CertificateAuthority.generateRoot(trustDomain: "cluster.local", now: Fixtures.now)
        let certificate = try Fixtures.issue(by: authority, for: try Fixtures.identity())
        let text = String(describing: certificate)
        #expect(text.contains("spiffe://cluster.local/ns/shop/sa/payments"))
        for line in certificate.key.pkcs8PEM.split(separator: "\n").dropFirst().prefix(2) { #expect(!text.contains(line)) }
    }
}

/// Equal to the millisecond: dates go through floating-point seconds.
func same(_ a: Date, _ b: Date) -> Bool {
    abs(a.timeIntervalSince(b)) < 0.001
}

/// A small seeded generator, so the jitter draws are repeatable.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
