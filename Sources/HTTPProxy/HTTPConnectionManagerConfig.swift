import Configuration
import Routing
import SwiftProtobuf
import XDS

/// Envoy's `HttpConnectionManager` network filter as the proxy acts on it: where its routes come from,
/// its HTTP filters in order (the router last), the codec, and the limits and per-request behaviour
/// istiod configures. Decoded once per listener update; compared by the bytes it was decoded from, so
/// a listener that did not change keeps its connections' configuration.
public struct HTTPConnectionManagerConfig: Sendable, Equatable {
    /// `codec_type`: AUTO tells HTTP/2's connection preface (or `h2` by ALPN) from HTTP/1.1.
    public enum Codec: Sendable, Equatable {
        case auto
        case http1
        case http2
    }

    /// Where the route table comes from.
    public enum RouteSource: Sendable {
        /// `route_config`, compiled with the listener.
        case inline(RouteTable)
        /// `rds.route_config_name`: the table of that name from RDS, looked up per request.
        case discovered(name: String)
    }

    /// `forward_client_cert_details`: what becomes of `x-forwarded-client-cert` (XFCC).
    public enum ForwardClientCert: Sendable, Equatable {
        /// Envoy's default: removed.
        case sanitize
        case forwardOnly
        /// Istio's inbound setting: the peer's details appended to what came.
        case appendForward
        case sanitizeSet
        case alwaysForwardOnly
    }

    /// `set_current_client_cert_details`: the parts of the peer certificate put into XFCC.
    public struct ClientCertDetails: Sendable, Equatable {
        public var subject = false
        public var uri = false
        public var dns = false
        public var cert = false
        public var chain = false
        public init() {}
    }

    public var statPrefix: String
    public var codec: Codec
    public var routes: RouteSource
    /// The HTTP filters in configured order; the router is the last.
    public var filters: [HTTPFilterConfig]
    /// `server_name`: the `server` response header (Istio: `istio-envoy`, Envoy's default `envoy`).
    public var serverName: String
    /// `use_remote_address`: the client's address is trusted as the edge (XFF appended, internal
    /// headers from outside stripped).
    public var useRemoteAddress: Bool
    public var forwardClientCert: ForwardClientCert
    public var clientCertDetails: ClientCertDetails
    /// `generate_request_id` (default true): `x-request-id` when the request has none.
    public var generatesRequestID: Bool
    /// `stream_idle_timeout` (default 5 min; istiod sends 0s: disabled). nil: disabled.
    public var streamIdleTimeout: Duration?
    /// `request_headers_timeout` (default disabled).
    public var requestHeadersTimeout: Duration?
    /// `request_timeout` (default disabled).
    public var requestTimeout: Duration?
    /// `common_http_protocol_options.idle_timeout` for the downstream connection (default 1 h).
    public var connectionIdleTimeout: Duration?
    /// `max_request_headers_kb` (default 60 KiB), in bytes.
    public var maxRequestHeadersBytes: Int
    /// `common_http_protocol_options.max_headers_count` (default 100).
    public var maxHeadersCount: Int
    /// `http2_protocol_options.max_concurrent_streams` (Envoy's default 2147483647; Capstan bounds it).
    public var maxConcurrentStreams: Int
    /// `upgrade_configs[].upgrade_type` that are enabled (Istio: `websocket`).
    public var upgradeTypes: [String]
    /// `normalize_path`.
    public var normalizesPath: Bool
    /// `access_log`: the file, stdout and stderr loggers Capstan writes, in order.
    public var accessLogs: [AccessLogConfig]
    /// Whether requests keep what access logs print (headers, upstream local address): only when there
    /// is an access log, so that without one a request costs nothing more.
    public var recordsForAccessLog: Bool
    /// Fields given that Capstan accepts but does not act on.
    public var fieldsNotActedOn: [FieldNotActedOn]
    /// The serialized `HttpConnectionManager` this was decoded from: what equality compares.
    public var source: [UInt8]

    /// The ALPN upstream TLS offers for `version`, when `istio.alpn` overrides the cluster's.
    public func upstreamALPN(for version: UpstreamVersion) -> [String]? {
        for filter in filters {
            if case .upstreamALPN(let http1, let http2) = filter.behaviour {
                let protocols = version == .http2 ? http2 : http1
                return protocols.isEmpty ? nil : protocols
            }
        }
        return nil
    }

