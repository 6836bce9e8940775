extension AccessLogFormat {
    /// Appends `entry`'s line (a JSON format's object ends in a newline; a text format's line is as written).
    public func render(_ entry: AccessLogEntry, into output: inout [UInt8]) {
        switch body {
        case .text(let pieces):
            appendText(pieces, entry: entry, absent: omitsEmptyValues ? [] : [UInt8(ascii: "-")], into: &output)
        case .json(let members):
            appendObject(members, entry: entry, into: &output)
            output.append(UInt8(ascii: "\n"))
        }
    }

    /// `entry`'s line as a string (tests, and the rare caller that wants one).
    public func render(_ entry: AccessLogEntry) -> String {
        var output: [UInt8] = []
        render(entry, into: &output)
        return String(decoding: output, as: UTF8.self)
    }

    private func appendText(_ pieces: [Piece], entry: AccessLogEntry, absent: [UInt8], into output: inout [UInt8]) {
        for piece in pieces {
            switch piece {
            case .literal(let bytes): output.append(contentsOf: bytes)
            case .command(let command): appendValue(command, entry: entry, absent: absent, into: &output)
            }
        }
    }

    /// One operator's value as text, cut to its maximum length.
    private func appendValue(_ command: AccessLogCommand, entry: AccessLogEntry, absent: [UInt8], into output: inout [UInt8]) {
        let start = output.count
        if case .startTime(let format) = command.op {
            format.render(seconds: entry.startSeconds, nanoseconds: entry.startNanoseconds, into: &output)
        } else {
            switch entry.value(of: command.op) {
            case .absent: output.append(contentsOf: absent)
            case .text(let text): output.append(contentsOf: text.utf8)
            case .number(let number): StartTimeFormat.append(number, width: 1, into: &output)
            }
        }
        if let limit = command.maxLength, output.count - start > limit {
            output.removeLast(output.count - start - limit)
        }
    }

    private func appendObject(_ members: [(key: String, value: JSONValue)], entry: AccessLogEntry, into output: inout [UInt8]) {
        output.append(UInt8(ascii: "{"))
        var first = true
        for member in members {
            let mark = output.count
            if !first { output.append(UInt8(ascii: ",")) }
            Self.appendJSONString(member.key.utf8, into: &output)
            output.append(UInt8(ascii: ":"))
            if appendJSON(member.value, entry: entry, into: &output) {
                first = false
            } else {
                output.removeLast(output.count - mark)  // omit_empty_values: the member goes
            }
        }
        output.append(UInt8(ascii: "}"))
    }

    /// Appends a JSON value; false when it is empty and `omit_empty_values` leaves it out.
    private func appendJSON(_ value: JSONValue, entry: AccessLogEntry, into output: inout [UInt8]) -> Bool {
        switch value {
        case .string(let pieces):
            if pieces.count == 1, case .command(let command) = pieces[0], !(command.maxLength != nil && command.isNumeric) {
                // Exactly one operator: its value keeps its type.
                if case .startTime = command.op {} else {
                    switch entry.value(of: command.op) {
                    case .absent:
                        if omitsEmptyValues { return false }
                        output.append(contentsOf: "null".utf8)
                        return true
                    case .number(let number):
                        StartTimeFormat.append(number, width: 1, into: &output)
                        return true
                    case .text:
                        break
                    }
                }
            }
            var text: [UInt8] = []
            appendText(pieces, entry: entry, absent: omitsEmptyValues ? [] : [UInt8(ascii: "-")], into: &text)
            if text.isEmpty && omitsEmptyValues { return false }
            Self.appendJSONString(text, into: &output)
        case .number(let number):
            if number == number.rounded(), abs(number) < 1e15 {
                StartTimeFormat.append(Int(number), width: 1, into: &output)
            } else {
                output.append(contentsOf: "\(number)".utf8)
            }
        case .bool(let bool): output.append(contentsOf: (bool ? "true" : "false").utf8)
        case .null: output.append(contentsOf: "null".utf8)
        case .object(let members): appendObject(members, entry: entry, into: &output)
        case .list(let values):
            output.append(UInt8(ascii: "["))
            for (index, element) in values.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                if !appendJSON(element, entry: entry, into: &output) { output.append(contentsOf: "null".utf8) }
            }
            output.append(UInt8(ascii: "]"))
        }
        return true
    }

    /// A JSON string: quotes, backslashes and control characters escaped; other bytes (UTF-8) as they are.
    static func appendJSONString<Bytes: Sequence<UInt8>>(_ bytes: Bytes, into output: inout [UInt8]) {
        output.append(UInt8(ascii: "\""))
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\""): output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case UInt8(ascii: "\n"): output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case UInt8(ascii: "\r"): output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case UInt8(ascii: "\t"): output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                output.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                                           hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
            default: output.append(byte)
            }
        }
        output.append(UInt8(ascii: "\""))
    }
}
