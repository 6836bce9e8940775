import Configuration
import XDS

/// Envoy's `StringMatcher` on header values, query parameters and paths: exact, prefix, suffix, contains
/// (each optionally ignoring ASCII case, as Envoy's `ignore_case`) or an RE2 full match. Compares UTF-8
/// bytes in place: nothing is lowercased or copied per request.
public struct StringMatcher: Sendable {
    enum Pattern: Sendable {
        case exact([UInt8])
        case prefix([UInt8])
        case suffix([UInt8])
        case contains([UInt8])
        case regex(RegularExpression)
    }

    let pattern: Pattern
    /// ASCII case folded on both sides (`ignore_case`; RE2 patterns are unaffected, as in Envoy).
    let ignoreCase: Bool

    init(_ pattern: Pattern, ignoreCase: Bool = false) {
        // Folded once here, so matching folds only the request's side.
        switch pattern {
        case .exact(let bytes) where ignoreCase: self.pattern = .exact(bytes.map(Self.folded))
        case .prefix(let bytes) where ignoreCase: self.pattern = .prefix(bytes.map(Self.folded))
        case .suffix(let bytes) where ignoreCase: self.pattern = .suffix(bytes.map(Self.folded))
        case .contains(let bytes) where ignoreCase: self.pattern = .contains(bytes.map(Self.folded))
        default: self.pattern = pattern
        }
        self.ignoreCase = ignoreCase
    }

    public init(_ proto: Envoy_Type_Matcher_V3_StringMatcher, path: String) throws(ConfigError) {
        switch proto.matchPattern {
        case .exact(let text)?: self.init(.exact(Array(text.utf8)), ignoreCase: proto.ignoreCase)
        case .prefix(let text)?: self.init(.prefix(try Self.nonEmpty(text, path: "\(path).prefix")), ignoreCase: proto.ignoreCase)
        case .suffix(let text)?: self.init(.suffix(try Self.nonEmpty(text, path: "\(path).suffix")), ignoreCase: proto.ignoreCase)
        case .contains(let text)?: self.init(.contains(try Self.nonEmpty(text, path: "\(path).contains")), ignoreCase: proto.ignoreCase)
        case .safeRegex(let regex)?: self.init(.regex(try RegularExpression(regex, path: "\(path).safe_regex")))
        case nil: throw ConfigError(path: path, message: "needs exact, prefix, suffix, contains or safe_regex")
        }
    }

    /// Envoy refuses an empty prefix, suffix or substring (`min_len: 1`).
    static func nonEmpty(_ text: String, path: String) throws(ConfigError) -> [UInt8] {
        guard !text.isEmpty else { throw ConfigError(path: path, message: "must not be empty") }
        return Array(text.utf8)
    }

    public func matches(_ text: Substring) -> Bool {
        let bytes = text.utf8
        switch pattern {
        case .exact(let wanted): return bytes.count == wanted.count && equal(bytes, wanted)
        case .prefix(let wanted): return bytes.count >= wanted.count && equal(bytes.prefix(wanted.count), wanted)
        case .suffix(let wanted): return bytes.count >= wanted.count && equal(bytes.suffix(wanted.count), wanted)
        case .contains(let wanted):
            guard bytes.count >= wanted.count else { return false }
            var start = bytes.startIndex
            for _ in 0...(bytes.count - wanted.count) {
                if equal(bytes[start...].prefix(wanted.count), wanted) { return true }
                bytes.formIndex(after: &start)
            }
            return false
        case .regex(let regex): return regex.matchesWhole(text)
        }
    }

    private func equal(_ bytes: Substring.UTF8View.SubSequence, _ wanted: [UInt8]) -> Bool {
        ignoreCase ? bytes.elementsEqual(wanted) { Self.folded($0) == $1 } : bytes.elementsEqual(wanted)
    }

    /// ASCII lowercase, as Envoy's `absl::EqualsIgnoreCase`: other bytes compare as they are.
    static func folded(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
    }
}
