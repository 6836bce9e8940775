import DNS
import Testing

/// Property tests: thousands of random and mutated byte strings never crash the decoder; whatever decodes
/// re-encodes to a message that decodes to the same value.
@Suite struct DNSFuzzTests {
    /// SplitMix64: a small deterministic generator, so a failure names a seed that reproduces it.
    struct SplitMix64 {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
        mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
    }

    /// Decodes; when it succeeds, the value must survive encode → decode unchanged.
    static func check(_ bytes: [UInt8]) throws -> Bool {
        let message: DNSMessage
        do {
            message = try DNSMessage(decoding: bytes)
        } catch {
            #expect(!error.field.isEmpty && !error.reason.isEmpty)
            return false
        }
        let again = try DNSMessage(decoding: try message.encoded())
        #expect(again == message, "bytes \(bytes)")
        return true
    }

    @Test func randomBytesAreRefusedOrRoundTrip() throws {
        var random = SplitMix64(state: 19)
        var decoded = 0
        for round in 0..<5000 {
            // Every fourth input is a header with one question of random labels: most of those decode.
            let length = round % 4 == 0 ? 12 + 17 + 4 : random.below(96)
            var bytes = (0..<length).map { _ in random.byte() }
            if round % 4 == 0 {
                var offset = 12
                while offset < 28 {
                    let label = min(28 - offset - 1, 1 + random.below(6))
                    bytes[offset] = UInt8(label)
                    offset += 1 + label
                }
                bytes[28] = 0
            }
            // Small counts make some of them plausible messages.
            if bytes.count >= 12 {
                for index in stride(from: 4, to: 12, by: 2) { bytes[index] = 0; bytes[index + 1] = UInt8(random.below(3)) }
                if round % 4 == 0 { bytes[5] = 1; bytes[7] = 0; bytes[9] = 0; bytes[11] = 0 }
            }
            if try Self.check(bytes) { decoded += 1 }
        }
        #expect(decoded > 0)
    }

    @Test func mutationsOfRealMessagesAreRefusedOrRoundTrip() throws {
        var random = SplitMix64(state: 1337)
        let seeds = [try DNSMessageTests.sample.encoded(),
                     try DNSMessage.query(id: 7, name: DNSName("payments.default.svc.cluster.local"), type: .aaaa).encoded()]
        var decoded = 0
        var refused = 0
        for round in 0..<10000 {
            var bytes = seeds[round % seeds.count]
            for _ in 0..<(1 + random.below(4)) {
                switch random.below(4) {
                case 0: bytes[random.below(bytes.count)] = random.byte()
                case 1: bytes[random.below(bytes.count)] ^= UInt8(1 << random.below(8))
                case 2: bytes.removeLast(random.below(min(bytes.count, 8)))
                default:
                    // Point somewhere at random: compression pointers are where decoders loop or overrun.
                    let at = random.below(bytes.count - 1)
                    bytes[at] = 0xC0 | UInt8(random.below(4))
                    bytes[at + 1] = random.byte()
                }
            }
            if try Self.check(bytes) { decoded += 1 } else { refused += 1 }
        }
        #expect(decoded > 100)
        #expect(refused > 100)
    }
}
