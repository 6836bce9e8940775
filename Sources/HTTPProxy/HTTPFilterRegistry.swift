import Configuration
import Routing
import SwiftProtobuf
import XDS

/// The HTTP filters Capstan knows, keyed by the type of their `typed_config` (Envoy's way: the name is
/// only a label), after unwrapping a `udpa.type.v1.TypedStruct` or `xds.type.v3.TypedStruct`, whose
/// `type_url` names the real type. A filter is added with one line here (and its type, one file per
/// filter, in the data path); the router is the last filter of every chain.
///
/// A filter of a type not listed is refused with its name and type, unless it is `is_optional` (then,
/// as Envoy does with an optional filter it has no factory for, it is skipped, and listed as not acted
/// on). Filters Capstan counts as not acted on are those whose absence changes no routing and lets no
/// request through that they would stop; filters that enforce policy (authorization, authentication)
/// are refused rather than skipped, so that a configuration is never served more permissively than it
/// says.
public enum HTTPFilterRegistry {
    /// What Capstan does with a filter of a known type.
    enum Known {
        case behaviour(HTTPFilterConfig.Behaviour)
        /// Refused even when optional, with why.
        case refused(reason: String)
    }

    static let routerType = "envoy.extensions.filters.http.router.v3.Router"
    static let routerName = "envoy.filters.http.router"

    /// By type name (the type URL after its last `/`).
    static let known: [String: Known] = [
        routerType: .behaviour(.router),
        // istio.metadata_exchange (Istio 1.20: `io.istio.http.peer_metadata.Config` in a TypedStruct).
        "io.istio.http.peer_metadata.Config": .behaviour(.notActedOn(reason:
            "Capstan exchanges no Istio peer metadata in request headers (x-envoy-peer-metadata, baggage): peers are known by their mTLS identities only")),
        "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig": .behaviour(.notActedOn(reason:
            "Capstan keeps no gRPC statistics (grpc.*) yet")),
        "envoy.extensions.filters.http.cors.v3.Cors": .behaviour(.cors),
        // istio.stats
        "stats.PluginConfig": .behaviour(.notActedOn(reason:
            "Capstan counts Istio's standard request metrics itself whatever this says: its custom dimensions, tags and disable_host_header_fallback are not read (destination_service is the cluster's Istio service, else the request's host)")),
    ]

    /// The TypedStruct wrappers whose `type_url` names the configuration's real type.
    static let typedStructTypes: Set<String> = [Udpa_Type_V1_TypedStruct.protoMessageName, Xds_Type_V3_TypedStruct.protoMessageName]

