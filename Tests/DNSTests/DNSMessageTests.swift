import DNS
import Testing

/// The wire format: round trips, compression, and a refusal naming the field for every malformed input.
@Suite struct DNSMessageTests {
    static func name(_ text: String) -> DNSName { try! DNSName(text) }

    static let sample: DNSMessage = {
        var header = DNSHeader(id: 0xBEEF, isResponse: true, isAuthoritative: true, recursionDesired: true,
                               recursionAvailable: true)
        header.responseCode = .noError
        return DNSMessage(
            header: header,
            questions: [DNSQuestion(name: name("www.Example.com"), type: .a)],
            answers: [
                DNSResourceRecord(name: name("www.example.com"), ttl: 300, data: .cname(name("edge.example.com"))),
                DNSResourceRecord(name: name("edge.example.com"), ttl: 60, data: .a(HostAddress("192.0.2.10")!)),
                DNSResourceRecord(name: name("edge.example.com"), ttl: 60, data: .aaaa(HostAddress("2001:db8::10")!)),
            ],
            authorities: [
                DNSResourceRecord(name: name("example.com"), ttl: 3600, data: .ns(name("ns1.example.com"))),
                DNSResourceRecord(name: name("example.com"), ttl: 3600, data: .soa(DNSStartOfAuthority(
                    primaryServer: name("ns1.example.com"), responsible: name("hostmaster.example.com"),
                    serial: 2024010101, refresh: 7200, retry: 900, expire: 1209600, minimum: 30))),
            ],
            additionals: [
                DNSResourceRecord(name: name("example.com"), ttl: 10, data: .mx(preference: 10, exchange: name("mail.example.com"))),
                DNSResourceRecord(name: name("example.com"), ttl: 10, data: .other(type: .txt, data: [5] + Array("hello".utf8))),
                DNSResourceRecord(name: .root, recordClass: DNSRecordClass(rawValue: 1232), ttl: 0,
                                  data: .opt([0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8])),
            ])
    }()

    @Test func roundTripKeepsEverySection() throws {
        let bytes = try Self.sample.encoded()
        let decoded = try DNSMessage(decoding: bytes)
        #expect(decoded == Self.sample)
        #expect(decoded.header.id == 0xBEEF)
        #expect(decoded.header.isAuthoritative && decoded.header.recursionAvailable)
        #expect(decoded.acceptedUDPPayloadSize == 1232)
        #expect(try decoded.encoded() == bytes)
    }

    @Test func namesAreCompressedOnEncode() throws {
        let bytes = try Self.sample.encoded()
        var uncompressed = 12
        for question in Self.sample.questions { uncompressed += question.name.wireBytes.count + 4 }
        // "example.com" appears a dozen times; each repeat costs two bytes, not thirteen.
        #expect(bytes.count < 230)
        #expect(bytes.contains(0xC0))
        #expect(uncompressed > 0)
    }

    @Test func headerFlagsKeepEveryBit() {
        for flags in [UInt16(0x0000), 0xFFFF, 0x8180, 0x0120, 0x8583, 0x7800] {
            #expect(DNSHeader(id: 1, flags: flags).flags == flags)
        }
    }

    @Test func namesCompareWithoutCase() throws {
        #expect(try DNSName("Payments.Default.svc.cluster.local") == DNSName("payments.default.svc.cluster.local."))
        #expect(Set([try DNSName("A.example"), try DNSName("a.EXAMPLE")]).count == 1)
        #expect(try DNSName("a.b.example").isSubdomain(of: DNSName("B.example")))
        #expect(try !DNSName("ab.example").isSubdomain(of: DNSName("b.example")))
        #expect(try DNSName("payments").appending(DNSName("default.svc.cluster.local")).text == "payments.default.svc.cluster.local")
        #expect(try DNSName("a\\.b.example").labels.count == 2)
        #expect(try DNSName("a\\.b.example").description == "a\\.b.example.")
        #expect(try DNSName("\\065bc.example").text == "Abc.example")
    }

    @Test func invalidNamesAreRefusedByName() {
        #expect(throws: DNSWireError.self) { try DNSName("a..b") }
        #expect(throws: DNSWireError.self) { try DNSName("") }
        #expect(throws: DNSWireError.self) { try DNSName(String(repeating: "x", count: 64) + ".example") }
        #expect(throws: DNSWireError.self) { try DNSName(Array(repeating: String(repeating: "x", count: 60), count: 5).joined(separator: ".")) }
        #expect(throws: DNSWireError.self) { try DNSName("bad\\9") }
    }