    /// The route configuration named by RDS, if the routes come from there.
    public var discoveredRouteName: String? {
        if case .discovered(let name) = routes { return name }
        return nil
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.source == rhs.source }
}

/// One entry of `http_filters`, decoded by its type URL (``HTTPFilterRegistry``).
public struct HTTPFilterConfig: Sendable {
    /// What the proxy does with it.
    public enum Behaviour: Sendable {
        /// `envoy.filters.http.router`: the last filter, which sends the request upstream.
        case router
        /// `istio.alpn`: the ALPN upstream TLS offers for each HTTP version, in place of the cluster's
        /// (`istio-http/1.1`, `istio-h2`), so the peer's sidecar picks its HTTP chain.
        case upstreamALPN(http1: [String], http2: [String])
        /// `envoy.filters.http.fault`: delays and aborts (``FaultFilter``).
        case fault(FaultFilterConfig)
        /// `envoy.filters.http.cors`: the route's CORS policy (``CORSFilter``).
        case cors
        /// `envoy.filters.http.rbac`: requests its rules deny are answered 403 (``RBACFilterConfig``).
        case rbac(RBACFilterConfig)
        /// `envoy.filters.http.jwt_authn`: JWT verification (``JWTAuthenticationFilter``).
        case jwtAuthentication(JWTAuthenticationConfig)
        /// `envoy.filters.http.ext_authz`: requests an authorization service checks (``ExtAuthzFilter``).
        case extAuthz(ExtAuthzFilterConfig)
        /// Accepted and counted, not acted on yet (grpc_stats, Istio's own before their
        /// issues): the reason is listed in the README and in `config.fields_not_acted_on`.
        case notActedOn(reason: String)
    }

    /// `name`, as configured (`envoy.filters.http.fault`).
    public var name: String
    /// The type URL of its `typed_config` (through a `udpa.type.v1.TypedStruct`, the one it wraps).
    public var typeURL: String
    public var behaviour: Behaviour

    public init(name: String, typeURL: String, behaviour: Behaviour) {
        self.name = name
        self.typeURL = typeURL
        self.behaviour = behaviour
    }
}

// MARK: Decoding

extension HTTPConnectionManagerConfig {
    typealias Proto = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager

    /// `http2_protocol_options.max_concurrent_streams` when not given, and the most Capstan allows: each
    /// stream is a channel with its own buffers, so Envoy's default (2147483647, no limit) is not
    /// Capstan's. A larger value is lowered to this and listed as not acted on.
    public static let maxConcurrentStreamsLimit = 1024

