import CYAML

/// One document of a YAML stream (`---` separated, as `kubectl apply -f` reads them), as a
/// ``ConfigValue`` tree, with where it starts so errors can point at it.
///
/// Plain scalars are typed by YAML 1.2's core schema (`true`, `null`, `42`, `1.5`); quoted ones and
/// those tagged `!!str` stay strings. Anchors and aliases are resolved; a key given twice is refused,
/// as Kubernetes' strict decoding does.
public struct YAMLDocument: Sendable {
    /// Position in the stream, from 0.
    public var index: Int
    /// The line the document starts on, from 1.
    public var line: Int
    public var value: ConfigValue

    /// Every non-empty document of `text`.
    public static func parseAll(_ text: String) throws(YAMLError) -> [YAMLDocument] {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { throw YAMLError(line: 0, column: 0, message: "cannot start the YAML parser") }
        defer { yaml_parser_delete(&parser) }
        let bytes = Array(text.utf8)
        return try bytes.withUnsafeBufferPointer { buffer throws(YAMLError) in
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            var builder = TreeBuilder()
            while true {
                var event = yaml_event_t()
                guard yaml_parser_parse(&parser, &event) == 1 else {
                    let mark = parser.problem_mark
                    let problem = parser.problem.map { String(cString: $0) } ?? "malformed YAML"
                    throw YAMLError(line: mark.line + 1, column: mark.column + 1, message: problem)
                }
                defer { yaml_event_delete(&event) }
                if event.type == YAML_STREAM_END_EVENT { break }
                try builder.consume(event)
            }
            return builder.documents
        }
    }
}

/// A YAML syntax error, with its position.
public struct YAMLError: Error, CustomStringConvertible, Sendable, Equatable {
    public var line: Int
    public var column: Int
    public var message: String

    public var description: String { "line \(line), column \(column): \(message)" }
}

/// Turns libyaml's events into values: a stack of open collections.
private struct TreeBuilder {
    enum Frame {
        case mapping([String: ConfigValue], key: String?, anchor: String?, line: Int)
        case sequence([ConfigValue], anchor: String?)
    }

    var documents: [YAMLDocument] = []
    private var stack: [Frame] = []
    private var anchors: [String: ConfigValue] = [:]
    private var documentLine = 1
    private var documentIndex = 0
    private var root: ConfigValue?

    mutating func consume(_ event: yaml_event_t) throws(YAMLError) {
        let line = Int(event.start_mark.line) + 1
        let column = Int(event.start_mark.column) + 1
        switch event.type {
        case YAML_DOCUMENT_START_EVENT:
            documentLine = line
            anchors = [:]
            root = nil
        case YAML_DOCUMENT_END_EVENT:
            if let root, root != .null {
                documents.append(YAMLDocument(index: documentIndex, line: documentLine, value: root))
            }
            documentIndex += 1
        case YAML_MAPPING_START_EVENT:
            stack.append(.mapping([:], key: nil, anchor: Self.text(event.data.mapping_start.anchor), line: line))
        case YAML_SEQUENCE_START_EVENT:
            stack.append(.sequence([], anchor: Self.text(event.data.sequence_start.anchor)))
        case YAML_MAPPING_END_EVENT:
            guard case .mapping(let fields, _, let anchor, _) = stack.popLast() else { return }
            try add(.object(fields), anchor: anchor, line: line, column: column)
        case YAML_SEQUENCE_END_EVENT:
            guard case .sequence(let items, let anchor) = stack.popLast() else { return }
            try add(.array(items), anchor: anchor, line: line, column: column)
        case YAML_SCALAR_EVENT:
            let scalar = event.data.scalar
            let text = String(decoding: UnsafeBufferPointer(start: scalar.value, count: scalar.length), as: UTF8.self)
            let tag = Self.text(scalar.tag)
            let value: ConfigValue
            if Self.isMappingKeyPosition(stack) {
                value = .string(text)
            } else if scalar.style == YAML_PLAIN_SCALAR_STYLE && tag == nil {
                value = Self.resolvePlain(text)
            } else {
                value = .string(text)
            }
            try add(value, anchor: Self.text(scalar.anchor), line: line, column: column)
        case YAML_ALIAS_EVENT:
            let name = Self.text(event.data.alias.anchor) ?? ""
            guard let value = anchors[name] else {
                throw YAMLError(line: line, column: column, message: "alias *\(name) names no anchor")
            }
            try add(value, anchor: nil, line: line, column: column)
        default:
            break
        }
    }

    private static func isMappingKeyPosition(_ stack: [Frame]) -> Bool {
        if case .mapping(_, nil, _, _) = stack.last { return true }
        return false
    }

    /// Puts a finished value where it belongs: as a key, as a key's value, as an item, or as the root.
    private mutating func add(_ value: ConfigValue, anchor: String?, line: Int, column: Int) throws(YAMLError) {
        if let anchor { anchors[anchor] = value }
        guard let top = stack.popLast() else {
            root = value
            return
        }
        switch top {
        case .mapping(var fields, let key, let mappingAnchor, let mappingLine):
            if let key {
                fields[key] = value
                stack.append(.mapping(fields, key: nil, anchor: mappingAnchor, line: mappingLine))
            } else {
                guard case .string(let name) = value else {
                    throw YAMLError(line: line, column: column, message: "a mapping key must be a scalar")
                }
                guard fields[name] == nil else {
                    throw YAMLError(line: line, column: column, message: "key \"\(name)\" appears twice in one mapping")
                }
                stack.append(.mapping(fields, key: name, anchor: mappingAnchor, line: mappingLine))
            }
        case .sequence(var items, let sequenceAnchor):
            items.append(value)
            stack.append(.sequence(items, anchor: sequenceAnchor))
        }
    }

    private static func text(_ pointer: UnsafeMutablePointer<yaml_char_t>?) -> String? {
        pointer.map { String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)) }
    }

    /// YAML 1.2 core schema for untagged plain scalars.
    static func resolvePlain(_ text: String) -> ConfigValue {
        switch text {
        case "", "~", "null", "Null", "NULL": return .null
        case "true", "True", "TRUE": return .bool(true)
        case "false", "False", "FALSE": return .bool(false)
        default: break
        }
        let digits = text.hasPrefix("-") || text.hasPrefix("+") ? text.dropFirst() : Substring(text)
        if !digits.isEmpty, digits.allSatisfy(\.isNumber), let number = Double(text) {
            return .number(number)
        }
        if text.hasPrefix("0x"), let number = Int(text.dropFirst(2), radix: 16) { return .number(Double(number)) }
        if text.hasPrefix("0o"), let number = Int(text.dropFirst(2), radix: 8) { return .number(Double(number)) }
        // Floats need a digit, so that names such as "e" or "inf-service" stay strings.
        if text.contains(where: \.isNumber), text.allSatisfy({ $0.isNumber || "+-.eE".contains($0) }), let number = Double(text) {
            return .number(number)
        }
        return .string(text)
    }
}
