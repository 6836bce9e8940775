import Configuration
import SwiftProtobuf

/// Reads a JSON tree (from a JSON or YAML file) into a protobuf message with SwiftProtobuf's JSON mapping,
/// as Envoy reads its bootstrap, and names the field path of every problem, which SwiftProtobuf's own
/// errors do not.
///
/// A field the message does not have is a warning (`path: not supported by Capstan, ignored`) and is left
/// out; any other problem (a wrong type, an enum value Capstan does not know, two fields of one oneof) is
/// a refusal. The contents of each `Any` (`typed_config`) are read the same way, as the message type its
/// `@type` names; an `Any` of a type Capstan has no message for is a warning naming its path, and is kept
/// as it is, for the decoder to refuse or pass over by its type URL.
///
/// When a tree does not decode, the problem is found by decoding trimmed copies: the path from the root
/// to one field, with everything beside it left out. Proto3 JSON has no required fields, so a trimmed
/// copy fails only for what it still holds.
struct ProtobufJSONReader {
    /// Fields left out and `Any`s left unchecked, each with its path.
    private(set) var warnings: [String] = []

    /// `value` as an `M`. Errors and warnings name fields under `path`.
    mutating func decode<M: SwiftProtobuf.Message>(_ value: ConfigValue, as type: M.Type, path: String) throws(ConfigError) -> M {
        var value = value
        try check(&value, as: type, path: path)
        do {
            return try M(jsonString: value.jsonText())
        } catch {
            // Everything the check found is gone from `value`; nothing else can fail.
            throw ConfigError(path: path, message: "not a valid \(M.protoMessageName): \(error)")
        }
    }

    /// Checks `value` as an `M`, leaving out (with a warning) the fields `M` does not have, then checks the
    /// contents of each `Any` in it as the type it names.
    private mutating func check<M: SwiftProtobuf.Message>(_ value: inout ConfigValue, as type: M.Type, path: String) throws(ConfigError) {
        // SwiftProtobuf reads an Any's contents only when asked: check this message with each Any reduced
        // to its type URL, then each Any's contents on their own.
        let anys = Self.anyPositions(in: value)
        var outer = value
        for position in anys {
            let url = position.value(in: value)?["@type"] ?? .null
            position.replace(in: &outer, with: .object(["@type": url]))
        }
        let probe = TrimmedDecoding<M>(root: outer)
        var dropped: [FieldPosition] = []
        for (position, problem) in probe.problems() {
            let fieldPath = position.path(under: path)
            if case .decoding(let error) = problem, case JSONDecodingError.unknownField? = error as? JSONDecodingError {
                warnings.append("\(fieldPath): not supported by Capstan, ignored")
                position.remove(from: &value)
                dropped.append(position)
            } else {
                throw ConfigError(path: fieldPath, message: probe.explain(problem, at: position))
            }
        }
        for position in anys where !dropped.contains(where: { $0.contains(position) }) {
            guard case .object(var fields)? = position.value(in: value), let url = fields.removeValue(forKey: "@type")?.stringValue else {
                continue
            }
            let anyPath = position.path(under: path)
            guard let messageType = Google_Protobuf_Any.messageType(forTypeURL: url) else {
                warnings.append("\(anyPath): \"\(url)\" is not a type Capstan has a message for: its fields are not checked")
                continue
            }
            var contents = ConfigValue.object(fields)
            try checkContents(&contents, as: messageType, path: anyPath)
            fields = (contents.objectFields ?? [:]).merging(["@type": .string(url)]) { _, url in url }
            position.replace(in: &value, with: .object(fields))
        }
    }

    /// The contents of an `Any` as the message type it names: its fields, or, for the well-known types
    /// with a JSON form of their own (a Duration's `"1s"`), its `value`.
    private mutating func checkContents(_ contents: inout ConfigValue, as type: any SwiftProtobuf.Message.Type,
                                        path: String) throws(ConfigError) {
        let wellKnown = type.protoMessageName.hasPrefix("google.protobuf.")
        if wellKnown, var inner = contents["value"], contents.objectFields?.count == 1 {
            try check(&inner, as: type, path: "\(path).value")
            contents = .object(["value": inner])
        } else {
            try check(&contents, as: type, path: path)
        }
    }