    /// Decodes the filter's configuration with Envoy's defaults. `path` names its `typed_config` in
    /// refusals (`listener "0.0.0.0_8080".filter_chains[0].filters[1].typed_config`); the paths of
    /// ``fieldsNotActedOn`` are relative to it (`tracing`, `http_filters[2]`), for whoever holds it to
    /// prefix. Refused: no routes (neither `rds` nor `route_config`), `scoped_routes`, HTTP/3, RDS from
    /// anything but ADS, and HTTP filters ``HTTPFilterRegistry`` refuses.
    public init(_ proto: Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager, path: String) throws(ConfigError) {
        var notActedOn: [FieldNotActedOn] = []
        // Fields outside Capstan's subset, except inside what is listed whole as not acted on (tracing,
        // access log filters).
        notActedOn += UnknownFields.paths(in: proto).filter { !$0.hasPrefix("#7.") && !$0.hasPrefix("#13.") }
            .map { FieldNotActedOn(path: $0, reason: UnknownFields.reason) }

        guard !proto.statPrefix.isEmpty else {
            throw ConfigError(path: "\(path).stat_prefix", message: "is required: the connection manager's statistics are named by it")
        }
        statPrefix = proto.statPrefix
        switch proto.codecType {
        case .auto: codec = .auto
        case .http1: codec = .http1
        case .http2: codec = .http2
        case .http3: throw ConfigError(path: "\(path).codec_type", message: "HTTP3 is not supported: Capstan speaks HTTP/1.1 and HTTP/2 over TCP")
        case .UNRECOGNIZED(let number): throw ConfigError(path: "\(path).codec_type", message: "\(number) is not a codec type")
        }

        switch proto.routeSpecifier {
        case .rds(let rds)?:
            routes = .discovered(name: try Self.routeConfigName(rds, path: "\(path).rds", notActedOn: &notActedOn))
        case .routeConfig(let configuration)?:
            let tablePath = "\(path).route_config"
            let table = try RouteTable(configuration, path: tablePath)
            // The table's own paths start with `tablePath`; here they are relative to the connection manager.
            notActedOn += table.fieldsNotActedOn.map { field in
                FieldNotActedOn(path: field.path.hasPrefix("\(path).") ? String(field.path.dropFirst(path.count + 1)) : field.path,
                                reason: field.reason)
            }
            routes = .inline(table)
        case .scopedRoutes?:
            throw ConfigError(path: "\(path).scoped_routes", message: "is not supported: Capstan takes routes from rds or route_config")
        case nil:
            throw ConfigError(path: path, message: "needs rds or route_config: an http_connection_manager without routes has nowhere to send requests")
        }
        filters = try HTTPFilterRegistry.decode(proto.httpFilters, path: "\(path).http_filters", notActedOn: &notActedOn)

        serverName = proto.serverName.isEmpty ? "envoy" : proto.serverName
        if proto.serverHeaderTransformation != .overwrite {
            notActedOn.append(.init(path: "server_header_transformation", reason: "the server response header is always set to server_name (Envoy's OVERWRITE)"))
        }
        useRemoteAddress = proto.hasUseRemoteAddress && proto.useRemoteAddress.value
        switch proto.forwardClientCertDetails {
        case .sanitize: forwardClientCert = .sanitize
        case .forwardOnly: forwardClientCert = .forwardOnly
        case .appendForward: forwardClientCert = .appendForward
        case .sanitizeSet: forwardClientCert = .sanitizeSet
        case .alwaysForwardOnly: forwardClientCert = .alwaysForwardOnly
        case .UNRECOGNIZED(let number):
            throw ConfigError(path: "\(path).forward_client_cert_details", message: "\(number) is not a forward_client_cert_details value")
        }
        var details = ClientCertDetails()
        if proto.hasSetCurrentClientCertDetails {
            let given = proto.setCurrentClientCertDetails
            details.subject = given.hasSubject && given.subject.value
            details.uri = given.uri
            details.dns = given.dns
            details.cert = given.cert
            details.chain = given.chain
        }
        clientCertDetails = details
        generatesRequestID = !proto.hasGenerateRequestID || proto.generateRequestID.value

        // Timeouts: given as 0s, disabled.
        func timeout(_ given: Bool, _ value: Google_Protobuf_Duration) -> Duration? {
            guard given else { return nil }
            let duration = Duration.seconds(value.seconds) + .nanoseconds(Int64(value.nanos))
            return duration == .zero ? nil : duration
        }
        streamIdleTimeout = proto.hasStreamIdleTimeout ? timeout(true, proto.streamIdleTimeout) : .seconds(300)
        requestTimeout = timeout(proto.hasRequestTimeout, proto.requestTimeout)
        requestHeadersTimeout = timeout(proto.hasRequestHeadersTimeout, proto.requestHeadersTimeout)

        var maxHeadersBytes = 60 * 1024
        if proto.hasMaxRequestHeadersKb {
            let kib = proto.maxRequestHeadersKb.value
            guard (1...8192).contains(kib) else {
                throw ConfigError(path: "\(path).max_request_headers_kb", message: "\(kib) is out of range 1-8192")
            }
            maxHeadersBytes = Int(kib) * 1024
        }
        maxRequestHeadersBytes = maxHeadersBytes

        // The downstream connection's limits.
        var idle: Duration? = .seconds(3600)
        var headersCount = 100
        if proto.hasCommonHTTPProtocolOptions {
            let common = proto.commonHTTPProtocolOptions
            if common.hasIdleTimeout { idle = timeout(true, common.idleTimeout) }
            if common.hasMaxHeadersCount {
                guard common.maxHeadersCount.value >= 1 else {
                    throw ConfigError(path: "\(path).common_http_protocol_options.max_headers_count", message: "must be at least 1")
                }
                headersCount = Int(common.maxHeadersCount.value)
            }
            notActedOn += Self.commonOptionsNotActedOn(common, field: "common_http_protocol_options", downstream: true)
        }
        connectionIdleTimeout = idle
        maxHeadersCount = headersCount

        var streams = Self.maxConcurrentStreamsLimit
        if proto.hasHTTP2ProtocolOptions {
            let http2 = proto.http2ProtocolOptions
            if http2.hasMaxConcurrentStreams {
                let given = http2.maxConcurrentStreams.value
                guard (1...2_147_483_647).contains(given) else {
                    throw ConfigError(path: "\(path).http2_protocol_options.max_concurrent_streams", message: "\(given) is out of range 1-2147483647")
                }
                if given > Self.maxConcurrentStreamsLimit {
                    notActedOn.append(.init(path: "http2_protocol_options.max_concurrent_streams",
                                            reason: "Capstan allows at most \(Self.maxConcurrentStreamsLimit) concurrent streams per HTTP/2 connection, not \(given)"))
                } else {
                    streams = Int(given)
                }
            }
            notActedOn += Self.http2OptionsNotActedOn(http2, field: "http2_protocol_options")
        }
        maxConcurrentStreams = streams
        if proto.hasHTTPProtocolOptions && proto.httpProtocolOptions.acceptHTTP10 {
            notActedOn.append(.init(path: "http_protocol_options.accept_http_10", reason: "how HTTP/1.0 requests are taken is not configurable in Capstan's HTTP/1 codec yet"))
        }

        upgradeTypes = proto.upgradeConfigs.filter { !$0.hasEnabled || $0.enabled.value }.map { $0.upgradeType.lowercased() }
        for (index, upgrade) in proto.upgradeConfigs.enumerated() where !upgrade.filters.isEmpty {
            notActedOn.append(.init(path: "upgrade_configs[\(index)].filters", reason: "upgraded (\(upgrade.upgradeType)) requests pass through the connection manager's own HTTP filters, not these"))
        }
        normalizesPath = proto.hasNormalizePath && proto.normalizePath.value
        if proto.mergeSlashes {
            notActedOn.append(.init(path: "merge_slashes", reason: "paths are matched and forwarded with repeated slashes as they came"))
        }
        switch proto.pathWithEscapedSlashesAction {
        case .implementationSpecificDefault, .keepUnchanged:
            break  // Envoy's default is to keep them, which is what Capstan does.
        case .rejectRequest, .unescapeAndRedirect, .unescapeAndForward, .UNRECOGNIZED:
            notActedOn.append(.init(path: "path_with_escaped_slashes_action", reason: "paths are matched and forwarded with escaped slashes (%2F, %5C) as they came (KEEP_UNCHANGED)"))
        }

        // Per-request behaviour not acted on yet.
        for (index, upgrade) in proto.upgradeConfigs.enumerated()
        where (!upgrade.hasEnabled || upgrade.enabled.value) && upgrade.upgradeType.lowercased() != "websocket" {
            notActedOn.append(.init(path: "upgrade_configs[\(index)]", reason: "only HTTP/1.1 WebSocket upgrades are tunnelled: a \(upgrade.upgradeType) request is forwarded as a plain one, its upgrade headers dropped as hop-by-hop"))
        }
        if requestHeadersTimeout != nil, codec != .http1 {
            notActedOn.append(.init(path: "request_headers_timeout", reason: "acted on for HTTP/1 only: an HTTP/2 request's headers are bounded by stream_idle_timeout and the connection's idle_timeout"))
        }
        if proto.hasTracing {
            notActedOn.append(.init(path: "tracing", reason: "Capstan makes no trace spans yet; trace headers pass through as they came"))
        }
        accessLogs = try AccessLogConfig.decode(proto.accessLog, path: path, notActedOn: &notActedOn)
        recordsForAccessLog = !accessLogs.isEmpty
        if proto.hasRequestIDExtension {
            let type = HTTPFilterRegistry.typeName(proto.requestIDExtension.typedConfig.typeURL)
            let reason = type == "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig"
                ? "x-request-id is a random (version 4) UUID, which is what this extension makes; its options (pack_trace_reason, use_request_id_for_trace_sampling) concern tracing, which Capstan does not do yet"
                : "x-request-id is a random (version 4) UUID whatever extension is named (\(type))"
            notActedOn.append(.init(path: "request_id_extension", reason: reason))
        }
        if proto.preserveExternalRequestID {
            notActedOn.append(.init(path: "preserve_external_request_id", reason: "an x-request-id that comes with the request is kept whether the request is internal or external"))
        }
        if proto.xffNumTrustedHops != 0 {
            notActedOn.append(.init(path: "xff_num_trusted_hops", reason: "the client's address is the downstream connection's peer: no X-Forwarded-For entry is trusted"))
        }
        if proto.skipXffAppend {
            notActedOn.append(.init(path: "skip_xff_append", reason: "with use_remote_address, the client's address is appended to X-Forwarded-For"))
        }
        if !proto.via.isEmpty {
            notActedOn.append(.init(path: "via", reason: "Capstan adds no via header"))
        }
        if proto.hasInternalAddressConfig {
            notActedOn.append(.init(path: "internal_address_config", reason: "internal addresses are Envoy's defaults: loopback, RFC 1918 and IPv6 unique local"))
        }
        fieldsNotActedOn = notActedOn

        var options = BinaryEncodingOptions()
        options.useDeterministicOrdering = true
        // A configuration read from a bootstrap's JSON may hold Anys of types Capstan has no message for,
        // which have no binary form here; their JSON stands in.
        source = (try? proto.serializedBytes(options: options)) ?? (try? proto.jsonUTF8Bytes()) ?? []
    }

