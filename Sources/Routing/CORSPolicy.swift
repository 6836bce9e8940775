import Configuration
import SwiftProtobuf
import XDS

/// Envoy's CORS policy (`envoy.extensions.filters.http.cors.v3.CorsPolicy`) for a route or a virtual
/// host, which the CORS filter acts on: which origins may call, and the `Access-Control-*` answers to
/// preflight and actual requests. Istio's VirtualService `corsPolicy` becomes one per route.
///
/// Unset fields are nil (or empty), so that a route's policy can be laid over its virtual host's field
/// by field, as Envoy's filter reads them.
public struct CORSPolicy: Sendable {
    /// `allow_origin_string_match`: an origin is allowed when one of these matches it (or `*`).
    public var allowOrigins: [StringMatcher] = []
    /// `allow_methods`, `allow_headers`, `expose_headers`, `max_age`: sent as written ("" when unset).
    public var allowMethods = ""
    public var allowHeaders = ""
    public var exposeHeaders = ""
    public var maxAge = ""
    public var allowCredentials: Bool?
    public var allowPrivateNetworkAccess: Bool?
    /// A preflight from an origin that is not allowed goes upstream (Envoy's default) or is answered here.
    public var forwardNotMatchingPreflights: Bool?
    /// `filter_enabled`'s default share of requests the policy applies to (nil: unset, all of them).
    public var enabled: FaultPercentage?

    public static let typeName = "envoy.extensions.filters.http.cors.v3.CorsPolicy"

    public init() {}

    /// From a `typed_per_filter_config` entry; `path` names it in refusals. `shadow_enabled` (which only
    /// counts) and runtime keys (Capstan has no runtime) are listed as not acted on.
    init(unpacking any: Google_Protobuf_Any, path: String, notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        let proto: Envoy_Extensions_Filters_Http_Cors_V3_CorsPolicy
        do {
            proto = try Envoy_Extensions_Filters_Http_Cors_V3_CorsPolicy(unpackingAny: any)
        } catch {
            throw ConfigError(path: path, message: "is not an \(Self.typeName): \(error)")
        }
        for (index, matcher) in proto.allowOriginStringMatch.enumerated() {
            allowOrigins.append(try StringMatcher(matcher, path: "\(path).allow_origin_string_match[\(index)]"))
        }
        allowMethods = proto.allowMethods
        allowHeaders = proto.allowHeaders
        exposeHeaders = proto.exposeHeaders
        maxAge = proto.maxAge
        allowCredentials = proto.hasAllowCredentials ? proto.allowCredentials.value : nil
        allowPrivateNetworkAccess = proto.hasAllowPrivateNetworkAccess ? proto.allowPrivateNetworkAccess.value : nil
        forwardNotMatchingPreflights = proto.hasForwardNotMatchingPreflights ? proto.forwardNotMatchingPreflights.value : nil
        if proto.hasFilterEnabled {
            enabled = try FaultPercentage(proto.filterEnabled.defaultValue, path: "\(path).filter_enabled.default_value")
            if !proto.filterEnabled.runtimeKey.isEmpty {
                notActedOn.append(.init(path: "\(path).filter_enabled.runtime_key", reason: "Capstan has no runtime: the default value applies"))
            }
        }
        if proto.hasShadowEnabled {
            notActedOn.append(.init(path: "\(path).shadow_enabled", reason: "Capstan keeps no cors.origin_valid/origin_invalid statistics"))
        }
    }

    /// This (a route's) policy over `enclosing` (its virtual host's): each field this one leaves unset
    /// comes from there, as Envoy's filter looks for it in the route's policy, then the virtual host's.
    /// Whether the policy applies at all is the most specific policy's say.
    func laid(over enclosing: CORSPolicy) -> CORSPolicy {
        var merged = self
        if merged.allowOrigins.isEmpty { merged.allowOrigins = enclosing.allowOrigins }
        if merged.allowMethods.isEmpty { merged.allowMethods = enclosing.allowMethods }
        if merged.allowHeaders.isEmpty { merged.allowHeaders = enclosing.allowHeaders }
        if merged.exposeHeaders.isEmpty { merged.exposeHeaders = enclosing.exposeHeaders }
        if merged.maxAge.isEmpty { merged.maxAge = enclosing.maxAge }
        merged.allowCredentials = allowCredentials ?? enclosing.allowCredentials
        merged.allowPrivateNetworkAccess = allowPrivateNetworkAccess ?? enclosing.allowPrivateNetworkAccess
        merged.forwardNotMatchingPreflights = forwardNotMatchingPreflights ?? enclosing.forwardNotMatchingPreflights
        return merged
    }

    /// Whether `origin` may call: one of the matchers accepts it, or accepts `*`.
    public func allows(origin: Substring) -> Bool {
        allowOrigins.contains { $0.matches("*") || $0.matches(origin) }
    }

    /// Whether the policy applies to a request whose random draw is `random` (uniform over `UInt64`).
    public func applies(random: UInt64) -> Bool {
        enabled?.hits(random) ?? true
    }
}
