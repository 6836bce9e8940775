/// One resource record of the answer, authority or additional section.
public struct DNSResourceRecord: Sendable, Hashable, CustomStringConvertible {
    public var name: DNSName
    /// The CLASS field; in an OPT record it is the sender's UDP payload size.
    public var recordClass: DNSRecordClass
    /// The TTL field in seconds; in an OPT record it carries the extended RCODE, version and flags.
    public var ttl: UInt32
    public var data: DNSRecordData

    public init(name: DNSName, recordClass: DNSRecordClass = .internet, ttl: UInt32, data: DNSRecordData) {
        self.name = name
        self.recordClass = recordClass
        self.ttl = ttl
        self.data = data
    }

    public var type: DNSRecordType { data.type }

    public var description: String { "\(name) \(ttl) \(recordClass) \(type) \(data)" }
}

/// The data of a record: decoded for the types the mesh answers or follows, raw bytes for the rest.
/// Types whose data holds compressible names (NS, PTR, CNAME, MX, SOA) are decoded, so that re-encoding
/// a message never copies a compression pointer out of its context.
public enum DNSRecordData: Sendable, Hashable, CustomStringConvertible {
    case a(HostAddress)
    case aaaa(HostAddress)
    case cname(DNSName)
    case ns(DNSName)
    case ptr(DNSName)
    case mx(preference: UInt16, exchange: DNSName)
    case soa(DNSStartOfAuthority)
    /// EDNS(0) options, passed through as their bytes (RFC 6891 6.1.2).
    case opt([UInt8])
    /// Any other type: its number and data as received.
    case other(type: DNSRecordType, data: [UInt8])

    public var type: DNSRecordType {
        switch self {
        case .a: .a
        case .aaaa: .aaaa
        case .cname: .cname
        case .ns: .ns
        case .ptr: .ptr
        case .mx: .mx
        case .soa: .soa
        case .opt: .opt
        case .other(let type, _): type
        }
    }

    /// An A or AAAA record for `address`.
    public static func address(_ address: HostAddress) -> DNSRecordData {
        address.isIPv4 ? .a(address) : .aaaa(address)
    }

    public var description: String {
        switch self {
        case .a(let address), .aaaa(let address): "\(address)"
        case .cname(let name), .ns(let name), .ptr(let name): "\(name)"
        case .mx(let preference, let exchange): "\(preference) \(exchange)"
        case .soa(let soa): "\(soa)"
        case .opt(let bytes): "OPT(\(bytes.count) bytes)"
        case .other(_, let data): "\\# \(data.count)"
        }
    }
}

/// An SOA record's data (RFC 1035 3.3.13); its minimum is the negative-caching TTL (RFC 2308).
public struct DNSStartOfAuthority: Sendable, Hashable, CustomStringConvertible {
    public var primaryServer: DNSName
    public var responsible: DNSName
    public var serial: UInt32
    public var refresh: UInt32
    public var retry: UInt32
    public var expire: UInt32
    public var minimum: UInt32

    public init(primaryServer: DNSName, responsible: DNSName, serial: UInt32, refresh: UInt32, retry: UInt32,
                expire: UInt32, minimum: UInt32) {
        self.primaryServer = primaryServer
        self.responsible = responsible
        self.serial = serial
        self.refresh = refresh
        self.retry = retry
        self.expire = expire
        self.minimum = minimum
    }

    public var description: String {
        "\(primaryServer) \(responsible) \(serial) \(refresh) \(retry) \(expire) \(minimum)"
    }
}
