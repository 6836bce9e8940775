import FoundationEssentials

/// A parsed JSON or YAML configuration document: the tree the readers of Capstan's configuration walk, field path
/// in hand (the proxy's bootstrap is turned into protobuf messages from it).
public indirect enum ConfigValue: Codable, Sendable, Equatable {
    case object([String: ConfigValue])
    case array([ConfigValue])
    case string(String)
    case number(Double)
    case bool(Bool)
    case null

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([ConfigValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: ConfigValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .object(let fields): try container.encode(fields)
        case .array(let items): try container.encode(items)
        case .string(let text): try container.encode(text)
        case .number(let number):
            // Whole numbers print as integers, as the documents that carry them (CNI configs) expect.
            if let integer = Int64(exactly: number) { try container.encode(integer) } else { try container.encode(number) }
        case .bool(let flag): try container.encode(flag)
        case .null: try container.encodeNil()
        }
    }

    public static func parse(json text: String) throws -> ConfigValue {
        try JSONDecoder().decode(ConfigValue.self, from: Data(text.utf8))
    }

    /// The value as JSON text; keys sorted, so the same value always prints the same way.
    public func jsonText(pretty: Bool = false) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
                                          : [.sortedKeys, .withoutEscapingSlashes]
        // Encoding a tree of strings, numbers and containers cannot fail.
        let data = (try? encoder.encode(self)) ?? Data("null".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// The field of an object, or nil.
    public subscript(key: String) -> ConfigValue? {
        guard case .object(let fields) = self else { return nil }
        return fields[key]
    }

    /// The text of a string value, or nil.
    public var stringValue: String? {
        guard case .string(let text) = self else { return nil }
        return text
    }

    public var kind: String {
        switch self {
        case .object: "an object"
        case .array: "a list"
        case .string: "a string"
        case .number: "a number"
        case .bool: "true or false"
        case .null: "null"
        }
    }
}

/// A configuration error: where (`static_resources.clusters[1].connect_timeout`) and what.
public struct ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    public let path: String
    public let message: String

    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { "\(path.isEmpty ? "(document)" : path): \(message)" }
}

/// Reads one value of the document and knows its path, so every refusal names the field.
public struct ConfigReader {
    public let value: ConfigValue
    public let path: String

    public init(_ value: ConfigValue, path: String = "") {
        self.value = value
        self.path = path
    }

    public func fail(_ message: String) -> ConfigError { ConfigError(path: path, message: message) }

    private func childPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    public func fields() throws(ConfigError) -> [String: ConfigValue] {
        guard case .object(let fields) = value else { throw fail("expected an object, found \(value.kind)") }
        return fields
    }

    /// The field, or nil if absent (or null).
    public func optional(_ key: String) throws(ConfigError) -> ConfigReader? {
        guard let child = try fields()[key], child != .null else { return nil }
        return ConfigReader(child, path: childPath(key))
    }

    public func required(_ key: String) throws(ConfigError) -> ConfigReader {
        guard let child = try optional(key) else { throw ConfigError(path: childPath(key), message: "is required") }
        return child
    }

    /// Warns about fields Capstan does not implement (they are ignored, as the issue of each asks).
    public func ignoringUnknown(_ known: Set<String>, warnings: inout [String]) throws(ConfigError) {
        for key in try fields().keys.sorted() where !known.contains(key) {
            warnings.append("\(childPath(key)): not supported by Capstan, ignored")
        }
    }

    public func list() throws(ConfigError) -> [ConfigReader] {
        guard case .array(let items) = value else { throw fail("expected a list, found \(value.kind)") }
        return items.enumerated().map { ConfigReader($1, path: "\(path)[\($0)]") }
    }

    public func string() throws(ConfigError) -> String {
        guard case .string(let text) = value else { throw fail("expected a string, found \(value.kind)") }
        return text
    }

    public func bool() throws(ConfigError) -> Bool {
        guard case .bool(let flag) = value else { throw fail("expected true or false, found \(value.kind)") }
        return flag
    }

    /// Integers may come as JSON numbers or, as protobuf's JSON mapping allows, as strings.
    public func integer(in range: ClosedRange<Int>) throws(ConfigError) -> Int {
        let number: Double?
        switch value {
        case .number(let value): number = value
        case .string(let text): number = Double(text)
        default: number = nil
        }
        guard let number, number.rounded() == number, let integer = Int(exactly: number) else {
            throw fail("expected a whole number, found \(value.kind)")
        }
        guard range.contains(integer) else { throw fail("\(integer) is out of range \(range.lowerBound)-\(range.upperBound)") }
        return integer
    }

    /// A protobuf Duration in JSON: `"1.5s"`.
    public func duration() throws(ConfigError) -> Duration {
        guard case .string(let text) = value, text.hasSuffix("s"), let seconds = Double(text.dropLast()), seconds >= 0 else {
            throw fail("expected a duration such as \"1s\" or \"0.25s\"")
        }
        return .milliseconds(Int64((seconds * 1000).rounded()))
    }
}
