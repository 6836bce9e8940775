#if canImport(Glibc)
import Glibc
#endif


/// An IPv4 or IPv6 address, kept as its network-order bytes.
public struct IPAddress: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let family: AddressFamily
    /// 4 bytes for IPv4, 16 for IPv6.
    public let bytes: [UInt8]

    public init?(_ text: some StringProtocol) {
        let text = String(text)
        var v4 = in_addr()
        if !text.contains(":"), inet_pton(AF_INET, text, &v4) == 1 {
            family = .ipv4
            bytes = withUnsafeBytes(of: v4) { Array($0) }
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            family = .ipv6
            bytes = withUnsafeBytes(of: v6) { Array($0) }
            return
        }
        return nil
    }

    public init(family: AddressFamily, bytes: [UInt8]) {
        precondition(bytes.count == (family == .ipv4 ? 4 : 16))
        self.family = family
        self.bytes = bytes
    }

    public static let loopbackV4 = IPAddress("127.0.0.1")!
    public static let loopbackV6 = IPAddress("::1")!
    /// The source the proxy uses for inbound passthrough connections (Istio's `InboundPassthroughClusterIpv4`).
    public static let inboundPassthroughV4 = IPAddress("127.0.0.6")!
    public static let inboundPassthroughV6 = IPAddress("::6")!

    public var bitCount: Int { bytes.count * 8 }

    public var isLoopback: Bool {
        family == .ipv4 ? bytes[0] == 127 : self == .loopbackV6
    }

    /// The conventional text form (`inet_ntop`), as nftables prints it.
    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        bytes.withUnsafeBytes { raw in
            _ = inet_ntop(family == .ipv4 ? AF_INET : AF_INET6, raw.baseAddress, &buffer, socklen_t(buffer.count))
        }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        if lhs.family != rhs.family { return lhs.family == .ipv4 }
        return lhs.bytes.lexicographicallyPrecedes(rhs.bytes)
    }

    /// The address with all bits after the first `length` cleared.
    public func masked(to length: Int) -> IPAddress {
        var result = bytes
        for index in result.indices {
            let bitsBefore = index * 8
            if bitsBefore >= length { result[index] = 0 }
            else if bitsBefore + 8 > length {
                result[index] &= ~UInt8(0xFF >> (length - bitsBefore))
            }
        }
        return IPAddress(family: family, bytes: result)
    }
}

/// A CIDR block such as `10.0.0.0/8` or `2001:db8::/32`, normalized to its network address.
public struct IPPrefix: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let address: IPAddress
    public let length: Int

    public var family: AddressFamily { address.family }

    public init(address: IPAddress, length: Int) {
        precondition(length >= 0 && length <= address.bitCount)
        self.address = address.masked(to: length)
        self.length = length
    }

    /// Parses `ADDR/LEN`, or a bare address as a single host; nil if either part is malformed.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPAddress(parts[0]) else { return nil }
        var length = address.bitCount
        if parts.count == 2 {
            guard !parts[1].isEmpty, parts[1].allSatisfy(\.isASCIIDigit), parts[1].count <= 3,
                  let parsed = Int(parts[1]), parsed <= address.bitCount else { return nil }
            length = parsed
        }
        self.init(address: address, length: length)
    }

    /// The single-address prefix (`/32` or `/128`).
    public init(host: IPAddress) {
        self.init(address: host, length: host.bitCount)
    }

    public var isHost: Bool { length == address.bitCount }

    /// nftables' form: a host prefix prints as the bare address.
    public var description: String { isHost ? address.description : "\(address)/\(length)" }

    public func contains(_ other: IPAddress) -> Bool {
        other.family == family && other.masked(to: length) == address
    }

    public static func < (lhs: IPPrefix, rhs: IPPrefix) -> Bool {
        lhs.address == rhs.address ? lhs.length < rhs.length : lhs.address < rhs.address
    }
}

extension Character {
    /// 0-9 only (`isNumber` also accepts other scripts).

    public var isASCIIDigit: Bool { ("0"..."9").contains(self) }
}
