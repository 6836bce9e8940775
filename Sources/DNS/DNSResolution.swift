/// The addresses a name resolved to, each with the TTL it may be kept for.
public struct DNSResolution: Sendable, Hashable {
    /// One address and how long it may be used, in seconds.
    public struct Address: Sendable, Hashable {
        public var address: HostAddress
        public var ttl: UInt32
        public init(address: HostAddress, ttl: UInt32) {
            self.address = address
            self.ttl = ttl
        }
    }

    /// The name asked for.
    public var name: DNSName
    /// The end of the CNAME chain (the name itself when there is none).
    public var canonicalName: DNSName
    /// IPv4 addresses first, then IPv6, in answer order.
    public var addresses: [Address]

    public init(name: DNSName, canonicalName: DNSName, addresses: [Address]) {
        self.name = name
        self.canonicalName = canonicalName
        self.addresses = addresses
    }

    /// The smallest TTL of the addresses (nil without addresses): when to ask again.
    public var minimumTTL: UInt32? { addresses.map(\.ttl).min() }

    /// Follows CNAMEs from `name` through `answers` (16 hops at most, never in a loop) and collects the
    /// records of `type` owned by the chain's end, each TTL capped by the chain's.
    static func follow(_ name: DNSName, type: DNSRecordType, in answers: [DNSResourceRecord]) -> (DNSName, [Address]) {
        var current = name
        var chainTTL = UInt32.max
        var seen: Set<DNSName> = [name]
        for _ in 0..<16 {
            guard let alias = answers.first(where: { $0.name == current && $0.type == .cname }),
                  case .cname(let target) = alias.data, !seen.contains(target) else { break }
            chainTTL = min(chainTTL, alias.ttl)
            seen.insert(target)
            current = target
        }
        let addresses: [Address] = answers.compactMap { record in
            guard record.name == current, record.type == type else { return nil }
            switch record.data {
            case .a(let address), .aaaa(let address): return Address(address: address, ttl: min(record.ttl, chainTTL))
            default: return nil
            }
        }
        return (current, addresses)
    }
}

/// Why a name could not be resolved.
public enum DNSResolutionError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The name is not a valid domain name.
    case invalidName(String, DNSWireError)
    /// NXDOMAIN: the name does not exist.
    case nameError(String)
    /// Every nameserver answered with a failure code (SERVFAIL, REFUSED, ...).
    case serverFailure(String, DNSResponseCode)
    /// No nameserver answered.
    case unreachable(String, DNSExchangeError)
    /// An answer was not a valid DNS message.
    case malformedResponse(String, DNSWireError)

    public var description: String {
        switch self {
        case .invalidName(let name, let error): "cannot resolve \"\(name)\": \(error)"
        case .nameError(let name): "\(name): no such name (NXDOMAIN)"
        case .serverFailure(let name, let code): "\(name): nameservers answered \(code)"
        case .unreachable(let name, let error): "\(name): \(error)"
        case .malformedResponse(let name, let error): "\(name): malformed answer: \(error)"
        }
    }
}
