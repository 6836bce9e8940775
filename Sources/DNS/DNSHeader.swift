/// The fixed 12-byte header's identifier and flags (RFC 1035 4.1.1; AD and CD from RFC 4035). The section
/// counts are not stored: they are the lengths of the message's sections.
public struct DNSHeader: Sendable, Hashable {
    public var id: UInt16
    /// QR: a response rather than a query.
    public var isResponse: Bool
    public var opcode: UInt8
    /// AA: the answer comes from an authority for the name.
    public var isAuthoritative: Bool
    /// TC: the message was cut to fit the transport; ask again over TCP.
    public var isTruncated: Bool
    /// RD: the client wants recursion.
    public var recursionDesired: Bool
    /// RA: the server offers recursion.
    public var recursionAvailable: Bool
    /// Z: the reserved bit, kept as received.
    public var reservedBit: Bool
    /// AD: authentic data (DNSSEC).
    public var authenticData: Bool
    /// CD: checking disabled (DNSSEC).
    public var checkingDisabled: Bool
    /// The low four bits of the response code (EDNS adds eight more in the OPT record).
    public var responseCode: DNSResponseCode

    public init(id: UInt16 = 0, isResponse: Bool = false, opcode: UInt8 = 0, isAuthoritative: Bool = false,
                isTruncated: Bool = false, recursionDesired: Bool = true, recursionAvailable: Bool = false,
                reservedBit: Bool = false, authenticData: Bool = false, checkingDisabled: Bool = false,
                responseCode: DNSResponseCode = .noError) {
        self.id = id
        self.isResponse = isResponse
        self.opcode = opcode
        self.isAuthoritative = isAuthoritative
        self.isTruncated = isTruncated
        self.recursionDesired = recursionDesired
        self.recursionAvailable = recursionAvailable
        self.reservedBit = reservedBit
        self.authenticData = authenticData
        self.checkingDisabled = checkingDisabled
        self.responseCode = responseCode
    }

    /// The 16 flag bits as they are on the wire.
    public var flags: UInt16 {
        var value: UInt16 = 0
        if isResponse { value |= 0x8000 }
        value |= UInt16(opcode & 0x0F) << 11
        if isAuthoritative { value |= 0x0400 }
        if isTruncated { value |= 0x0200 }
        if recursionDesired { value |= 0x0100 }
        if recursionAvailable { value |= 0x0080 }
        if reservedBit { value |= 0x0040 }
        if authenticData { value |= 0x0020 }
        if checkingDisabled { value |= 0x0010 }
        value |= responseCode.rawValue & 0x000F
        return value
    }

    public init(id: UInt16, flags: UInt16) {
        self.id = id
        isResponse = flags & 0x8000 != 0
        opcode = UInt8((flags >> 11) & 0x0F)
        isAuthoritative = flags & 0x0400 != 0
        isTruncated = flags & 0x0200 != 0
        recursionDesired = flags & 0x0100 != 0
        recursionAvailable = flags & 0x0080 != 0
        reservedBit = flags & 0x0040 != 0
        authenticData = flags & 0x0020 != 0
        checkingDisabled = flags & 0x0010 != 0
        responseCode = DNSResponseCode(rawValue: flags & 0x000F)
    }
}

/// One entry of the question section: which name, type and class are asked for.
public struct DNSQuestion: Sendable, Hashable, CustomStringConvertible {
    public var name: DNSName
    public var type: DNSRecordType
    public var recordClass: DNSRecordClass

    public init(name: DNSName, type: DNSRecordType, recordClass: DNSRecordClass = .internet) {
        self.name = name
        self.type = type
        self.recordClass = recordClass
    }

    public var description: String { "\(name) \(recordClass) \(type)" }
}
