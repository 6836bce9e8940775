/// Reads the wire form from borrowed memory; every read is bounds-checked and names the field it reads.
struct DNSWireReader {
    let bytes: UnsafeRawBufferPointer
    private(set) var position = 0

    /// The header with its section counts.
    struct Header {
        var header: DNSHeader
        var questionCount: Int
        var answerCount: Int
        var authorityCount: Int
        var additionalCount: Int
    }

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var remaining: Int { bytes.count - position }

    mutating func readUInt16(field: String) throws(DNSWireError) -> UInt16 {
        guard remaining >= 2 else {
            throw DNSWireError(field: field, reason: "message ends at byte \(bytes.count), 2 more bytes needed")
        }
        let value = UInt16(bytes[position]) << 8 | UInt16(bytes[position + 1])
        position += 2
        return value
    }

    mutating func readUInt32(field: String) throws(DNSWireError) -> UInt32 {
        let high = try readUInt16(field: field)
        let low = try readUInt16(field: field)
        return UInt32(high) << 16 | UInt32(low)
    }

    mutating func readHeader() throws(DNSWireError) -> Header {
        guard bytes.count >= 12 else {
            throw DNSWireError(field: "header", reason: "message is \(bytes.count) bytes, a header needs 12")
        }
        let id = try readUInt16(field: "header.id")
        let flags = try readUInt16(field: "header.flags")
        let qd = Int(try readUInt16(field: "header.qdcount"))
        let an = Int(try readUInt16(field: "header.ancount"))
        let ns = Int(try readUInt16(field: "header.nscount"))
        let ar = Int(try readUInt16(field: "header.arcount"))
        // A question takes at least 5 bytes and a record at least 11: refuse counts the bytes cannot hold
        // before reserving room for them.
        let least = qd * 5 + (an + ns + ar) * 11
        guard least <= remaining else {
            throw DNSWireError(field: "header", reason: "counts (qd \(qd), an \(an), ns \(ns), ar \(ar)) need at least \(least) bytes, \(remaining) follow")
        }
        return Header(header: DNSHeader(id: id, flags: flags), questionCount: qd, answerCount: an,
                      authorityCount: ns, additionalCount: ar)
    }

