import Configuration
import Routing
import XDS

/// Envoy's RBAC `Permission`: what a connection or request asks for. A rule on HTTP alone (header,
/// path, metadata) matches no TCP connection.
public indirect enum Permission: Sendable {
    case all([Permission])
    case either([Permission])
    case anything
    case header(HeaderMatcher)
    case urlPath(StringMatcher)
    case destinationIP(CIDRRange)
    case destinationPort(Int)
    case destinationPorts(ClosedRange<Int>)
    case metadata(MetadataMatcher)
    /// The TLS server name the client asked for (the empty string without one, as Envoy matches it).
    case requestedServerName(StringMatcher)
    case not(Permission)

    public init(_ proto: Envoy_Config_Rbac_V3_Permission, path: String) throws(ConfigError) {
        switch proto.rule {
        case .andRules(let set)?: self = Self.all(of: try Self.list(set.rules, path: "\(path).and_rules.rules"))
        case .orRules(let set)?: self = Self.either(of: try Self.list(set.rules, path: "\(path).or_rules.rules"))
        case .any(let any)?:
            guard any else { throw ConfigError(path: "\(path).any", message: "must be true when set") }
            self = .anything
        case .header(let header)?: self = .header(try HeaderMatcher(header, path: "\(path).header"))
        case .urlPath(let matcher)?: self = .urlPath(try Permission.urlPath(matcher, path: "\(path).url_path"))
        case .destinationIp(let range)?: self = .destinationIP(try CIDRRange(range, path: "\(path).destination_ip"))
        case .destinationPort(let port)?:
            guard port <= 65535 else { throw ConfigError(path: "\(path).destination_port", message: "\(port) is not a port") }
            self = .destinationPort(Int(port))
        case .destinationPortRange(let range)?:
            // Envoy's Int32Range is half-open: [start, end).
            guard range.start >= 0, range.start < range.end, range.end <= 65536 else {
                throw ConfigError(path: "\(path).destination_port_range", message: "[\(range.start), \(range.end)) is not a port range")
            }
            self = .destinationPorts(Int(range.start)...Int(range.end) - 1)
        case .metadata(let matcher)?: self = .metadata(try MetadataMatcher(matcher, path: "\(path).metadata"))
        case .notRule(let rule)?: self = .not(try Permission(rule, path: "\(path).not_rule"))
        case .requestedServerName(let matcher)?:
            self = .requestedServerName(try StringMatcher(matcher, path: "\(path).requested_server_name"))
        case nil:
            throw ConfigError(path: path, message: "needs a rule: and_rules, or_rules, any, header, url_path, destination_ip, destination_port, destination_port_range, metadata, requested_server_name or not_rule")
        }
    }

    private static func list(_ rules: [Envoy_Config_Rbac_V3_Permission], path: String) throws(ConfigError) -> [Permission] {
        var permissions: [Permission] = []
        for (index, rule) in rules.enumerated() { permissions.append(try Permission(rule, path: "\(path)[\(index)]")) }
        return permissions
    }

    /// `and` over `rules`, flattened as it is decoded: istiod wraps every condition in a one-element
    /// `or` inside an `and`, and each level would cost a step on every request.
    static func all(of rules: [Self]) -> Self {
        var flat: [Self] = []
        for rule in rules {
            if case .all(let inner) = rule { flat += inner } else { flat.append(rule) }
        }
        return flat.count == 1 ? flat[0] : .all(flat)
    }

    /// `or` over `rules`, flattened likewise.
    static func either(of rules: [Self]) -> Self {
        var flat: [Self] = []
        for rule in rules {
            if case .either(let inner) = rule { flat += inner } else { flat.append(rule) }
        }
        return flat.count == 1 ? flat[0] : .either(flat)
    }
}

extension Permission {
    /// A `PathMatcher`'s string matcher, on the path without its query (permissions and principals).
    static func urlPath(_ proto: Envoy_Type_Matcher_V3_PathMatcher, path: String) throws(ConfigError) -> StringMatcher {
        guard case .path(let matcher)? = proto.rule else { throw ConfigError(path: "\(path).path", message: "is required") }
        return try StringMatcher(matcher, path: "\(path).path")
    }
}
