/// A domain name as DNS carries it: labels of 1 to 63 bytes, 255 bytes at most on the wire. Compared and
/// hashed without regard to ASCII case (RFC 4343); the original spelling is kept for answers.
public struct DNSName: Sendable, Hashable, CustomStringConvertible {
    /// The uncompressed wire form: length-prefixed labels ending with the zero-length root label.
    public let wireBytes: [UInt8]

    public static let maximumWireLength = 255
    public static let maximumLabelLength = 63

    /// The root name `.`.
    public static let root = DNSName(validatedWireBytes: [0])

    init(validatedWireBytes: [UInt8]) { wireBytes = validatedWireBytes }

    /// Parses dotted text (`payments.default.svc.cluster.local`, a trailing dot optional; `.` is the root).
    /// A `\.` keeps a dot inside a label and `\DDD` is a byte, as dig prints them.
    public init(_ text: some StringProtocol) throws(DNSWireError) {
        let bytes = Array(text.utf8)
        if bytes == [UInt8(ascii: ".")] || bytes.isEmpty {
            guard !bytes.isEmpty else { throw DNSWireError(field: "name", reason: "empty name") }
            self = .root
            return
        }
        var wire: [UInt8] = []
        wire.reserveCapacity(bytes.count + 2)
        var label: [UInt8] = []
        var index = 0
        func closeLabel() throws(DNSWireError) {
            guard !label.isEmpty else {
                throw DNSWireError(field: "name", reason: "empty label in \"\(String(decoding: bytes, as: UTF8.self))\"")
            }
            guard label.count <= DNSName.maximumLabelLength else {
                throw DNSWireError(field: "name", reason: "label of \(label.count) bytes in \"\(String(decoding: bytes, as: UTF8.self))\" (at most 63)")
            }
            wire.append(UInt8(label.count))
            wire.append(contentsOf: label)
            label.removeAll(keepingCapacity: true)
        }
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\\") {
                guard index + 1 < bytes.count else {
                    throw DNSWireError(field: "name", reason: "trailing backslash in \"\(String(decoding: bytes, as: UTF8.self))\"")
                }
                let next = bytes[index + 1]
                if next >= UInt8(ascii: "0"), next <= UInt8(ascii: "9") {
                    guard index + 3 < bytes.count, bytes[index + 1 ... index + 3].allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                        throw DNSWireError(field: "name", reason: "\\DDD escape needs three digits in \"\(String(decoding: bytes, as: UTF8.self))\"")
                    }
                    let value = bytes[index + 1 ... index + 3].reduce(0) { $0 * 10 + Int($1 - 48) }
                    guard value <= 255 else {
                        throw DNSWireError(field: "name", reason: "escape \\\(value) is not a byte")
                    }
                    label.append(UInt8(value))
                    index += 4
                } else {
                    label.append(next)
                    index += 2
                }
                continue
            }
            if byte == UInt8(ascii: ".") {
                try closeLabel()
                index += 1
                if index == bytes.count { break }
                continue
            }
            label.append(byte)
            index += 1
        }
        if !label.isEmpty { try closeLabel() }
        wire.append(0)
        guard wire.count <= DNSName.maximumWireLength else {
            throw DNSWireError(field: "name", reason: "name is \(wire.count) bytes on the wire (at most 255)")
        }
        wireBytes = wire
    }

    /// The labels, leftmost first, without the root.
    public var labels: [ArraySlice<UInt8>] {
        var result: [ArraySlice<UInt8>] = []
        var index = 0
        while wireBytes[index] != 0 {
            let length = Int(wireBytes[index])
            result.append(wireBytes[index + 1 ..< index + 1 + length])
            index += 1 + length
        }
        return result
    }

    public var labelCount: Int { labels.count }

    public var isRoot: Bool { wireBytes.count == 1 }

    /// The name without its leftmost label (the root's parent is the root).
    public var parent: DNSName {
        guard !isRoot else { return self }
        return DNSName(validatedWireBytes: Array(wireBytes[(Int(wireBytes[0]) + 1)...]))
    }

    /// Whether `self` is `other` or below it (`a.b.example` is in `b.example`), ignoring case.
    public func isSubdomain(of other: DNSName) -> Bool {
        var candidate = self
        while true {
            if candidate == other { return true }
            if candidate.isRoot { return false }
            candidate = candidate.parent
        }
    }

    /// `self` followed by `suffix` (`payments` + `default.svc.cluster.local`), refused past 255 bytes.
    public func appending(_ suffix: DNSName) throws(DNSWireError) -> DNSName {
        let wire = wireBytes.dropLast() + suffix.wireBytes
        guard wire.count <= DNSName.maximumWireLength else {
            throw DNSWireError(field: "name", reason: "\(self) + \(suffix) is \(wire.count) bytes on the wire (at most 255)")
        }
        return DNSName(validatedWireBytes: Array(wire))
    }

    /// The wire form with ASCII letters lowercased: the key names are compared by.
    public var canonicalWireBytes: [UInt8] { wireBytes.map(DNSName.lowercased) }

    /// Dotted text with a trailing dot, as dig prints it (`.`, `\\`, spaces and unprintable bytes escaped).
    public var description: String {
        guard !isRoot else { return "." }
        var text: [UInt8] = []
        for label in labels {
            for byte in label {
                switch byte {
                case UInt8(ascii: "."), UInt8(ascii: "\\"), UInt8(ascii: "\""), UInt8(ascii: ";"),
                     UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "@"), UInt8(ascii: "$"):
                    text.append(UInt8(ascii: "\\"))
                    text.append(byte)
                case 0x21...0x7E:
                    text.append(byte)
                default:
                    text.append(UInt8(ascii: "\\"))
                    text.append(contentsOf: String(Int(byte) + 1000).utf8.dropFirst())
                }
            }
            text.append(UInt8(ascii: "."))
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// Dotted text without the trailing dot (`payments.default.svc.cluster.local`); the root is `.`.
    public var text: String {
        let full = description
        return full == "." ? full : String(full.dropLast())
    }

    @inline(__always)
    static func lowercased(_ byte: UInt8) -> UInt8 {
        byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
    }

    public static func == (lhs: DNSName, rhs: DNSName) -> Bool {
        guard lhs.wireBytes.count == rhs.wireBytes.count else { return false }
        for index in lhs.wireBytes.indices where lowercased(lhs.wireBytes[index]) != lowercased(rhs.wireBytes[index]) {
            return false
        }
        return true
    }

    public func hash(into hasher: inout Hasher) {
        for byte in wireBytes { hasher.combine(DNSName.lowercased(byte)) }
    }
}
