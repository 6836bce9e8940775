import DNS
import Testing

/// The proxy's name table and its decisions: Kubernetes short names, search-domain CNAMEs, wildcards,
/// NODATA for known names, forwarding for the rest, SERVFAIL before the first table.
@Suite struct DNSNameTableTests {
    static func name(_ text: String) -> DNSName { try! DNSName(text) }

    static let table = DNSNameTable(
        hosts: [
            "payments.default.svc.cluster.local": .init(addresses: [HostAddress("198.51.100.200")!], registry: "Kubernetes",
                                                        shortName: "payments", namespace: "default"),
            "ledger.finance.svc.cluster.local": .init(addresses: [HostAddress("198.51.100.201")!, HostAddress("2001:db8::201")!],
                                                      registry: "Kubernetes", shortName: "ledger", namespace: "finance"),
            "auth.external-service.com": .init(addresses: [HostAddress("240.240.0.1")!]),
            "*.wild.example": .init(addresses: [HostAddress("192.0.2.50")!, HostAddress("192.0.2.51")!]),
            "empty.example": .init(addresses: []),
        ],
        proxyNamespace: "default", proxyDomain: "default.svc.cluster.local",
        searchDomains: ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"])

    static func addresses(_ text: String, _ type: DNSRecordType = .a) -> [String]? {
        DNSNameTableTests.table.answers(for: name(text), type: type)?.map { "\($0.name) \($0.type) \($0.data)" }
    }

    @Test func kubernetesHostsAnswerForTheirShortForms() {
        #expect(Self.addresses("payments.default.svc.cluster.local") == ["payments.default.svc.cluster.local. A 198.51.100.200"])
        #expect(Self.addresses("payments") == ["payments. A 198.51.100.200"])
        #expect(Self.addresses("PAYMENTS.default") == ["PAYMENTS.default. A 198.51.100.200"])
        #expect(Self.addresses("payments.default.svc") == ["payments.default.svc. A 198.51.100.200"])
        // Another namespace's service: NAME.NS but not NAME alone.
        #expect(Self.addresses("ledger.finance") == ["ledger.finance. A 198.51.100.201"])
        #expect(Self.addresses("ledger") == nil)
        #expect(Self.addresses("ledger.finance", .aaaa) == ["ledger.finance. AAAA 2001:db8::201"])
    }

    @Test func searchExpansionsAnswerWithACNAME() {
        #expect(Self.addresses("ledger.finance.default.svc.cluster.local")
            == ["ledger.finance.default.svc.cluster.local. CNAME ledger.finance.", "ledger.finance. A 198.51.100.201"])
        #expect(Self.addresses("auth.external-service.com.default.svc.cluster.local")
            == ["auth.external-service.com.default.svc.cluster.local. CNAME auth.external-service.com.",
                "auth.external-service.com. A 240.240.0.1"])
        // payments.default.svc.cluster.local is a name of its own, not payments + the search domain's CNAME.
        #expect(Self.addresses("payments.default.svc.cluster.local")?.count == 1)
    }

    @Test func wildcardsAnswerWithTheQuestionsName() {
        #expect(Self.addresses("a.b.wild.example") == ["a.b.wild.example. A 192.0.2.50", "a.b.wild.example. A 192.0.2.51"])
        #expect(Self.addresses("wild.example") == nil)
    }

    @Test func knownNamesWithoutTheTypeAreNODATAAndOthersForward() {
        #expect(Self.addresses("payments", .aaaa) == [])
        #expect(Self.addresses("payments", .txt) == nil)
        #expect(Self.addresses("www.example.org") == nil)
        #expect(Self.table.refusals == ["empty.example: no addresses"])
    }

    static func decide(_ query: DNSMessage, table: DNSNameTable? = DNSNameTableTests.table, overTCP: Bool = false) throws -> DNSProxyDecision {
        let bytes = try query.encoded()
        return bytes.withUnsafeBytes { DNSProxyResponder.respond(to: $0, table: table, overTCP: overTCP) }
    }

    @Test func responderAnswersForwardsAndFails() throws {
        let query = DNSMessage.query(id: 77, name: Self.name("payments"), type: .a)
        guard case .answer(let bytes) = try Self.decide(query) else { Issue.record("not answered"); return }
        let response = try DNSMessage(decoding: bytes)
        #expect(response.header.id == 77 && response.header.isResponse && response.header.isAuthoritative)
        #expect(response.questions == query.questions)
        #expect(response.answers.map(\.ttl) == [30])
        #expect(response.optRecord != nil)

        #expect(try Self.decide(DNSMessage.query(id: 1, name: Self.name("outside.example"), type: .a, udpPayloadSize: 4096))
            == .forward(limit: 4096))
        #expect(try Self.decide(DNSMessage.query(id: 1, name: Self.name("outside.example"), type: .a, udpPayloadSize: nil))
            == .forward(limit: 512))
        #expect(try Self.decide(DNSMessage.query(id: 1, name: Self.name("outside.example"), type: .a), overTCP: true)
            == .forward(limit: 65535))

        guard case .answer(let early) = try Self.decide(query, table: nil) else { Issue.record("not answered"); return }
        #expect(try DNSMessage(decoding: early).header.responseCode == .serverFailure)

        let garbage: [UInt8] = [0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63]
        guard case .answer(let refusal) = garbage.withUnsafeBytes({ DNSProxyResponder.respond(to: $0, table: Self.table, overTCP: false) })
        else { Issue.record("garbage not refused"); return }
        #expect(try DNSMessage(decoding: refusal).header.responseCode == .formatError)
        #expect([UInt8](repeating: 0, count: 5).withUnsafeBytes { DNSProxyResponder.respond(to: $0, table: Self.table, overTCP: false) } == .drop)
    }
}
