#if canImport(Glibc)
import Glibc
#endif

/// An IP address or CIDR as ServiceEntry `addresses` and endpoint `address` give them, normalized
/// (`10.0.0.7`, `2001:db8::/32`).
struct IPNetwork: Sendable, Equatable {
    /// The address in its canonical text form.
    var address: String
    var prefixLength: Int
    var isIPv6: Bool

    var isSingleAddress: Bool { prefixLength == (isIPv6 ? 128 : 32) }

    init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let host = String(parts[0])
        var buffer = [UInt8](repeating: 0, count: 16)
        if inet_pton(AF_INET, host, &buffer) == 1 {
            isIPv6 = false
        } else if inet_pton(AF_INET6, host, &buffer) == 1 {
            isIPv6 = true
        } else {
            return nil
        }
        let maximum = isIPv6 ? 128 : 32
        if parts.count == 2 {
            guard let length = Int(parts[1]), (0...maximum).contains(length) else { return nil }
            prefixLength = length
        } else {
            prefixLength = maximum
        }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(isIPv6 ? AF_INET6 : AF_INET, buffer, &text, socklen_t(text.count)) != nil else { return nil }
        address = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension IPNetwork {
    /// The address's bytes (4 or 16).
    var bytes: [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 16)
        _ = inet_pton(isIPv6 ? AF_INET6 : AF_INET, address, &buffer)
        return Array(buffer.prefix(isIPv6 ? 16 : 4))
    }

    /// Whether `other`'s address lies in this range (same family, the first `prefixLength` bits equal).
    func contains(_ other: IPNetwork) -> Bool {
        guard other.isIPv6 == isIPv6 else { return false }
        let (mine, theirs) = (bytes, other.bytes)
        var bits = prefixLength
        for index in mine.indices where bits > 0 {
            let mask: UInt8 = bits >= 8 ? 0xFF : ~(0xFF >> UInt8(bits))
            if mine[index] & mask != theirs[index] & mask { return false }
            bits -= 8
        }
        return true
    }
}