    /// A query header with one question for `www.example.com A` followed by `extra`.
    static func message(answerCount: UInt16 = 0, additionalCount: UInt16 = 0, _ body: [UInt8]) -> [UInt8] {
        [0x12, 0x34, 0x81, 0x80, 0, 1, UInt8(answerCount >> 8), UInt8(answerCount & 0xFF), 0, 0,
         UInt8(additionalCount >> 8), UInt8(additionalCount & 0xFF)]
            + [3] + Array("www".utf8) + [7] + Array("example".utf8) + [3] + Array("com".utf8) + [0, 0, 1, 0, 1]
            + body
    }

    static func refusal(_ bytes: [UInt8]) -> DNSWireError? {
        do {
            _ = try DNSMessage(decoding: bytes)
            return nil
        } catch {
            return error
        }
    }

    @Test func malformedInputsAreRefusedNamingTheField() throws {
        // Header too short.
        #expect(Self.refusal([0, 1, 2])?.field == "header")
        // Counts the remaining bytes cannot hold.
        #expect(Self.refusal([0, 1, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0])?.field == "header")
        // A pointer to itself (a loop).
        let loop = Self.message(answerCount: 1, [0xC0, 33, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1])
        #expect(Self.refusal(loop)?.field == "answer[0].name")
        #expect(Self.refusal(loop)?.reason.contains("backwards") == true)
        // A pointer forwards.
        let forward = Self.message(answerCount: 1, [0xC0, 40, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1])
        #expect(Self.refusal(forward)?.field == "answer[0].name")
        // Two pointers pointing at each other.
        var pair = Self.message(answerCount: 1, [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1])
        pair[12] = 0xC0
        pair[13] = 29
        #expect(Self.refusal(pair)?.field == "question[0].name")
        // A record data of the wrong length.
        let shortA = Self.message(answerCount: 1, [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 3, 192, 0, 2])
        #expect(Self.refusal(shortA)?.field == "answer[0].rdata")
        // Data length past the end.
        let long = Self.message(answerCount: 1, [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 9, 192, 0, 2, 1])
        #expect(Self.refusal(long)?.field == "answer[0].rdlength")
        // A CNAME whose name runs past its data.
        let cname = Self.message(answerCount: 1, [0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 1, 0x61, 0])
        #expect(Self.refusal(cname)?.field == "answer[0].rdata")
        // Reserved label type.
        let reserved = Self.message(answerCount: 1, [0x80, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1])
        #expect(Self.refusal(reserved)?.reason.contains("label type") == true)
        // Two OPT records.
        let opt: [UInt8] = [0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 0]
        #expect(Self.refusal(Self.message(additionalCount: 2, opt + opt))?.reason == "a second OPT record")
        // An EDNS option longer than its record.
        let badOption: [UInt8] = [0, 0, 41, 4, 0xD0, 0, 0, 0, 0, 0, 4, 0, 10, 0, 8]
        #expect(Self.refusal(Self.message(additionalCount: 1, badOption))?.field == "additional[0].rdata")
        // Bytes after the last record.
        #expect(Self.refusal(Self.message([1, 2, 3]))?.field == "message")
        // The valid base decodes.
        #expect(Self.refusal(Self.message([])) == nil)
    }

    @Test func encodingRefusesAnAddressOfTheWrongFamily() {
        let message = DNSMessage(header: DNSHeader(), answers: [
            DNSResourceRecord(name: .root, ttl: 1, data: .a(HostAddress("2001:db8::1")!)),
        ])
        #expect(throws: DNSWireError.self) { try message.encoded() }
    }

    @Test func truncationKeepsTheQuestionAndOPT() throws {
        var message = Self.sample
        message.answers += (0..<60).map { index in
            DNSResourceRecord(name: Self.name("edge.example.com"), ttl: 60, data: .a(.ipv4(0xC000_0200 + UInt32(index))))
        }
        let cut = try DNSMessage(decoding: try message.encoded(limit: 512))
        #expect(cut.header.isTruncated)
        #expect(cut.questions == message.questions)
        #expect(cut.answers.isEmpty)
        #expect(cut.optRecord != nil)
        #expect(try message.encoded(limit: 65535).count > 512)
    }

    @Test func addressesPrintAndParse() {
        #expect(HostAddress("192.0.2.1")?.description == "192.0.2.1")
        #expect(HostAddress("2001:DB8::1")?.description == "2001:db8::1")
        #expect(HostAddress("240.240.0.1")?.bytes == [240, 240, 0, 1])
        #expect(HostAddress("fe80::1%eth0") == nil)
        #expect(HostAddress("300.1.1.1") == nil)
    }
}
