import Configuration
import XDS

/// Envoy's `QueryParameterMatcher`: the first value of a query parameter, as sent (not percent-decoded),
/// against a string matcher, or only its presence. Reads the query string in place, per matcher.
public struct QueryParameterMatcher: Sendable {
    let name: String
    /// nil: the parameter only has to be there.
    let value: StringMatcher?

    init(_ proto: Envoy_Config_Route_V3_QueryParameterMatcher, path: String) throws(ConfigError) {
        guard !proto.name.isEmpty else { throw ConfigError(path: "\(path).name", message: "is required") }
        name = proto.name
        switch proto.queryParameterMatchSpecifier {
        case .stringMatch(let matcher)?: value = try StringMatcher(matcher, path: "\(path).string_match")
        case .presentMatch(true)?, nil: value = nil
        case .presentMatch(false)?:
            // Envoy's validation requires present_match to be true when given.
            throw ConfigError(path: "\(path).present_match", message: "false is not allowed: leave it out, or name a string_match")
        }
    }

    /// `query`: the part of the path after `?`, without a fragment.
    public func matches(query: Substring) -> Bool {
        guard let found = Self.firstValue(of: name, in: query) else { return false }
        return value?.matches(found) ?? true
    }

    /// The first value of the parameter `name` in `query`, as sent ("" when it has none); nil when the
    /// query does not have it.
    static func firstValue(of name: String, in query: Substring) -> Substring? {
        var rest = query
        while !rest.isEmpty {
            let end = rest.utf8.firstIndex(of: UInt8(ascii: "&")) ?? rest.endIndex
            let parameter = rest[..<end]
            rest = end == rest.endIndex ? rest[end...] : rest[rest.index(after: end)...]
            let equals = parameter.utf8.firstIndex(of: UInt8(ascii: "="))
            guard parameter[..<(equals ?? parameter.endIndex)] == name else { continue }
            return equals.map { parameter[parameter.index(after: $0)...] } ?? ""
        }
        return nil
    }
}