    /// `http_filters` in order; `path` names the list in refusals (`….typed_config.http_filters`). Filters
    /// skipped or not acted on are added to `notActedOn` with paths relative to the connection manager.
    static func decode(_ filters: [Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter], path: String,
                       notActedOn: inout [FieldNotActedOn]) throws(ConfigError) -> [HTTPFilterConfig] {
        var decoded: [HTTPFilterConfig] = []
        for (index, filter) in filters.enumerated() {
            let filterPath = "\(path)[\(index)]"
            let field = "http_filters[\(index)]"
            if let router = decoded.last, case .router = router.behaviour {
                throw ConfigError(path: filterPath, message: "\"\(filter.name)\" comes after the router (\"\(router.name)\"), which must be the last HTTP filter")
            }
            let typeURL = try Self.typeURL(of: filter, path: filterPath)
            let typeName = Self.typeName(typeURL)
            let known = Self.known[typeName]
            if filter.disabled {
                // Disabled by default, enabled per route (typed_per_filter_config), which Capstan does not read.
                if typeName == rbacType || typeName == ExtAuthzFilterConfig.typeName {
                    throw ConfigError(path: "\(filterPath).disabled", message: "is not supported for \"\(filter.name)\" (\(typeName)): Capstan does not enable filters per route, and the requests it would deny there would pass")
                }
                if typeName == JWTAuthenticationConfig.typeName {
                    throw ConfigError(path: "\(filterPath).disabled", message: "\"\(filter.name)\" (\(typeName)) disabled here and enabled per route is not supported: routes that enable it would go unverified")
                }
                if case .refused(let reason)? = known {
                    throw ConfigError(path: filterPath, message: "\"\(filter.name)\" (\(typeName)) is not supported: \(reason)")
                }
                notActedOn.append(.init(path: "\(field).disabled", reason: "a filter disabled here runs only on routes that enable it in typed_per_filter_config, which Capstan does not read: \"\(filter.name)\" (\(typeName)) runs on none"))
                continue
            }
            if typeName == alpnType {
                decoded.append(HTTPFilterConfig(name: filter.name, typeURL: typeURL,
                                                behaviour: try upstreamALPN(filter, path: "\(filterPath).typed_config")))
                continue
            }
            if typeName == rbacType {
                decoded.append(HTTPFilterConfig(name: filter.name, typeURL: typeURL,
                                                behaviour: .rbac(try RBACFilterConfig(unpacking: filter.typedConfig, path: "\(filterPath).typed_config",
                                                                                      field: "\(field).typed_config", notActedOn: &notActedOn))))
                continue
            }
            if typeName == ExtAuthzFilterConfig.typeName {
                decoded.append(HTTPFilterConfig(name: filter.name, typeURL: typeURL, behaviour: .extAuthz(try ExtAuthzFilterConfig(
                    unpacking: filter.typedConfig, path: "\(filterPath).typed_config", field: "\(field).typed_config", notActedOn: &notActedOn))))
                continue
            }
            if typeName == faultType {
                var faultNotActedOn: [FieldNotActedOn] = []
                let policy = try FaultPolicy(unpacking: filter.typedConfig, path: "\(filterPath).typed_config", notActedOn: &faultNotActedOn)
                // Paths relative to the connection manager, as the others.
                notActedOn += faultNotActedOn.map { listed in
                    FieldNotActedOn(path: listed.path.hasPrefix(filterPath) ? field + String(listed.path.dropFirst(filterPath.count)) : listed.path,
                                    reason: listed.reason)
                }
                decoded.append(HTTPFilterConfig(name: filter.name, typeURL: typeURL, behaviour: .fault(FaultFilterConfig(policy: policy))))
                continue
            }
            if typeName == JWTAuthenticationConfig.typeName {
                var listed: [FieldNotActedOn] = []
                let config = try JWTAuthenticationConfig(unpacking: filter.typedConfig, path: "\(filterPath).typed_config", notActedOn: &listed)
                notActedOn += listed.map { FieldNotActedOn(path: field + String($0.path.dropFirst(filterPath.count)), reason: $0.reason) }
                decoded.append(HTTPFilterConfig(name: filter.name, typeURL: typeURL, behaviour: .jwtAuthentication(config)))
                continue
            }
            switch known {
            case .behaviour(let behaviour)?:
                if case .notActedOn(let reason) = behaviour {
                    notActedOn.append(.init(path: field, reason: "\"\(filter.name)\" (\(typeName)): \(reason)"))
                }
                if case .router = behaviour, filter.configType != nil, filter.typedConfig.typeURL.hasSuffix(routerType) {
                    notActedOn += unknownFields(of: filter.typedConfig, as: Envoy_Extensions_Filters_Http_Router_V3_Router.self,
                                                under: "\(field).typed_config")
                }
                decoded.append(HTTPFilterConfig(name: filter.name, typeURL: typeURL, behaviour: behaviour))
            case .refused(let reason)?:
                throw ConfigError(path: filterPath, message: "\"\(filter.name)\" (\(typeName)) is not supported: \(reason)")
            case nil where filter.isOptional:
                notActedOn.append(.init(path: field, reason: "\"\(filter.name)\" (\(typeName)) is optional and Capstan does not have it: skipped, as Envoy skips an optional filter it does not know"))
            case nil:
                throw ConfigError(path: filterPath, message: "\"\(filter.name)\" (\(typeName)) is not supported: Capstan has \(Self.supportedList)")
            }
        }
        guard let last = decoded.last, case .router = last.behaviour else {
            throw ConfigError(path: path, message: "needs \(routerName) (\(routerType)) as the last HTTP filter: it is what sends requests upstream")
        }
        return decoded
    }

    static let alpnType = "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig"
    static let faultType = "envoy.extensions.filters.http.fault.v3.HTTPFault"
    static let rbacType = "envoy.extensions.filters.http.rbac.v3.RBAC"

    /// The filters of `configs` with something to do on a request to `route`, made for it, in order; the
    /// router is not among them (the stream handler is it). A fault filter whose configuration (the
    /// listener's, unless the route has its own) injects nothing is left out, as istiod's empty one on
    /// every route without a `fault` is: most requests make no filter at all.
    static func makeFilters(_ configs: [HTTPFilterConfig], route: RouteDecision?, observer: (any HTTPStreamObserver)?) -> [any HTTPFilter] {
        var filters: [any HTTPFilter] = []
        for config in configs {
            if case .rbac(let rbac) = config.behaviour {
                filters.append(rbac)
                continue
            }
            if case .jwtAuthentication(let jwt) = config.behaviour { filters.append(JWTAuthenticationFilter(config: jwt)); continue }
            if case .extAuthz(let extAuthz) = config.behaviour {
                filters.append(ExtAuthzFilter(config: extAuthz))
                continue
            }
            if case .cors = config.behaviour {
                // Only where the route (or its virtual host) has a policy for this filter, as Envoy's.
                var random = RequestRandomness()
                if let policy = route?.filterConfigs.cors[config.name], policy.applies(random: random.next()) {
                    filters.append(CORSFilter(policy: policy))
                }
                continue
            }
            guard case .fault(let fault) = config.behaviour else { continue }
            var policy = fault.policy
            if let faults = route?.filterConfigs.faults, !faults.isEmpty, let own = faults[config.name] { policy = own }
            if policy.delay != nil || policy.abort != nil {
                filters.append(FaultFilter(policy: policy, config: fault, observer: observer))
            }
        }
        return filters
    }