    /// Where the objects with an `@type` are (the `Any`s), outermost only: those inside an Any's contents
    /// are checked with the contents.
    private static func anyPositions(in value: ConfigValue, at position: FieldPosition = FieldPosition()) -> [FieldPosition] {
        switch value {
        case .object(let fields):
            if !position.steps.isEmpty, fields["@type"]?.stringValue != nil { return [position] }
            return fields.keys.sorted().flatMap { anyPositions(in: fields[$0]!, at: position.appending(.key($0))) }
        case .array(let items):
            return items.indices.flatMap { anyPositions(in: items[$0], at: position.appending(.index($0))) }
        default:
            return []
        }
    }
}

/// A place in a JSON tree: keys and list indices from the root.
struct FieldPosition: Equatable {
    enum Step: Equatable {
        case key(String)
        case index(Int)
    }

    var steps: [Step] = []

    func appending(_ step: Step) -> FieldPosition { FieldPosition(steps: steps + [step]) }

    /// Whether `other` is this position or below it.
    func contains(_ other: FieldPosition) -> Bool { other.steps.starts(with: steps) }

    /// `static_resources.clusters[0].connect_timeout`, under `root` when given.
    func path(under root: String) -> String {
        var path = root
        for step in steps {
            switch step {
            case .key(let key): path += path.isEmpty ? key : ".\(key)"
            case .index(let index): path += "[\(index)]"
            }
        }
        return path
    }

    func value(in root: ConfigValue) -> ConfigValue? {
        var current = root
        for step in steps {
            switch (step, current) {
            case (.key(let key), .object(let fields)):
                guard let next = fields[key] else { return nil }
                current = next
            case (.index(let index), .array(let items)) where items.indices.contains(index):
                current = items[index]
            default:
                return nil
            }
        }
        return current
    }

    func replace(in root: inout ConfigValue, with value: ConfigValue) {
        Self.update(&root, steps[...]) { $0 = value }
    }

    func remove(from root: inout ConfigValue) {
        guard case .key(let key)? = steps.last else { return }
        Self.update(&root, steps.dropLast()) { parent in
            if case .object(var fields) = parent {
                fields.removeValue(forKey: key)
                parent = .object(fields)
            }
        }
    }

    private static func update(_ node: inout ConfigValue, _ steps: ArraySlice<Step>, _ change: (inout ConfigValue) -> Void) {
        guard let step = steps.first else { return change(&node) }
        switch (step, node) {
        case (.key(let key), .object(var fields)):
            guard var child = fields[key] else { return }
            node = .null  // one reference to the fields while they change
            update(&child, steps.dropFirst(), change)
            fields[key] = child
            node = .object(fields)
        case (.index(let index), .array(var items)) where items.indices.contains(index):
            node = .null
            update(&items[index], steps.dropFirst(), change)
            node = .array(items)
        default:
            return
        }
    }
}

/// Finds where a JSON tree fails to decode as an `M`, by decoding trimmed copies of it (``ProtobufJSONReader``).
private struct TrimmedDecoding<M: SwiftProtobuf.Message> {
    /// Why the value at a position fails.
    enum Problem {
        /// SwiftProtobuf's error for the value on its own.
        case decoding(any Error)
        /// An `Any` with fields but no `@type`.
        case missingTypeURL
    }

    let root: ConfigValue
    private static var emptyMessageURL: ConfigValue { .string("type.googleapis.com/google.protobuf.Empty") }

    /// Each place that fails on its own; empty when the tree decodes.
    func problems() -> [(FieldPosition, Problem)] {
        guard failure(root) != nil else { return [] }
        var found: [(FieldPosition, Problem)] = []
        explore(FieldPosition(), found: &found)
        return found
    }