    /// `rds`: the route configuration's name, which must come over ADS (istiod sends `ads: {}`).
    private static func routeConfigName(_ rds: Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_Rds, path: String,
                                        notActedOn: inout [FieldNotActedOn]) throws(ConfigError) -> String {
        guard !rds.routeConfigName.isEmpty else {
            throw ConfigError(path: "\(path).route_config_name", message: "is required")
        }
        guard rds.hasConfigSource, case .ads? = rds.configSource.configSourceSpecifier else {
            throw ConfigError(path: "\(path).config_source", message: "only ADS is supported (\"ads\": {}): Capstan takes routes on its one ADS stream")
        }
        if rds.configSource.resourceApiVersion == .v2 {
            throw ConfigError(path: "\(path).config_source.resource_api_version", message: "V2 is not supported: Capstan speaks xDS v3")
        }
        if rds.configSource.hasInitialFetchTimeout {
            notActedOn.append(.init(path: "rds.config_source.initial_fetch_timeout",
                                    reason: "a listener waits for its route configuration as long as an EDS cluster waits for its endpoints (the proxy's warming timeout, 15 s), whatever this says"))
        }
        return rds.routeConfigName
    }

    /// The fields of `common_http_protocol_options` Capstan does not act on (`field` is where they are;
    /// `downstream`: the connection manager's, where `idle_timeout` and `max_headers_count` are read).
    public static func commonOptionsNotActedOn(_ options: Envoy_Config_Core_V3_HttpProtocolOptions, field: String,
                                        downstream: Bool) -> [FieldNotActedOn] {
        var fields: [FieldNotActedOn] = []
        let side = downstream ? "downstream" : "upstream"
        if options.hasMaxConnectionDuration {
            fields.append(.init(path: "\(field).max_connection_duration", reason: "\(side) connections are not closed after a fixed time"))
        }
        if options.hasMaxStreamDuration {
            fields.append(.init(path: "\(field).max_stream_duration", reason: "a stream's duration is limited only by the route's timeout"))
        }
        if options.headersWithUnderscoresAction != .allow {
            fields.append(.init(path: "\(field).headers_with_underscores_action", reason: "headers with underscores in their names are allowed (Envoy's ALLOW)"))
        }
        if downstream && options.hasMaxRequestsPerConnection {
            fields.append(.init(path: "\(field).max_requests_per_connection", reason: "a downstream connection takes any number of requests"))
        }
        if !downstream && options.hasMaxHeadersCount {
            fields.append(.init(path: "\(field).max_headers_count", reason: "upstream responses' headers are not counted"))
        }
        return fields
    }

    /// The fields of `http2_protocol_options` Capstan does not act on (all but `max_concurrent_streams`).
    public static func http2OptionsNotActedOn(_ options: Envoy_Config_Core_V3_Http2ProtocolOptions, field: String) -> [FieldNotActedOn] {
        [("hpack_table_size", options.hasHpackTableSize), ("initial_stream_window_size", options.hasInitialStreamWindowSize),
         ("initial_connection_window_size", options.hasInitialConnectionWindowSize)].filter(\.1).map { name, _ in
            FieldNotActedOn(path: "\(field).\(name)", reason: "HTTP/2's HPACK table and flow-control windows are swift-nio-http2's defaults")
        }
    }
}
