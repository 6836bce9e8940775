import Configuration
#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address as RBAC compares it: 128 bits, IPv4 in the low 32 (an IPv4-mapped IPv6
/// address is the IPv4 address it maps). A value, made per check without allocating.
public struct IPAddress: Sendable, Hashable, BitwiseCopyable, CustomStringConvertible {
    let high: UInt64
    let low: UInt64
    public let isIPv6: Bool

    /// From an address's bytes in network order: 4 (IPv4) or 16 (IPv6).
    public init?(networkBytes bytes: UnsafeRawBufferPointer) {
        switch bytes.count {
        case 4:
            self.init(high: 0, low: UInt64(Self.bigEndian(bytes, 0..<4)), isIPv6: false)
        case 16:
            let high = Self.bigEndian(bytes, 0..<8), low = Self.bigEndian(bytes, 8..<16)
            // ::ffff:a.b.c.d is the IPv4 address a.b.c.d.
            if high == 0 && low >> 32 == 0xFFFF {
                self.init(high: 0, low: low & 0xFFFF_FFFF, isIPv6: false)
            } else {
                self.init(high: high, low: low, isIPv6: true)
            }
        default:
            return nil
        }
    }

    /// From its text form (`10.1.2.3`, `fd00::1`).
    public init?(_ text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            guard let address = withUnsafeBytes(of: &v4, { IPAddress(networkBytes: $0) }) else { return nil }
            self = address
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1,
              let address = withUnsafeBytes(of: &v6, { IPAddress(networkBytes: $0) }) else { return nil }
        self = address
    }

    init(high: UInt64, low: UInt64, isIPv6: Bool) {
        self.high = high
        self.low = low
        self.isIPv6 = isIPv6
    }

    private static func bigEndian(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> UInt64 {
        range.reduce(0) { $0 << 8 | UInt64(bytes[$1]) }
    }

    public var description: String {
        if !isIPv6 {
            return (0..<4).map { String((low >> (8 * (3 - $0))) & 0xFF) }.joined(separator: ".")
        }
        let groups = (0..<8).map { index in
            String((index < 4 ? high >> (16 * (3 - index)) : low >> (16 * (7 - index))) & 0xFFFF, radix: 16)
        }
        return groups.joined(separator: ":")
    }
}
