import SwiftProtobuf

/// An access log's format, compiled once from Envoy's `SubstitutionFormatString` into literal pieces and
/// ``AccessLogCommand``s, so that a request's line is rendered from its ``HTTPStreamRecord`` without
/// parsing anything. A text format is one line as written (a value Capstan does not know prints `-`); a
/// JSON format is one object per line, in which a value that is exactly one operator keeps its type
/// (numbers stay numbers, an unknown value is `null`).
public struct AccessLogFormat: Sendable, Equatable {
    /// Why a format was refused (the caller prefixes the field's path).
    public struct Error: Swift.Error, Sendable, Equatable, CustomStringConvertible {
        public var message: String
        public init(_ message: String) { self.message = message }
        public var description: String { message }
    }

    /// A run of literal bytes, or an operator.
    public enum Piece: Sendable, Equatable {
        case literal([UInt8])
        case command(AccessLogCommand)
    }

    /// A value of a JSON format: a string with operators in it, or a constant, or nested.
    public indirect enum JSONValue: Sendable, Equatable {
        case string([Piece])
        case number(Double)
        case bool(Bool)
        case null
        case object([(key: String, value: JSONValue)])
        case list([JSONValue])

        public static func == (lhs: Self, rhs: Self) -> Bool {
            switch (lhs, rhs) {
            case (.string(let a), .string(let b)): return a == b
            case (.number(let a), .number(let b)): return a == b
            case (.bool(let a), .bool(let b)): return a == b
            case (.null, .null): return true
            case (.object(let a), .object(let b)):
                return a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
            case (.list(let a), .list(let b)): return a == b
            default: return false
            }
        }
    }

    public enum Body: Sendable, Equatable {
        case text([Piece])
        /// The object's members, keys sorted (a protobuf `Struct` has no order of its own).
        case json([(key: String, value: JSONValue)])

        public static func == (lhs: Self, rhs: Self) -> Bool {
            switch (lhs, rhs) {
            case (.text(let a), .text(let b)): return a == b
            case (.json(let a), .json(let b)): return JSONValue.object(a) == JSONValue.object(b)
            default: return false
            }
        }
    }

    public var body: Body
    /// `omit_empty_values`: an unknown value prints nothing (text) or its key is left out (JSON).
    public var omitsEmptyValues: Bool

    public init(body: Body, omitsEmptyValues: Bool = false) {
        self.body = body
        self.omitsEmptyValues = omitsEmptyValues
    }

    /// Envoy's format when an access log names none.
    public static let envoyDefaultText = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" "
        + "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "
        + "\"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n"

    // swiftlint:disable:next force_try
    public static let envoyDefault = try! AccessLogFormat(text: envoyDefaultText)

    /// A text format.
    public init(text: String, omitsEmptyValues: Bool = false) throws(Error) {
        self.init(body: .text(try Self.pieces(text)), omitsEmptyValues: omitsEmptyValues)
    }

    /// A JSON format from its `Struct`; each string value is a format string.
    public init(json: Google_Protobuf_Struct, omitsEmptyValues: Bool = false) throws(Error) {
        guard case .object(let members) = try Self.jsonValue(.init(structValue: json), key: "") else {
            throw Error("is not an object")  // unreachable: a Struct is an object
        }
        self.init(body: .json(members), omitsEmptyValues: omitsEmptyValues)
    }

    private static func jsonValue(_ value: Google_Protobuf_Value, key: String) throws(Error) -> JSONValue {
        switch value.kind {
        case .stringValue(let string)?:
            do {
                return .string(try pieces(string))
            } catch {
                throw Error("\(key): \(error.message)")
            }
        case .numberValue(let number)?: return .number(number)
        case .boolValue(let bool)?: return .bool(bool)
        case .nullValue?, nil: return .null
        case .structValue(let object)?:
            var members: [(key: String, value: JSONValue)] = []
            for name in object.fields.keys.sorted() {
                members.append((name, try jsonValue(object.fields[name]!, key: key.isEmpty ? name : "\(key).\(name)")))
            }
            return .object(members)
        case .listValue(let list)?:
            var values: [JSONValue] = []
            for (index, element) in list.values.enumerated() {
                values.append(try jsonValue(element, key: "\(key)[\(index)]"))
            }
            return .list(values)
        }
    }

    /// Splits a format string into literals and operators, as Envoy's parser does: `%NAME%`,
    /// `%NAME(ARG)%`, either with `:N` before the closing `%`; `%%` is a literal `%`. Refused: a `%` that
    /// starts no operator or is not closed, and operators Capstan does not know.
    public static func pieces(_ format: String) throws(Error) -> [Piece] {
        let bytes = Array(format.utf8)
        var pieces: [Piece] = []
        var literal: [UInt8] = []
        var index = 0
        while index < bytes.count {
            guard bytes[index] == UInt8(ascii: "%") else {
                literal.append(bytes[index])
                index += 1
                continue
            }
            if index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "%") {
                literal.append(UInt8(ascii: "%"))
                index += 2
                continue
            }
            let location = "position \(index)"
            var end = index + 1
            while end < bytes.count, isCommandByte(bytes[end]) { end += 1 }
            guard end > index + 1 else {
                throw Error("\(location): % starts no command operator (a literal % is written %%)")
            }
            let name = String(decoding: bytes[(index + 1)..<end], as: UTF8.self)
            var argument: String?
            if end < bytes.count, bytes[end] == UInt8(ascii: "(") {
                guard let close = bytes[end...].firstIndex(of: UInt8(ascii: ")")) else {
                    throw Error("\(location): %\(name)( has no closing )")
                }
                argument = String(decoding: bytes[(end + 1)..<close], as: UTF8.self)
                end = close + 1
            }
            var maxLength: Int?
            if end < bytes.count, bytes[end] == UInt8(ascii: ":") {
                var digitsEnd = end + 1
                while digitsEnd < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[digitsEnd]) { digitsEnd += 1 }
                guard digitsEnd > end + 1, digitsEnd - end <= 10,
                      let length = Int(String(decoding: bytes[(end + 1)..<digitsEnd], as: UTF8.self)) else {
                    throw Error("\(location): %\(name)'s : is not followed by a length")
                }
                maxLength = length
                end = digitsEnd
            }
            guard end < bytes.count, bytes[end] == UInt8(ascii: "%") else {
                throw Error("\(location): %\(name) is not closed by %")
            }
            if !literal.isEmpty {
                pieces.append(.literal(literal))
                literal = []
            }
            pieces.append(.command(try AccessLogCommand.parse(name: name, argument: argument, maxLength: maxLength, where: location)))
            index = end + 1
        }
        if !literal.isEmpty { pieces.append(.literal(literal)) }
        return pieces
    }

    private static func isCommandByte(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
            || byte == UInt8(ascii: "_")
    }

    /// The operators in this format whose data Capstan does not record: they print `-`.
    public var operatorsWithoutData: [String] {
        var names: [String] = []
        func visit(_ pieces: [Piece]) {
            for case .command(let command) in pieces {
                if case .withoutData(let name) = command.op, !names.contains(name) { names.append(name) }
            }
        }
        func visit(_ value: JSONValue) {
            switch value {
            case .string(let pieces): visit(pieces)
            case .object(let members): members.forEach { visit($0.value) }
            case .list(let values): values.forEach(visit)
            case .number, .bool, .null: break
            }
        }
        switch body {
        case .text(let pieces): visit(pieces)
        case .json(let members): members.forEach { visit($0.value) }
        }
        return names
    }
}
