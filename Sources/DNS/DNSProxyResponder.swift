/// What the agent's DNS proxy does with one query, decided synchronously from the name table: answer
/// from the table, forward to the upstream nameservers, or drop. Pure: the NIO server only carries bytes.
public enum DNSProxyDecision: Sendable, Hashable {
    /// Send these bytes back.
    case answer([UInt8])
    /// Ask the upstream nameservers; the response must fit `limit` bytes (the client's UDP size).
    case forward(limit: Int)
    /// Not a query (a response, or fewer bytes than a header): nothing to say.
    case drop
}

public enum DNSProxyResponder {
    /// The UDP payload size the proxy offers in its own answers' OPT record.
    public static let udpPayloadSize: UInt16 = 1232

    /// Decides what to do with `query`; `table` is nil until the control plane's first name table, when
    /// every query gets SERVFAIL as pilot-agent's does.
    public static func respond(to query: UnsafeRawBufferPointer, table: DNSNameTable?, overTCP: Bool) -> DNSProxyDecision {
        let message: DNSMessage
        do {
            message = try DNSMessage(decoding: query)
        } catch {
            guard query.count >= 12, query[2] & 0x80 == 0 else { return .drop }
            var header = DNSHeader(id: UInt16(query[0]) << 8 | UInt16(query[1]), flags: UInt16(query[2]) << 8 | UInt16(query[3]))
            header.isResponse = true
            header.responseCode = .formatError
            return encode(DNSMessage(header: header), limit: DNSMessage.classicUDPLimit)
        }
        guard !message.header.isResponse else { return .drop }
        let limit = overTCP ? DNSMessage.maximumLength : message.acceptedUDPPayloadSize
        guard let question = message.questions.first, message.header.opcode == 0 else {
            return encode(reply(to: message, code: message.header.opcode == 0 ? .serverFailure : .notImplemented), limit: limit)
        }
        guard let table else { return encode(reply(to: message, code: .serverFailure), limit: limit) }
        guard question.recordClass == .internet,
              let answers = table.answers(for: question.name, type: question.type, rotation: Int(message.header.id)) else {
            return .forward(limit: limit)
        }
        var response = reply(to: message, code: .noError)
        response.header.isAuthoritative = true
        response.answers = answers
        return encode(response, limit: limit)
    }

    /// A response to `query` with its id, question, RD and CD, and an OPT record when the query had one.
    public static func reply(to query: DNSMessage, code: DNSResponseCode) -> DNSMessage {
        var header = DNSHeader(id: query.header.id, isResponse: true, opcode: query.header.opcode,
                               recursionDesired: query.header.recursionDesired, recursionAvailable: true,
                               checkingDisabled: query.header.checkingDisabled, responseCode: code)
        header.authenticData = false
        var response = DNSMessage(header: header, questions: query.questions)
        if query.optRecord != nil {
            response.additionals = [DNSResourceRecord(name: .root, recordClass: DNSRecordClass(rawValue: udpPayloadSize), ttl: 0, data: .opt([]))]
        }
        return response
    }

    private static func encode(_ response: DNSMessage, limit: Int) -> DNSProxyDecision {
        guard let bytes = try? response.encoded(limit: limit) else { return .drop }
        return .answer(bytes)
    }

    /// An upstream response cut to `limit` when it does not fit (TC set, question and OPT kept), so a UDP
    /// client asks again over TCP; nil when it is not a valid message.
    public static func fit(_ response: UnsafeRawBufferPointer, limit: Int) -> [UInt8]? {
        guard response.count > limit else { return nil }
        guard let message = try? DNSMessage(decoding: response) else { return nil }
        return try? message.encoded(limit: limit)
    }

    /// SERVFAIL for `query` when no upstream answered.
    public static func serverFailure(for query: UnsafeRawBufferPointer) -> [UInt8]? {
        guard let message = try? DNSMessage(decoding: query) else { return nil }
        return try? reply(to: message, code: .serverFailure).encoded(limit: DNSMessage.classicUDPLimit)
    }
}
