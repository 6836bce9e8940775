/// Writes the wire form, compressing names: the offset of each name suffix written below 0x4000 is
/// remembered, and a later equal suffix (ignoring case) becomes a two-byte pointer to it. Suffixes are
/// compared in place against the bytes already written, so compression allocates nothing per name.
struct DNSWireWriter {
    private(set) var bytes: [UInt8] = []
    private var suffixOffsets: [Int] = []

    init() {
        bytes.reserveCapacity(512)
        suffixOffsets.reserveCapacity(16)
    }

    mutating func writeUInt16(_ value: UInt16) {
        bytes.append(UInt8(value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value))
    }

    mutating func writeUInt32(_ value: UInt32) {
        writeUInt16(UInt16(value >> 16))
        writeUInt16(UInt16(truncatingIfNeeded: value))
    }

    mutating func write(_ message: DNSMessage) throws(DNSWireError) {
        writeUInt16(message.header.id)
        writeUInt16(message.header.flags)
        for (name, count) in [("question", message.questions.count), ("answer", message.answers.count),
                              ("authority", message.authorities.count), ("additional", message.additionals.count)] {
            guard count <= Int(UInt16.max) else {
                throw DNSWireError(field: name, reason: "\(count) entries, at most 65535")
            }
            writeUInt16(UInt16(count))
        }
        for question in message.questions {
            write(question.name, compress: true)
            writeUInt16(question.type.rawValue)
            writeUInt16(question.recordClass.rawValue)
        }
        for record in message.answers { try write(record) }
        for record in message.authorities { try write(record) }
        for record in message.additionals { try write(record) }
        guard bytes.count <= DNSMessage.maximumLength else {
            throw DNSWireError(field: "message", reason: "\(bytes.count) bytes, at most 65535")
        }
    }

    /// Whether the labels of `wire` from `index` equal, ignoring case, the name written at `offset`
    /// (following the pointers written there, which all point backwards).
    private func written(_ wire: [UInt8], from index: Int, equalsNameAt offset: Int) -> Bool {
        var index = index
        var offset = offset
        while true {
            while bytes[offset] & 0xC0 == 0xC0 {
                offset = Int(bytes[offset] & 0x3F) << 8 | Int(bytes[offset + 1])
            }
            let length = Int(wire[index])
            guard Int(bytes[offset]) == length else { return false }
            if length == 0 { return true }
            for step in 1...length where DNSName.lowercased(wire[index + step]) != DNSName.lowercased(bytes[offset + step]) {
                return false
            }
            index += 1 + length
            offset += 1 + length
        }
    }

    mutating func write(_ name: DNSName, compress: Bool) {
        let wire = name.wireBytes
        var index = 0
        // Only names written whole are compared against (a half-written one would be read past its end).
        let complete = suffixOffsets.count
        while wire[index] != 0 {
            if compress {
                if let offset = suffixOffsets[..<complete].first(where: { written(wire, from: index, equalsNameAt: $0) }) {
                    writeUInt16(0xC000 | UInt16(offset))
                    return
                }
                if bytes.count < 0x4000 { suffixOffsets.append(bytes.count) }
            }
            let length = Int(wire[index])
            bytes.append(contentsOf: wire[index ... index + length])
            index += 1 + length
        }
        bytes.append(0)
    }

    mutating func write(_ record: DNSResourceRecord) throws(DNSWireError) {
        write(record.name, compress: true)
        writeUInt16(record.type.rawValue)
        writeUInt16(record.recordClass.rawValue)
        writeUInt32(record.ttl)
        let lengthOffset = bytes.count
        writeUInt16(0)
        switch record.data {
        case .a(let address), .aaaa(let address):
            guard address.recordType == record.type else {
                throw DNSWireError(field: "\(record.name) \(record.type)", reason: "address \(address) does not fit a \(record.type) record")
            }
            address.appendBytes(to: &bytes)
        case .cname(let name), .ns(let name), .ptr(let name):
            write(name, compress: true)
        case .mx(let preference, let exchange):
            writeUInt16(preference)
            write(exchange, compress: true)
        case .soa(let soa):
            write(soa.primaryServer, compress: true)
            write(soa.responsible, compress: true)
            for value in [soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum] { writeUInt32(value) }
        case .opt(let data), .other(_, let data):
            bytes.append(contentsOf: data)
        }
        let length = bytes.count - lengthOffset - 2
        guard length <= Int(UInt16.max) else {
            throw DNSWireError(field: "\(record.name) \(record.type)", reason: "record data of \(length) bytes, at most 65535")
        }
        bytes[lengthOffset] = UInt8(length >> 8)
        bytes[lengthOffset + 1] = UInt8(truncatingIfNeeded: length)
    }
}