    /// A value at `position` fails if it fails without its contents (it is the wrong kind of value, an
    /// unknown field, an Any with a bad type URL); otherwise each of its fields or items that fails on its
    /// own is explored in turn. If none does, they fail together (two fields of one oneof): the value does.
    private func explore(_ position: FieldPosition, found: inout [(FieldPosition, Problem)]) {
        guard let value = position.value(in: root) else { return }
        func fails(_ replacement: ConfigValue) -> (any Error)? { failure(trimmed(to: position, holding: replacement)) }
        var children: [(FieldPosition, ConfigValue)] = []
        var empty: ConfigValue
        switch value {
        case .object(let fields):
            let kept = fields.filter { $0.key == "@type" }
            empty = .object(kept)
            children = fields.keys.sorted().filter { $0 != "@type" }.map { key in
                (position.appending(.key(key)), .object(kept.merging([key: fields[key]!]) { old, _ in old }))
            }
            // Fields where an Any belongs, without the type that says what they are.
            if kept.isEmpty, !fields.isEmpty, fails(value) != nil,
               fails(.object(fields.merging(["@type": Self.emptyMessageURL]) { old, _ in old })) == nil {
                found.append((position, .missingTypeURL))
                return
            }
        case .array(let items):
            empty = .array([])
            children = items.indices.map { (position.appending(.index($0)), .array([items[$0]])) }
        default:
            if let error = fails(value) { found.append((position, .decoding(error))) }
            return
        }
        if let error = fails(empty) {
            found.append((position, .decoding(error)))
            return
        }
        var anyChildFails = false
        for (child, alone) in children where fails(alone) != nil {
            anyChildFails = true
            explore(child, found: &found)
        }
        if !anyChildFails, let error = fails(value) { found.append((position, .decoding(error))) }
    }

    /// The root with only the path to `position` kept (each object on the way keeps its `@type`, each
    /// list only the item on the way), and `replacement` at `position`.
    private func trimmed(to position: FieldPosition, holding replacement: ConfigValue) -> ConfigValue {
        func build(_ node: ConfigValue, _ steps: ArraySlice<FieldPosition.Step>) -> ConfigValue {
            guard let step = steps.first else { return replacement }
            switch (step, node) {
            case (.key(let key), .object(let fields)):
                var kept = fields.filter { $0.key == "@type" }
                kept[key] = build(fields[key] ?? .null, steps.dropFirst())
                return .object(kept)
            case (.index(let index), .array(let items)):
                return .array([build(items[index], steps.dropFirst())])
            default:
                return node
            }
        }
        return build(root, position.steps[...])
    }

    private func failure(_ value: ConfigValue) -> (any Error)? {
        do {
            _ = try M(jsonString: value.jsonText())
            return nil
        } catch {
            return error
        }
    }

    /// What a problem at `position` means, in words.
    func explain(_ problem: Problem, at position: FieldPosition) -> String {
        let value = position.value(in: root) ?? .null
        let found = value.summary
        guard case .decoding(let error) = problem else { return "needs \"@type\", the type URL of the message it holds" }
        switch error as? JSONDecodingError {
        case .malformedNumber?:
            // A whole number refused is out of the field's range (a negative one for an unsigned field).
            if case .number(let number) = value, number.rounded() == number { return "\(found) is out of range for this field" }
            // Most numeric fields take whole numbers only: say so when a fraction is refused too.
            let takesFractions = failure(trimmed(to: position, holding: .number(0.5))) == nil
            return "expected \(takesFractions ? "a number" : "a whole number"), found \(found)"
        case .numberRange?:
            return "\(found) is out of range for this field"
        case .malformedBool?:
            return "expected true or false, found \(found)"
        case .malformedString?, .invalidUTF8?:
            // Durations are strings in JSON (`"1s"`), which YAML writers often leave out.
            if failure(trimmed(to: position, holding: .string("1s"))) == nil {
                return "expected a duration such as \"1s\" or \"0.25s\", found \(found)"
            }
            return "expected a string, found \(found)"
        case .unrecognizedEnumValue?:
            return "\(found) is not a value Capstan knows for this field"
        case .malformedDuration?:
            return "expected a duration such as \"1s\" or \"0.25s\", found \(found)"
        case .illegalNull?:
            return "may not be null"
        case .conflictingOneOf?:
            return "sets more than one field of a oneof: only one of them may be given"
        default:
            if let url = value["@type"] { return "\(url.summary) is not a type URL (type.googleapis.com/NAME)" }
            return "found \(found), which this field cannot hold"
        }
    }
}

extension ConfigValue {
    /// The fields of an object, or nil.
    var objectFields: [String: ConfigValue]? {
        guard case .object(let fields) = self else { return nil }
        return fields
    }

    /// The value as a message shows it: strings and numbers as written, containers by kind.
    var summary: String {
        switch self {
        case .object, .array: kind
        default: jsonText()
        }
    }
}
