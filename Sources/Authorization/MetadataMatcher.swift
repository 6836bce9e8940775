import Configuration
import Routing
import SwiftProtobuf
import XDS

/// Envoy's `MetadataMatcher`: a value in a request's dynamic metadata, under a filter's name and a path
/// of keys, tested by a ``ValueMatcher``. RBAC reads the JWT filter's claims this way.
public struct MetadataMatcher: Sendable {
    /// The filters whose metadata Capstan writes: a matcher on any other would never match, which in a
    /// DENY policy lets through what it means to stop, so it is refused.
    public static let knownFilters: Set<String> = ["istio_authn", "envoy.filters.http.jwt_authn",
                                                  // the shadow rules' outcome (ext_authz reads it), on requests and on connections
                                                  "envoy.filters.http.rbac", "envoy.filters.network.rbac"]

    let filter: String
    let path: [String]
    let value: ValueMatcher
    let inverted: Bool

    public init(_ proto: Envoy_Type_Matcher_V3_MetadataMatcher, path fieldPath: String) throws(ConfigError) {
        guard Self.knownFilters.contains(proto.filter) else {
            throw ConfigError(path: "\(fieldPath).filter", message: "\"\(proto.filter)\" is not supported: Capstan's filters leave metadata under \(Self.knownFilters.sorted().joined(separator: " and ")) only, and a matcher on any other would never match")
        }
        guard !proto.path.isEmpty else { throw ConfigError(path: "\(fieldPath).path", message: "needs at least one key") }
        var keys: [String] = []
        for (index, segment) in proto.path.enumerated() {
            guard case .key(let key)? = segment.segment, !key.isEmpty else {
                throw ConfigError(path: "\(fieldPath).path[\(index)].key", message: "is required")
            }
            keys.append(key)
        }
        guard proto.hasValue else { throw ConfigError(path: "\(fieldPath).value", message: "is required") }
        filter = proto.filter
        path = keys
        value = try ValueMatcher(proto.value, path: "\(fieldPath).value")
        inverted = proto.invert
    }

    public func matches(_ metadata: DynamicMetadata) -> Bool {
        value.matches(metadata.value(filter: filter, path: path)) != inverted
    }
}

/// Envoy's `ValueMatcher` on a `google.protobuf.Value`: null, number, string, bool, presence, a list
/// holding a matching element, or any of several.
public indirect enum ValueMatcher: Sendable {
    case null
    case number(exact: Double)
    case numberRange(Range<Double>)
    case string(StringMatcher)
    case bool(Bool)
    case present(Bool)
    case listContaining(ValueMatcher)
    case anyOf([ValueMatcher])

    public init(_ proto: Envoy_Type_Matcher_V3_ValueMatcher, path: String) throws(ConfigError) {
        switch proto.matchPattern {
        case .nullMatch?: self = .null
        case .doubleMatch(let double)?:
            switch double.matchPattern {
            case .exact(let value)?: self = .number(exact: value)
            case .range(let range)?:
                guard range.start < range.end else {
                    throw ConfigError(path: "\(path).double_match.range", message: "start \(range.start) must be below end \(range.end)")
                }
                self = .numberRange(range.start..<range.end)
            case nil: throw ConfigError(path: "\(path).double_match", message: "needs exact or range")
            }
        case .stringMatch(let matcher)?: self = .string(try StringMatcher(matcher, path: "\(path).string_match"))
        case .boolMatch(let value)?: self = .bool(value)
        case .presentMatch(let value)?: self = .present(value)
        case .listMatch(let list)?:
            guard case .oneOf(let element)? = list.matchPattern else {
                throw ConfigError(path: "\(path).list_match", message: "needs one_of")
            }
            self = .listContaining(try ValueMatcher(element, path: "\(path).list_match.one_of"))
        case .orMatch(let or)?:
            guard !or.valueMatchers.isEmpty else {
                throw ConfigError(path: "\(path).or_match.value_matchers", message: "needs at least one matcher")
            }
            var matchers: [ValueMatcher] = []
            for (index, matcher) in or.valueMatchers.enumerated() {
                matchers.append(try ValueMatcher(matcher, path: "\(path).or_match.value_matchers[\(index)]"))
            }
            self = .anyOf(matchers)
        case nil:
            throw ConfigError(path: path, message: "needs null_match, double_match, string_match, bool_match, present_match, list_match or or_match")
        }
    }

    /// nil: the value is not there.
    public func matches(_ value: Google_Protobuf_Value?) -> Bool {
        if case .present(let present) = self { return (value != nil) == present }
        guard let kind = value?.kind else { return false }
        switch (self, kind) {
        case (.null, .nullValue): return true
        case (.number(let exact), .numberValue(let number)): return number == exact
        case (.numberRange(let range), .numberValue(let number)): return range.contains(number)
        case (.string(let matcher), .stringValue(let text)): return matcher.matches(Substring(text))
        case (.bool(let wanted), .boolValue(let bool)): return bool == wanted
        case (.listContaining(let element), .listValue(let list)): return list.values.contains { element.matches($0) }
        case (.anyOf(let matchers), _): return matchers.contains { $0.matches(value) }
        default: return false
        }
    }
}
