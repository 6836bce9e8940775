import Configuration
import HTTPTypes
import XDS

/// Envoy's `HeaderMatcher`: a request header (or pseudo-header: `:authority`, `:path`, `:method`,
/// `:scheme`) tested against a value. A header sent more than once is tested as its values joined by
/// commas, as Envoy does; a header absent matches only `present_match: false` (or, inverted, `true`),
/// unless `treat_missing_header_as_empty`. Immutable, and a class so that a check hands on one reference
/// rather than copying (and retaining) each of its parts.
public final class HeaderMatcher: Sendable {
    enum Source: Sendable {
        case field(HTTPField.Name)
        case method, scheme, authority, path
    }

    /// The test, apart from its string matcher: a check reads that in place, where taking it out of an
    /// enum's payload would copy (and retain) it.
    enum Test: Sendable, BitwiseCopyable {
        /// `string`.
        case string
        case range(lower: Int64, upper: Int64)
        /// `present_match`: true matches a header that is there, false one that is not.
        case present(Bool)
    }

    let name: String
    let source: Source
    let test: Test
    /// The `.string` test's matcher (an empty exact one, never used, for the other tests).
    let string: StringMatcher
    let inverted: Bool
    let missingIsEmpty: Bool

    public init(_ proto: Envoy_Config_Route_V3_HeaderMatcher, path: String) throws(ConfigError) {
        name = proto.name.lowercased()
        switch name {
        case ":method": source = .method
        case ":scheme": source = .scheme
        case ":authority", "host": source = .authority
        case ":path": source = .path
        default:
            guard let field = HTTPField.Name(name) else {
                throw ConfigError(path: "\(path).name", message: "\"\(proto.name)\" is not a header name")
            }
            source = .field(field)
        }
        var string = StringMatcher(.exact([]))
        switch proto.headerMatchSpecifier {
        case .exactMatch(let value)?: (test, string) = (.string, StringMatcher(.exact(Array(value.utf8))))
        case .prefixMatch(let value)?: (test, string) = (.string, StringMatcher(.prefix(try StringMatcher.nonEmpty(value, path: "\(path).prefix_match"))))
        case .suffixMatch(let value)?: (test, string) = (.string, StringMatcher(.suffix(try StringMatcher.nonEmpty(value, path: "\(path).suffix_match"))))
        case .containsMatch(let value)?: (test, string) = (.string, StringMatcher(.contains(try StringMatcher.nonEmpty(value, path: "\(path).contains_match"))))
        case .safeRegexMatch(let regex)?: (test, string) = (.string, StringMatcher(.regex(try RegularExpression(regex, path: "\(path).safe_regex_match"))))
        case .stringMatch(let matcher)?: (test, string) = (.string, try StringMatcher(matcher, path: "\(path).string_match"))
        case .rangeMatch(let range)?:
            guard range.start < range.end else {
                throw ConfigError(path: "\(path).range_match", message: "start \(range.start) must be below end \(range.end)")
            }
            test = .range(lower: range.start, upper: range.end)
        case .presentMatch(let present)?: test = .present(present)
        // Envoy: a matcher with no specifier tests only that the header is there.
        case nil: test = .present(true)
        }
        self.string = string
        inverted = proto.invertMatch
        missingIsEmpty = proto.treatMissingHeaderAsEmpty
    }

    public func matches(_ request: HTTPRequest) -> Bool {
        guard let value = value(in: request) else {
            if missingIsEmpty { return matches(value: "") }
            guard case .present(let present) = test else { return false }
            return present == inverted
        }
        return matches(value: value)
    }

    private func matches(value: Substring) -> Bool {
        let matched = switch test {
        case .string: string.matches(value)
        case .range(let lower, let upper): Int64(value).map { (lower..<upper).contains($0) } ?? false
        case .present(let present): present
        }
        return matched != inverted
    }

    /// The value tested: a pseudo-header's, or a header's values joined by commas (allocating only when the
    /// header is sent more than once).
    private func value(in request: HTTPRequest) -> Substring? {
        switch source {
        case .method: return Substring(request.method.rawValue)
        case .scheme: return request.scheme.map { Substring($0) }
        case .authority: return request.authority.map { Substring($0) }
        case .path: return request.path.map { Substring($0) }
        case .field(let name):
            var first: Substring?
            var joined: String?
            for field in request.headerFields where field.name == name {
                if let value = first {
                    joined = (joined ?? String(value)) + "," + field.value
                } else {
                    first = Substring(field.value)
                }
            }
            return joined.map { Substring($0) } ?? first
        }
    }
}
