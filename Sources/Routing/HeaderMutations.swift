import Configuration
import HTTPTypes
import XDS

/// The headers a route adds to and removes from a request or its response, merged at compile time from
/// every level that names some: the chosen weighted cluster, the route, its virtual host and the route
/// configuration. Envoy evaluates them from the most specific level to the least (each level removing,
/// then adding), or the other way round with `most_specific_header_mutations_wins`, so that the last
/// level written wins an overwrite.
public struct HeaderMutations: Sendable, Equatable {
    /// One header to add, and what to do if the message already has it (Envoy's `HeaderAppendAction`).
    public struct Addition: Sendable, Equatable {
        public enum Action: Sendable, Equatable {
            /// Another value after those there (`APPEND_IF_EXISTS_OR_ADD`).
            case append
            /// Only if there is none (`ADD_IF_ABSENT`).
            case addIfAbsent
            /// In place of those there, or added (`OVERWRITE_IF_EXISTS_OR_ADD`).
            case overwriteOrAdd
            /// In place of those there; nothing if there are none (`OVERWRITE_IF_EXISTS`).
            case overwriteIfExists
        }

        public var name: HTTPField.Name
        public var value: String
        public var action: Action
        /// `keep_empty_value`: an empty value is added rather than skipped.
        public var keepsEmptyValue: Bool
    }

    public enum Operation: Sendable, Equatable {
        case remove(HTTPField.Name)
        case add(Addition)
    }

    /// In the order they are applied.
    public private(set) var operations: [Operation] = []

    public var isEmpty: Bool { operations.isEmpty }

    init() {}

    /// One level's header changes (`request_headers_to_add` and `request_headers_to_remove`, or the
    /// response's); `path` names the level, `fields` its two field names.
    init(adding: [Envoy_Config_Core_V3_HeaderValueOption], removing: [String], path: String,
         fields: (add: String, remove: String)) throws(ConfigError) {
        for (index, name) in removing.enumerated() {
            operations.append(.remove(try Self.name(name, path: "\(path).\(fields.remove)[\(index)]")))
        }
        for (index, option) in adding.enumerated() {
            operations.append(.add(try Self.addition(option, path: "\(path).\(fields.add)[\(index)]")))
        }
    }

    /// Levels from the most specific; reversed when the least specific should be applied first.
    init(levels: [HeaderMutations], mostSpecificWins: Bool) {
        operations = (mostSpecificWins ? levels.reversed() : levels).flatMap(\.operations)
    }

    public func apply(to fields: inout HTTPFields) {
        for operation in operations {
            switch operation {
            case .remove(let name): fields[values: name] = []
            case .add(let addition):
                if addition.value.isEmpty && !addition.keepsEmptyValue { continue }
                switch addition.action {
                case .append: fields.append(HTTPField(name: addition.name, value: addition.value))
                case .addIfAbsent: if !fields.contains(addition.name) { fields.append(HTTPField(name: addition.name, value: addition.value)) }
                case .overwriteOrAdd: fields[values: addition.name] = [addition.value]
                case .overwriteIfExists: if fields.contains(addition.name) { fields[values: addition.name] = [addition.value] }
                }
            }
        }
    }

    /// Envoy refuses changes to pseudo-headers and `host`: the authority is rewritten with host_rewrite_*.
    private static func name(_ text: String, path: String) throws(ConfigError) -> HTTPField.Name {
        guard !text.hasPrefix(":"), text.lowercased() != "host", let name = HTTPField.Name(text) else {
            throw ConfigError(path: path, message: "\"\(text)\" cannot be changed: not a header name, a pseudo-header or host")
        }
        return name
    }

    private static func addition(_ option: Envoy_Config_Core_V3_HeaderValueOption, path: String) throws(ConfigError) -> Addition {
        let name = try name(option.header.key, path: "\(path).header.key")
        guard option.header.rawValue.isEmpty else {
            throw ConfigError(path: "\(path).header.raw_value", message: "is not supported: give value")
        }
        // Envoy's header values are format strings (%DOWNSTREAM_REMOTE_ADDRESS% …); Capstan fills in none
        // yet, so it refuses one rather than send it literally. `%%` is a literal percent sign.
        let value = option.header.value
        guard !value.replacing("%%", with: "").contains("%") else {
            throw ConfigError(path: "\(path).header.value", message: "\"\(value)\" uses a %COMMAND% substitution, which Capstan does not support")
        }
        let action: Addition.Action
        if option.hasAppend {
            // The deprecated `append` and `append_action` exclude each other.
            guard option.appendAction == .appendIfExistsOrAdd else {
                throw ConfigError(path: "\(path).append", message: "cannot be given with append_action")
            }
            action = option.append.value ? .append : .overwriteOrAdd
        } else {
            switch option.appendAction {
            case .appendIfExistsOrAdd: action = .append
            case .addIfAbsent: action = .addIfAbsent
            case .overwriteIfExistsOrAdd: action = .overwriteOrAdd
            case .overwriteIfExists: action = .overwriteIfExists
            case .UNRECOGNIZED(let number):
                throw ConfigError(path: "\(path).append_action", message: "\(number) is not a HeaderAppendAction")
            }
        }
        return Addition(name: name, value: value.replacing("%%", with: "%"), action: action, keepsEmptyValue: option.keepEmptyValue)
    }
}
