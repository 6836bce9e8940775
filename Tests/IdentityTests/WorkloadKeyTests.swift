import Identity
import Testing

@Suite struct WorkloadKeyTests {
    @Test func anECDSAKeyRoundTripsThroughPKCS8() throws {
        let key = try WorkloadKey()
        #expect(key.algorithm == .ecdsaP256)
        #expect(key.pkcs8PEM.hasPrefix("-----BEGIN PRIVATE KEY-----\n"))
        let again = try WorkloadKey(pemEncoded: key.pkcs8PEM)
        #expect(again.publicKey == key.publicKey)
        #expect(again.algorithm == .ecdsaP256)
    }

    @Test func anRSAKeyRoundTripsThroughPKCS8() throws {
        let key = try WorkloadKey(generating: .rsa(bits: KeyAlgorithm.defaultRSABits))
        #expect(key.algorithm == .rsa(bits: 2048))
        #expect(key.pkcs8PEM.hasPrefix("-----BEGIN PRIVATE KEY-----\n"))
        let again = try WorkloadKey(pemEncoded: key.pkcs8PEM)
        #expect(again.publicKey == key.publicKey)
        #expect(again.algorithm == .rsa(bits: 2048))
    }

    @Test(arguments: [1024, 2000, 3000, 8192])
    func refusesRSASizesOutsideTheRange(bits: Int) {
        #expect(throws: WorkloadKeyError.unsupportedRSASize(bits)) { try WorkloadKey(generating: .rsa(bits: bits)) }
    }

    @Test func refusesWhatIsNotAPrivateKey() throws {
        let root = try CertificateAuthority.generateRoot(trustDomain: "cluster.local")
        let error = #expect(throws: WorkloadKeyError.self) { try WorkloadKey(pemEncoded: root.rootCertificatePEM) }
        #expect(error?.description.contains("\"CERTIFICATE\"") == true)
        #expect(throws: WorkloadKeyError.self) { try WorkloadKey(pemEncoded: "not a key") }
    }

    @Test func neverShowsKeyMaterial() throws {
        for key in [try WorkloadKey(), try WorkloadKey(generating: .rsa(bits: 2048))] {
            var dumped = ""
            dump(key, to: &dumped)
            let shown = [String(describing: key), String(reflecting: key), "\(key)", dumped]
            // Any line of the key's base64 body would do; take the first two.
            let body = key.pkcs8PEM.split(separator: "\n").dropFirst().prefix(2).map(String.init)
            for text in shown {
                #expect(text.hasPrefix("WorkloadKey") || text.contains("WorkloadKey"))
                for line in body { #expect(!text.contains(line)) }
            }
            #expect(String(describing: key) == "WorkloadKey(\(key.algorithm))")
        }
    }
}
