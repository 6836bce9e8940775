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
