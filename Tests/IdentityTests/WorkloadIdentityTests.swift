import Identity
import Testing

@Suite struct WorkloadIdentityTests {
    @Test func roundTripsThroughItsSPIFFEID() throws {
        let identity = try WorkloadIdentity(trustDomain: "cluster.local", namespace: "shop", serviceAccount: "payments")
        #expect(identity.spiffeID == "spiffe://cluster.local/ns/shop/sa/payments")
        #expect(try WorkloadIdentity(spiffeID: identity.spiffeID) == identity)
    }

    @Test func refusesWhatIsNotAWorkloadID() {
        #expect(throws: WorkloadIdentityError.notSPIFFE("https://cluster.local/ns/a/sa/b")) {
            try WorkloadIdentity(spiffeID: "https://cluster.local/ns/a/sa/b")
        }
        #expect(throws: WorkloadIdentityError.notWorkload("spiffe://cluster.local/ns/a")) {
            try WorkloadIdentity(spiffeID: "spiffe://cluster.local/ns/a")
        }
        #expect(throws: WorkloadIdentityError.badName("namespace", "a/b")) {
            try WorkloadIdentity(trustDomain: "cluster.local", namespace: "a/b", serviceAccount: "x")
        }
    }
}