    /// A possibly compressed name at `start`; returns it and the offset just after it where it began.
    /// Every compression pointer must point before the label run that holds it, so a chain of pointers
    /// always ends (no loops), and the name may not exceed 255 bytes.
    func readName(at start: Int, field: String) throws(DNSWireError) -> (DNSName, Int) {
        var wire: [UInt8] = []
        wire.reserveCapacity(32)
        var position = start
        var runStart = start
        var end: Int?
        while true {
            guard position < bytes.count else {
                throw DNSWireError(field: field, reason: "name runs past the end of the message (byte \(position))")
            }
            let length = Int(bytes[position])
            switch length & 0xC0 {
            case 0x00:
                if length == 0 {
                    wire.append(0)
                    return (DNSName(validatedWireBytes: wire), end ?? position + 1)
                }
                guard position + 1 + length <= bytes.count else {
                    throw DNSWireError(field: field, reason: "label of \(length) bytes at byte \(position) runs past the end of the message")
                }
                guard wire.count + 1 + length + 1 <= DNSName.maximumWireLength else {
                    throw DNSWireError(field: field, reason: "name longer than 255 bytes")
                }
                wire.append(UInt8(length))
                wire.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[(position + 1)...(position + length)]))
                position += 1 + length
            case 0xC0:
                guard position + 1 < bytes.count else {
                    throw DNSWireError(field: field, reason: "compression pointer at byte \(position) runs past the end of the message")
                }
                let target = (length & 0x3F) << 8 | Int(bytes[position + 1])
                guard target < runStart else {
                    throw DNSWireError(field: field, reason: "compression pointer at byte \(position) to byte \(target) does not point backwards")
                }
                if end == nil { end = position + 2 }
                runStart = target
                position = target
            default:
                throw DNSWireError(field: field, reason: "label type 0x\(String(length & 0xC0, radix: 16)) at byte \(position) is not supported")
            }
        }
    }

    mutating func readName(field: String) throws(DNSWireError) -> DNSName {
        let (name, next) = try readName(at: position, field: field)
        position = next
        return name
    }

    mutating func readQuestion(field: String) throws(DNSWireError) -> DNSQuestion {
        let name = try readName(field: "\(field).name")
        let type = DNSRecordType(rawValue: try readUInt16(field: "\(field).type"))
        let recordClass = DNSRecordClass(rawValue: try readUInt16(field: "\(field).class"))
        return DNSQuestion(name: name, type: type, recordClass: recordClass)
    }

    mutating func readRecord(field: String) throws(DNSWireError) -> DNSResourceRecord {
        let name = try readName(field: "\(field).name")
        let type = DNSRecordType(rawValue: try readUInt16(field: "\(field).type"))
        let recordClass = DNSRecordClass(rawValue: try readUInt16(field: "\(field).class"))
        let ttl = try readUInt32(field: "\(field).ttl")
        let length = Int(try readUInt16(field: "\(field).rdlength"))
        guard length <= remaining else {
            throw DNSWireError(field: "\(field).rdlength", reason: "\(length) bytes of data, \(remaining) left in the message")
        }
        let start = position
        let end = start + length
        let data = try readData(type: type, start: start, end: end, field: "\(field).rdata")
        position = end
        return DNSResourceRecord(name: name, recordClass: recordClass, ttl: ttl, data: data)
    }

    private func readData(type: DNSRecordType, start: Int, end: Int, field: String) throws(DNSWireError) -> DNSRecordData {
        let length = end - start
        func name(at offset: Int, last: Bool) throws(DNSWireError) -> (DNSName, Int) {
            let (name, next) = try readName(at: offset, field: field)
            guard next <= end, !last || next == end else {
                throw DNSWireError(field: field, reason: "\(type) data is \(length) bytes, its name ends at byte \(next - start)")
            }
            return (name, next)
        }
        func uint32(at offset: Int) -> UInt32 {
            (0..<4).reduce(UInt32(0)) { $0 << 8 | UInt32(bytes[offset + $1]) }
        }
        switch type {
        case .a:
            guard length == 4 else { throw DNSWireError(field: field, reason: "A record data is \(length) bytes, expected 4") }
            return .a(.ipv4(uint32(at: start)))
        case .aaaa:
            guard length == 16 else { throw DNSWireError(field: field, reason: "AAAA record data is \(length) bytes, expected 16") }
            return .aaaa(HostAddress(ipv6Bytes: UnsafeRawBufferPointer(rebasing: bytes[start..<end])))
        case .cname:
            return .cname(try name(at: start, last: true).0)
        case .ns:
            return .ns(try name(at: start, last: true).0)
        case .ptr:
            return .ptr(try name(at: start, last: true).0)
        case .mx:
            guard length >= 3 else { throw DNSWireError(field: field, reason: "MX record data is \(length) bytes, at least 3 needed") }
            let preference = UInt16(bytes[start]) << 8 | UInt16(bytes[start + 1])
            return .mx(preference: preference, exchange: try name(at: start + 2, last: true).0)
        case .soa:
            let (primary, afterPrimary) = try name(at: start, last: false)
            let (responsible, afterResponsible) = try name(at: afterPrimary, last: false)
            guard end - afterResponsible == 20 else {
                throw DNSWireError(field: field, reason: "SOA record has \(end - afterResponsible) bytes after its names, expected 20")
            }
            return .soa(DNSStartOfAuthority(primaryServer: primary, responsible: responsible,
                                            serial: uint32(at: afterResponsible), refresh: uint32(at: afterResponsible + 4),
                                            retry: uint32(at: afterResponsible + 8), expire: uint32(at: afterResponsible + 12),
                                            minimum: uint32(at: afterResponsible + 16)))
        case .opt:
            var offset = start
            while offset < end {
                guard end - offset >= 4 else {
                    throw DNSWireError(field: field, reason: "EDNS option at byte \(offset - start) is cut short")
                }
                let optionLength = Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
                guard offset + 4 + optionLength <= end else {
                    throw DNSWireError(field: field, reason: "EDNS option at byte \(offset - start) is \(optionLength) bytes, past the record's end")
                }
                offset += 4 + optionLength
            }
            return .opt(Array(UnsafeRawBufferPointer(rebasing: bytes[start..<end])))
        default:
            return .other(type: type, data: Array(UnsafeRawBufferPointer(rebasing: bytes[start..<end])))
        }
    }
}
