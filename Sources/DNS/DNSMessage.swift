/// A DNS message (RFC 1035 4.1) as a value: header, question, answer, authority and additional sections.
/// Decoding validates every length, label and compression pointer and throws a `DNSWireError` naming the
/// field; encoding compresses names.
public struct DNSMessage: Sendable, Hashable, CustomStringConvertible {
    public var header: DNSHeader
    public var questions: [DNSQuestion]
    public var answers: [DNSResourceRecord]
    public var authorities: [DNSResourceRecord]
    /// The additional section, including the EDNS OPT pseudo-record when there is one.
    public var additionals: [DNSResourceRecord]

    /// The largest message DNS carries (TCP's two-byte length prefix).
    public static let maximumLength = 65535
    /// The UDP payload a client without EDNS accepts (RFC 1035 4.2.1).
    public static let classicUDPLimit = 512

    public init(header: DNSHeader, questions: [DNSQuestion] = [], answers: [DNSResourceRecord] = [],
                authorities: [DNSResourceRecord] = [], additionals: [DNSResourceRecord] = []) {
        self.header = header
        self.questions = questions
        self.answers = answers
        self.authorities = authorities
        self.additionals = additionals
    }

    /// A recursive query for one name and type, with an EDNS OPT record offering `udpPayloadSize` when given.
    public static func query(id: UInt16, name: DNSName, type: DNSRecordType, udpPayloadSize: UInt16? = 1232) -> DNSMessage {
        var message = DNSMessage(header: DNSHeader(id: id, recursionDesired: true),
                                 questions: [DNSQuestion(name: name, type: type)])
        if let udpPayloadSize {
            message.additionals.append(DNSResourceRecord(name: .root, recordClass: DNSRecordClass(rawValue: udpPayloadSize),
                                                         ttl: 0, data: .opt([])))
        }
        return message
    }

    /// Decodes one message, all of `bytes`.
    public init(decoding bytes: [UInt8]) throws(DNSWireError) {
        let result = bytes.withUnsafeBytes { raw in Result { () throws(DNSWireError) in try DNSMessage(decoding: raw) } }
        self = try result.get()
    }

    /// Decodes one message from memory the caller owns (a NIO buffer's readable bytes), without copying it.
    public init(decoding bytes: UnsafeRawBufferPointer) throws(DNSWireError) {
        var reader = DNSWireReader(bytes: bytes)
        let header = try reader.readHeader()
        var questions: [DNSQuestion] = []
        questions.reserveCapacity(header.questionCount)
        for index in 0..<header.questionCount {
            questions.append(try reader.readQuestion(field: "question[\(index)]"))
        }
        var sections: [[DNSResourceRecord]] = [[], [], []]
        let counts = [header.answerCount, header.authorityCount, header.additionalCount]
        let names = ["answer", "authority", "additional"]
        for section in 0..<3 {
            sections[section].reserveCapacity(counts[section])
            for index in 0..<counts[section] {
                let field = "\(names[section])[\(index)]"
                let record = try reader.readRecord(field: field)
                if record.type == .opt {
                    guard section == 2 else {
                        throw DNSWireError(field: field, reason: "OPT record outside the additional section")
                    }
                    guard record.name.isRoot else {
                        throw DNSWireError(field: "\(field).name", reason: "OPT record owner is \(record.name), must be the root")
                    }
                    guard !sections[2].contains(where: { $0.type == .opt }) else {
                        throw DNSWireError(field: field, reason: "a second OPT record")
                    }
                }
                sections[section].append(record)
            }
        }
        guard reader.remaining == 0 else {
            throw DNSWireError(field: "message", reason: "\(reader.remaining) bytes after the last record")
        }
        self.init(header: header.header, questions: questions, answers: sections[0], authorities: sections[1],
                  additionals: sections[2])
    }

    /// The wire form, names compressed. Throws when a section has more than 65535 entries or the message
    /// is longer than 65535 bytes.
    public func encoded() throws(DNSWireError) -> [UInt8] {
        var writer = DNSWireWriter()
        try writer.write(self)
        return writer.bytes
    }

    /// The wire form, cut to fit `limit` bytes (a UDP client's size): when the whole message does not fit,
    /// only the question and the OPT record are kept and TC is set, so the client asks again over TCP.
    public func encoded(limit: Int) throws(DNSWireError) -> [UInt8] {
        let whole = try encoded()
        guard whole.count > limit else { return whole }
        var cut = self
        cut.header.isTruncated = true
        cut.answers = []
        cut.authorities = []
        cut.additionals = additionals.filter { $0.type == .opt }
        return try cut.encoded()
    }

    /// The EDNS OPT pseudo-record, if the message has one.
    public var optRecord: DNSResourceRecord? { additionals.first { $0.type == .opt } }

    /// The UDP payload size the sender accepts: the OPT record's (never below 512), or 512 without EDNS.
    public var acceptedUDPPayloadSize: Int {
        guard let opt = optRecord else { return DNSMessage.classicUDPLimit }
        return max(DNSMessage.classicUDPLimit, Int(opt.recordClass.rawValue))
    }

    /// The full response code: the header's four bits, extended by the OPT record's upper eight bits.
    public var responseCode: DNSResponseCode {
        let upper = optRecord.map { UInt16($0.ttl >> 24) << 4 } ?? 0
        return DNSResponseCode(rawValue: upper | header.responseCode.rawValue)
    }

    public var description: String {
        var lines = ["id \(header.id) \(header.isResponse ? "response" : "query") \(responseCode)"
            + (header.isTruncated ? " truncated" : "")]
        lines += questions.map { "question \($0)" }
        lines += answers.map { "answer \($0)" }
        lines += authorities.map { "authority \($0)" }
        lines += additionals.map { "additional \($0)" }
        return lines.joined(separator: "\n")
    }
}
