import CRE2
import Configuration
import XDS

/// A compiled RE2 regular expression: Envoy's `safe_regex` has RE2's syntax and semantics (linear time,
/// no backreferences), so Capstan runs RE2 itself rather than an engine that differs at the edges.
/// Compiled once when a route table is built; RE2 objects are safe to match from many threads after
/// construction, which makes this immutable class `Sendable`.
public final class RegularExpression: @unchecked Sendable {
    private let compiled: OpaquePointer
    /// The pattern as configured.
    public let pattern: String

    /// Compiles `pattern`; a pattern RE2 refuses is a refusal naming `path`, with RE2's reason.
    public init(_ pattern: String, path: String) throws(ConfigError) {
        var error: UnsafeMutablePointer<CChar>?
        var text = pattern
        let compiled = text.withUTF8 { cre2_compile($0.baseAddress, $0.count, &error) }
        guard let compiled else {
            let reason = error.map { String(cString: $0) } ?? "RE2 refuses it"
            cre2_free_string(error)
            throw ConfigError(path: path, message: "\"\(pattern)\" is not a valid RE2 regular expression: \(reason)")
        }
        self.compiled = compiled
        self.pattern = pattern
    }

    /// Envoy's `RegexMatcher` (`safe_regex`): RE2 is its only engine.
    convenience init(_ matcher: Envoy_Type_Matcher_V3_RegexMatcher, path: String) throws(ConfigError) {
        try self.init(matcher.regex, path: "\(path).regex")
    }

    deinit { cre2_free(compiled) }

    /// Whether the whole of `text` matches (RE2::FullMatch), as Envoy's matchers ask.
    public func matchesWhole(_ text: Substring) -> Bool {
        var text = text
        return text.withUTF8 { cre2_full_match(compiled, $0.baseAddress, $0.count) }
    }

    /// Whether some part of `text` matches (RE2::PartialMatch).
    public func matchesPart(_ text: Substring) -> Bool {
        var text = text
        return text.withUTF8 { cre2_partial_match(compiled, $0.baseAddress, $0.count) }
    }

    /// Refuses a substitution naming a group the pattern lacks, so a rewrite never fails per request.
    func checkSubstitution(_ substitution: String, path: String) throws(ConfigError) {
        var error: UnsafeMutablePointer<CChar>?
        var text = substitution
        guard !text.withUTF8({ cre2_check_rewrite(compiled, $0.baseAddress, $0.count, &error) }) else { return }
        let reason = error.map { String(cString: $0) } ?? "RE2 refuses it"
        cre2_free_string(error)
        throw ConfigError(path: path, message: "\"\(substitution)\" does not fit the pattern: \(reason)")
    }

    /// Every non-overlapping match in `text` replaced by `substitution` (RE2's rewrite syntax, `\1` for the
    /// first group); nil when nothing matched.
    public func replacingMatches(in text: Substring, with substitution: String) -> String? {
        var text = text
        var substitution = substitution
        var length = 0
        let result = text.withUTF8 { text in
            substitution.withUTF8 { rewrite in
                cre2_global_replace(compiled, text.baseAddress, text.count, rewrite.baseAddress, rewrite.count, &length)
            }
        }
        guard let result else { return nil }
        defer { cre2_free_string(result) }
        return result.withMemoryRebound(to: UInt8.self, capacity: length) {
            String(decoding: UnsafeBufferPointer(start: $0, count: length), as: UTF8.self)
        }
    }
}

/// Envoy's `RegexMatchAndSubstitute`: a pattern and what replaces each of its matches.
public struct RegexSubstitution: Sendable {
    public let regex: RegularExpression
    public let substitution: String

    init(_ proto: Envoy_Type_Matcher_V3_RegexMatchAndSubstitute, path: String) throws(ConfigError) {
        guard proto.hasPattern else { throw ConfigError(path: "\(path).pattern", message: "is required") }
        regex = try RegularExpression(proto.pattern, path: "\(path).pattern")
        try regex.checkSubstitution(proto.substitution, path: "\(path).substitution")
        substitution = proto.substitution
    }

    /// `text` with every match replaced; unchanged when nothing matches.
    public func apply(to text: Substring) -> String {
        regex.replacingMatches(in: text, with: substitution) ?? String(text)
    }
}
