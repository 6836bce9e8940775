import Configuration
import XDS

/// Envoy's `CidrRange`: an address prefix, as RBAC's IP principals and `destination_ip` take it.
public struct CIDRRange: Sendable, Hashable, BitwiseCopyable, CustomStringConvertible {
    let prefix: IPAddress
    /// Its prefix length, in bits.
    public let length: Int

    /// `path` names the range in refusals. Envoy masks the address to the prefix length, so
    /// `10.1.2.3/8` is `10.0.0.0/8`.
    public init(address: String, length: Int?, path: String) throws(ConfigError) {
        guard let parsed = IPAddress(address) else {
            throw ConfigError(path: "\(path).address_prefix", message: "\"\(address)\" is not an IP address")
        }
        let bits = parsed.isIPv6 ? 128 : 32
        let length = length ?? bits
        guard (0...bits).contains(length) else {
            throw ConfigError(path: "\(path).prefix_len", message: "\(length) is out of range 0-\(bits) for \(address)")
        }
        self.length = length
        prefix = Self.masked(parsed, length: length)
    }

    /// As Envoy reads it, an unset `prefix_len` is 0: the whole address family.
    public init(_ proto: Envoy_Config_Core_V3_CidrRange, path: String) throws(ConfigError) {
        try self.init(address: proto.addressPrefix, length: Int(proto.prefixLen.value), path: path)
    }

    public func contains(_ address: IPAddress) -> Bool {
        address.isIPv6 == prefix.isIPv6 && Self.masked(address, length: length) == prefix
    }

    private static func masked(_ address: IPAddress, length: Int) -> IPAddress {
        // IPv4 sits in the low 32 bits: its prefix length counts from bit 96.
        let bits = address.isIPv6 ? length : length + 96
        let highMask: UInt64 = bits >= 64 ? .max : (bits == 0 ? 0 : ~(UInt64.max >> bits))
        let lowBits = bits - 64
        let lowMask: UInt64 = lowBits >= 64 ? .max : (lowBits <= 0 ? 0 : ~(UInt64.max >> lowBits))
        return IPAddress(high: address.high & highMask, low: address.low & lowMask, isIPv6: address.isIPv6)
    }

    public var description: String { "\(prefix)/\(length)" }
}