    /// `istio.alpn`'s overrides: HTTP/1.1's (HTTP/1.0's when only that is given) and HTTP/2's.
    private static func upstreamALPN(_ filter: Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter,
                                     path: String) throws(ConfigError) -> HTTPFilterConfig.Behaviour {
        let config: Istio_Envoy_Config_Filter_Http_Alpn_V2alpha1_FilterConfig
        do {
            if filter.typedConfig.typeURL.hasSuffix(alpnType) {
                config = try .init(serializedBytes: [UInt8](filter.typedConfig.value))
            } else {
                // Inside a TypedStruct: its value is the configuration's JSON.
                let wrapped = try Udpa_Type_V1_TypedStruct(serializedBytes: [UInt8](filter.typedConfig.value))
                config = try .init(jsonString: try wrapped.value.jsonString())
            }
        } catch {
            throw ConfigError(path: path, message: "is not an \(alpnType): \(error)")
        }
        var http10: [String] = [], http11: [String] = [], http2: [String] = []
        for (index, entry) in config.alpnOverride.enumerated() {
            switch entry.upstreamProtocol {
            case .http10: http10 = entry.alpnOverride
            case .http11: http11 = entry.alpnOverride
            case .http2: http2 = entry.alpnOverride
            case .UNRECOGNIZED(let number):
                throw ConfigError(path: "\(path).alpn_override[\(index)].upstream_protocol", message: "\(number) is not HTTP10, HTTP11 or HTTP2")
            }
        }
        return .upstreamALPN(http1: http11.isEmpty ? http10 : http11, http2: http2)
    }

    /// The type URL that says what a filter is: its typed_config's, or the one inside a TypedStruct. A
    /// filter given by name alone (`name: envoy.filters.http.router`, as hand-written bootstraps do) is
    /// the router only; any other needs its typed_config.
    private static func typeURL(of filter: Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter,
                                path: String) throws(ConfigError) -> String {
        guard filter.configType != nil else {
            if filter.name == routerName { return "type.googleapis.com/\(routerType)" }
            throw ConfigError(path: "\(path).typed_config", message: "is required (\"\(filter.name)\"): Capstan knows HTTP filters by their configuration's type")
        }
        return try configurationTypeURL(filter.typedConfig, path: "\(path).typed_config")
    }

    /// The type URL of the configuration `any` holds: its own, or for a `udpa.type.v1.TypedStruct` or
    /// `xds.type.v3.TypedStruct`, the `type_url` inside. `path` names `any` in refusals. (Network
    /// filters are told apart the same way.)
    public static func configurationTypeURL(_ any: Google_Protobuf_Any, path: String) throws(ConfigError) -> String {
        guard typedStructTypes.contains(typeName(any.typeURL)) else { return any.typeURL }
        let inner: String
        do {
            inner = typeName(any.typeURL) == Udpa_Type_V1_TypedStruct.protoMessageName
                ? try Udpa_Type_V1_TypedStruct(unpackingAny: any).typeURL
                : try Xds_Type_V3_TypedStruct(unpackingAny: any).typeURL
        } catch {
            throw ConfigError(path: path, message: "does not decode as \(typeName(any.typeURL)): \(error)")
        }
        guard !inner.isEmpty else {
            throw ConfigError(path: "\(path).type_url", message: "is required: it names the configuration's type")
        }
        return inner
    }

    /// `type.googleapis.com/envoy.….Router` → `envoy.….Router`.
    public static func typeName(_ typeURL: String) -> String {
        typeURL.split(separator: "/", omittingEmptySubsequences: false).last.map(String.init) ?? typeURL
    }

    /// Fields of a known filter's configuration outside Capstan's proto subset, as not acted on.
    private static func unknownFields<M: SwiftProtobuf.Message>(of any: Google_Protobuf_Any, as type: M.Type,
                                                                under prefix: String) -> [FieldNotActedOn] {
        guard let message = try? M(unpackingAny: any) else { return [] }
        return UnknownFields.paths(in: message).map { FieldNotActedOn(path: "\(prefix).\($0)", reason: UnknownFields.reason) }
    }

    /// The filters Capstan has, for refusals.
    private static var supportedList: String {
        "\(routerName), envoy.filters.http.fault, envoy.filters.http.cors, envoy.filters.http.jwt_authn, envoy.filters.http.rbac, envoy.filters.http.ext_authz, istio.alpn and, not acted on yet, istio.metadata_exchange, envoy.filters.http.grpc_stats, istio.stats"
    }
}
