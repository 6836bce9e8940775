import Configuration
import XDS

/// Envoy's `StringMatcher` on header values, query parameters and paths: exact, prefix, suffix, contains
/// (each optionally ignoring ASCII case, as Envoy's `ignore_case`) or an RE2 full match. Compares UTF-8
/// bytes in place: nothing is lowercased or copied per request. Immutable, and a class so that a check
/// hands on one reference rather than copying (and retaining) each of its parts.
public final class StringMatcher: Sendable {
    enum Pattern: Sendable {
        case exact([UInt8])
        case prefix([UInt8])
        case suffix([UInt8])
        case contains([UInt8])
        case regex(RegularExpression)
    }

    /// The pattern, kept as its kind and its bytes (or expression) side by side rather than as a
    /// `Pattern`: a check then reads them in place, where taking an enum's payload retains it.
    private enum Kind: BitwiseCopyable { case exact, prefix, suffix, contains, regex }
    private let kind: Kind
    private let wanted: [UInt8]
    private let regex: RegularExpression?
    /// ASCII case folded on both sides (`ignore_case`; RE2 patterns are unaffected, as in Envoy).
    let ignoreCase: Bool

    init(_ pattern: Pattern, ignoreCase: Bool = false) {
        let bytes: [UInt8]
        switch pattern {
        case .exact(let text): (kind, bytes, regex) = (.exact, text, nil)
        case .prefix(let text): (kind, bytes, regex) = (.prefix, text, nil)
        case .suffix(let text): (kind, bytes, regex) = (.suffix, text, nil)
        case .contains(let text): (kind, bytes, regex) = (.contains, text, nil)
        case .regex(let expression): (kind, bytes, regex) = (.regex, [], expression)
        }
        // Folded once here, so matching folds only the request's side.
        wanted = ignoreCase ? bytes.map(Self.folded) : bytes
        self.ignoreCase = ignoreCase
    }

    public convenience init(_ proto: Envoy_Type_Matcher_V3_StringMatcher, path: String) throws(ConfigError) {
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
        if kind == .regex, let regex { return regex.matchesWhole(text) }
        // Compared in place, in the string the substring is part of: a native string's bytes are contiguous.
        let whole = text.base.utf8
        let lower = whole.distance(from: whole.startIndex, to: text.startIndex)
        let upper = whole.distance(from: whole.startIndex, to: text.endIndex)
        return whole.withContiguousStorageIfAvailable { matches(bytes: UnsafeBufferPointer(rebasing: $0[lower..<upper])) }
            ?? Array(text.utf8).withUnsafeBufferPointer(matches(bytes:))
    }

    private func matches(bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        wanted.withUnsafeBufferPointer { wanted in
            guard bytes.count >= wanted.count else { return false }
            switch kind {
            case .exact: return bytes.count == wanted.count && equal(bytes[...], wanted)
            case .prefix: return equal(bytes.prefix(wanted.count), wanted)
            case .suffix: return equal(bytes.suffix(wanted.count), wanted)
            case .contains:
                for start in 0...(bytes.count - wanted.count) where equal(bytes[start..<start + wanted.count], wanted) { return true }
                return false
            case .regex: return false
            }
        }
    }

    private func equal(_ bytes: Slice<UnsafeBufferPointer<UInt8>>, _ wanted: UnsafeBufferPointer<UInt8>) -> Bool {
        ignoreCase ? bytes.elementsEqual(wanted) { Self.folded($0) == $1 } : bytes.elementsEqual(wanted)
    }

    /// ASCII lowercase, as Envoy's `absl::EqualsIgnoreCase`: other bytes compare as they are.
    static func folded(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
    }
}
