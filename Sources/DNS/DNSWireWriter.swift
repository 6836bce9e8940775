/// Writes the wire form, compressing names: each name suffix written at an offset below 0x4000 is
/// remembered and later occurrences become two-byte pointers to it.
struct DNSWireWriter {
    private(set) var bytes: [UInt8] = []
    private var suffixOffsets: [[UInt8]: Int] = [:]

    init() { bytes.reserveCapacity(512) }

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

    mutating func write(_ name: DNSName, compress: Bool) {
        let wire = name.wireBytes
        var index = 0
        while wire[index] != 0 {
            if compress {
                let key = wire[index...].map(DNSName.lowercased)
                if let offset = suffixOffsets[key] {
                    writeUInt16(0xC000 | UInt16(offset))
                    return
                }
                if bytes.count < 0x4000 { suffixOffsets[key] = bytes.count }
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
