import Configuration
import HTTPTypes
import SwiftProtobuf
import XDS

/// The per-route configurations of HTTP filters (`typed_per_filter_config`) that Capstan reads, by the
/// filter's name, the most specific level's (route over virtual host over route configuration).
public struct RouteFilterConfigs: Sendable {
    /// `HTTPFault` configurations, by filter name (`envoy.filters.http.fault`).
    public private(set) var faults: [String: FaultPolicy] = [:]
    /// CORS policies, by filter name (`envoy.filters.http.cors`), each laid over the enclosing level's.
    public private(set) var cors: [String: CORSPolicy] = [:]

    public init() {}

    public var isEmpty: Bool { faults.isEmpty && cors.isEmpty }

    /// Decodes one level's `typed_per_filter_config` over `self` (a less specific level's); `path` names
    /// the map. Configurations of other types are listed as not acted on.
    mutating func merge(_ map: [String: Google_Protobuf_Any], path: String, notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        for name in map.keys.sorted() {
            let any = map[name]!
            let entryPath = "\(path)[\"\(name)\"]"
            let typeName = Self.configurationTypeName(any)
            if typeName == FaultPolicy.typeName {
                faults[name] = try FaultPolicy(unpacking: any, path: entryPath, notActedOn: &notActedOn)
            } else if typeName == CORSPolicy.typeName {
                let policy = try CORSPolicy(unpacking: any, path: entryPath, notActedOn: &notActedOn)
                cors[name] = cors[name].map(policy.laid(over:)) ?? policy
            } else if typeName == Self.jwtPerRouteTypeName {
                try Self.checkJWTPerRoute(any, path: entryPath, notActedOn: &notActedOn)
            } else if Self.refusedTypes.contains(typeName) {
                throw ConfigError(path: entryPath, message: "\(typeName) is not supported: it changes a route's authorization, and the listener's rules applied in its place could let through what it stops")
            } else {
                notActedOn.append(.init(path: entryPath, reason: "no HTTP filter of Capstan reads per-route configuration of type \(typeName)"))
            }
        }
    }

    /// Per-route configurations of filters that enforce policy: refused, not skipped.
    static let refusedTypes: Set<String> = ["envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
                                            "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"]

    static let jwtPerRouteTypeName = "envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig"

    /// jwt_authn's per-route choice is not read: `disabled` leaves the listener's rules in force (stricter,
    /// listed), but a `requirement_name` the rules do not pick could go unenforced, so it is refused.
    private static func checkJWTPerRoute(_ any: Google_Protobuf_Any, path: String, notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        let config: Envoy_Extensions_Filters_Http_JwtAuthn_V3_PerRouteConfig
        do {
            config = try .init(unpackingAny: any)
        } catch {
            throw ConfigError(path: path, message: "is not a \(jwtPerRouteTypeName): \(error)")
        }
        if case .requirementName(let name)? = config.requirementSpecifier {
            throw ConfigError(path: "\(path).requirement_name", message: "\"\(name)\" is not supported: Capstan's JWT filter picks requirements by its own rules only, and the one named here would not be enforced")
        }
        notActedOn.append(.init(path: "\(path).disabled", reason: "a route's own JWT configuration is not read: the filter's rules still apply on this route"))
    }

    /// The type an `Any` holds, through a TypedStruct.
    private static func configurationTypeName(_ any: Google_Protobuf_Any) -> String {
        let outer = any.typeURL.split(separator: "/").last.map(String.init) ?? any.typeURL
        let inner: String? = switch outer {
        case Udpa_Type_V1_TypedStruct.protoMessageName: try? Udpa_Type_V1_TypedStruct(serializedBytes: [UInt8](any.value)).typeURL
        case Xds_Type_V3_TypedStruct.protoMessageName: try? Xds_Type_V3_TypedStruct(serializedBytes: [UInt8](any.value)).typeURL
        default: nil
        }
        return inner.flatMap { $0.split(separator: "/").last.map(String.init) } ?? outer
    }
}
