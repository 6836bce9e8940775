import Configuration
import Routing
import XDS

/// Envoy's RBAC `Principal`: who asks. The peer is known by its verified certificate's SPIFFE ID and by
/// its address; Capstan trusts no `x-forwarded-for`, so `remote_ip` is the connection's source too.
public indirect enum Principal: Sendable {
    case all([Principal])
    case either([Principal])
    case anyone
    /// A peer with a verified certificate, whose SPIFFE ID the matcher accepts (nil: any).
    case authenticated(StringMatcher?)
    case sourceIP(CIDRRange)
    case header(HeaderMatcher)
    case urlPath(StringMatcher)
    case metadata(MetadataMatcher)
    /// Istio's filter state: the peer's (`io.istio.peer_principal`) or this proxy's
    /// (`io.istio.local_principal`) SPIFFE ID.
    case filterState(FilterStateKey, StringMatcher)
    case not(Principal)

    public enum FilterStateKey: String, Sendable, CaseIterable, BitwiseCopyable {
        case peerPrincipal = "io.istio.peer_principal"
        case localPrincipal = "io.istio.local_principal"
    }

    public init(_ proto: Envoy_Config_Rbac_V3_Principal, path: String) throws(ConfigError) {
        switch proto.identifier {
        case .andIds(let set)?: self = Self.all(of: try Self.list(set.ids, path: "\(path).and_ids.ids"))
        case .orIds(let set)?: self = Self.either(of: try Self.list(set.ids, path: "\(path).or_ids.ids"))
        case .any(let any)?:
            guard any else { throw ConfigError(path: "\(path).any", message: "must be true when set") }
            self = .anyone
        case .authenticated(let authenticated)?:
            self = .authenticated(authenticated.hasPrincipalName
                ? try StringMatcher(authenticated.principalName, path: "\(path).authenticated.principal_name") : nil)
        case .sourceIp(let range)?: self = .sourceIP(try CIDRRange(range, path: "\(path).source_ip"))
        case .directRemoteIp(let range)?: self = .sourceIP(try CIDRRange(range, path: "\(path).direct_remote_ip"))
        case .remoteIp(let range)?: self = .sourceIP(try CIDRRange(range, path: "\(path).remote_ip"))
        case .header(let header)?: self = .header(try HeaderMatcher(header, path: "\(path).header"))
        case .urlPath(let matcher)?: self = .urlPath(try Permission.urlPath(matcher, path: "\(path).url_path"))
        case .metadata(let matcher)?: self = .metadata(try MetadataMatcher(matcher, path: "\(path).metadata"))
        case .filterState(let state)?:
            guard let key = FilterStateKey(rawValue: state.key) else {
                throw ConfigError(path: "\(path).filter_state.key", message: "\"\(state.key)\" is not supported: Capstan keeps \(FilterStateKey.allCases.map(\.rawValue).joined(separator: " and ")) only, and a principal on any other would never match")
            }
            guard case .stringMatch(let matcher)? = state.matcher else {
                throw ConfigError(path: "\(path).filter_state", message: "needs string_match")
            }
            self = .filterState(key, try StringMatcher(matcher, path: "\(path).filter_state.string_match"))
        case .notID(let id)?: self = .not(try Principal(id, path: "\(path).not_id"))
        case nil:
            throw ConfigError(path: path, message: "needs an identifier: and_ids, or_ids, any, authenticated, source_ip, direct_remote_ip, remote_ip, header, url_path, metadata, filter_state or not_id")
        }
    }

    private static func list(_ ids: [Envoy_Config_Rbac_V3_Principal], path: String) throws(ConfigError) -> [Principal] {
        var principals: [Principal] = []
        for (index, id) in ids.enumerated() { principals.append(try Principal(id, path: "\(path)[\(index)]")) }
        return principals
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
