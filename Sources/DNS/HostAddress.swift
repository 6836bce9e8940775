#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An IPv4 or IPv6 address as DNS carries it (A and AAAA data), held inline without allocation.
public enum HostAddress: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The four bytes in network order, first byte in the high bits.
    case ipv4(UInt32)
    /// The sixteen bytes in network order: the first eight in `high`, first byte in the high bits.
    case ipv6(high: UInt64, low: UInt64)

    /// Parses the conventional text forms (`192.0.2.1`, `2001:db8::1`); a zone suffix (`%eth0`) is refused.
    public init?(_ text: some StringProtocol) {
        let text = String(text)
        if !text.contains(":") {
            var v4 = in_addr()
            guard inet_pton(AF_INET, text, &v4) == 1 else { return nil }
            self = .ipv4(UInt32(bigEndian: v4.s_addr))
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        self = withUnsafeBytes(of: v6) { HostAddress(ipv6Bytes: $0) }
    }

    /// Reads 16 bytes of an AAAA record.
    init(ipv6Bytes bytes: UnsafeRawBufferPointer) {
        var high: UInt64 = 0
        var low: UInt64 = 0
        for index in 0..<8 { high = high << 8 | UInt64(bytes[index]) }
        for index in 8..<16 { low = low << 8 | UInt64(bytes[index]) }
        self = .ipv6(high: high, low: low)
    }

    public var isIPv4: Bool {
        if case .ipv4 = self { return true }
        return false
    }

    /// The record type that carries this address: A for IPv4, AAAA for IPv6.
    public var recordType: DNSRecordType { isIPv4 ? .a : .aaaa }

    /// Network-order bytes: 4 for IPv4, 16 for IPv6.
    public var bytes: [UInt8] {
        var result: [UInt8] = []
        appendBytes(to: &result)
        return result
    }

    func appendBytes(to output: inout [UInt8]) {
        switch self {
        case .ipv4(let value):
            for shift in stride(from: 24, through: 0, by: -8) { output.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
        case .ipv6(let high, let low):
            for shift in stride(from: 56, through: 0, by: -8) { output.append(UInt8(truncatingIfNeeded: high >> UInt64(shift))) }
            for shift in stride(from: 56, through: 0, by: -8) { output.append(UInt8(truncatingIfNeeded: low >> UInt64(shift))) }
        }
    }

    /// The conventional text form (`inet_ntop`).
    public var description: String {
        let raw = bytes
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        raw.withUnsafeBytes { pointer in
            _ = inet_ntop(isIPv4 ? AF_INET : AF_INET6, pointer.baseAddress, &buffer, socklen_t(buffer.count))
        }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func < (lhs: HostAddress, rhs: HostAddress) -> Bool {
        switch (lhs, rhs) {
        case (.ipv4(let left), .ipv4(let right)): return left < right
        case (.ipv4, .ipv6): return true
        case (.ipv6, .ipv4): return false
        case (.ipv6(let lh, let ll), .ipv6(let rh, let rl)): return (lh, ll) < (rh, rl)
        }
    }
}
