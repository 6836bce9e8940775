import Atomics
import Authorization
import Configuration
import HTTPTypes
import NIOCore
import SwiftProtobuf
import XDS

/// `envoy.filters.http.ext_authz` as configured (istiod writes it for an AuthorizationPolicy with
/// `action: CUSTOM`): the gRPC authorization service to ask, by one of the proxy's clusters, what to do
/// when it cannot answer, and which requests to ask about. Fields that would let through a request
/// Envoy stops are refused; the others Capstan does not act on are listed.
public final class ExtAuthzFilterConfig: Sendable {
    static let typeName = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
    /// Envoy's default deadline of a check when `grpc_service.timeout` is not given.
    public static let defaultTimeout = TimeAmount.milliseconds(200)

    /// `grpc_service.envoy_grpc.cluster_name`: the cluster the checks go to.
    public let clusterName: String
    /// `:authority` of the checks (`envoy_grpc.authority`, else the cluster's name, as Envoy's).
    public let authority: String
    /// Each check's deadline; nil: none (a `timeout` of 0).
    public let timeout: TimeAmount?
    /// A check that fails (unreachable, timed out, an error) lets the request go on.
    public let failureModeAllow: Bool
    /// … with `x-envoy-auth-failure-mode-allowed: true` added to it.
    public let failureModeAllowHeaderAdd: Bool
    /// The answer when a check fails and failure is not allowed (403 unless `status_on_error` says).
    public let statusOnError: HTTPResponse.Status
    /// Only requests whose dynamic metadata matches are checked (Istio: those the shadow RBAC filter's
    /// CUSTOM policies matched); nil: every request.
    public let enabledMetadata: MetadataMatcher?
    /// `with_request_body`: the check waits for the body, up to this, and sends it along; nil: headers only.
    public let requestBody: RequestBodySettings?
    public let statNames: ExtAuthzCounters.Names
    /// Bound by the proxy to the counters of `statNames` when a connection first uses the filter, so
    /// they outlive configuration updates, as Envoy's statistics do; unbound, nothing is counted.
    public let counters = ManagedAtomicLazyReference<ExtAuthzCounters>()

    public init(clusterName: String, authority: String? = nil, timeout: TimeAmount? = ExtAuthzFilterConfig.defaultTimeout, failureModeAllow: Bool = false,
                failureModeAllowHeaderAdd: Bool = false, statusOnError: HTTPResponse.Status = .forbidden,
                enabledMetadata: MetadataMatcher? = nil, requestBody: RequestBodySettings? = nil, statPrefix: String = "") {
        self.requestBody = requestBody
        self.clusterName = clusterName
        self.authority = authority.flatMap { $0.isEmpty ? nil : $0 } ?? clusterName
        self.timeout = timeout
        self.failureModeAllow = failureModeAllow
        self.failureModeAllowHeaderAdd = failureModeAllowHeaderAdd
        self.statusOnError = statusOnError
        self.enabledMetadata = enabledMetadata
        statNames = ExtAuthzCounters.Names(prefix: "ext_authz." + (statPrefix.isEmpty ? "" : "\(statPrefix)."))
    }

    /// From a filter's `typed_config`; `path` names it in refusals, `field` in the fields not acted on.
    convenience init(unpacking any: Google_Protobuf_Any, path: String, field: String,
                     notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        let proto: Envoy_Extensions_Filters_Http_ExtAuthz_V3_ExtAuthz
        do {
            proto = try Envoy_Extensions_Filters_Http_ExtAuthz_V3_ExtAuthz(unpackingAny: any)
        } catch {
            throw ConfigError(path: path, message: "is not an \(Self.typeName): \(error)")
        }
        // Outside the subset: the HTTP service (3) and the newer fields, any of which may change what a
        // check decides or what reaches the upstream.
        if let unknown = UnknownFields.paths(in: proto).first(where: { !$0.contains(".") }) {
            let what = unknown == "#3" ? "http_service (an HTTP authorization service)" : "field \(unknown)"
            throw ConfigError(path: "\(path).\(unknown)", message: "\(what) is not supported by Capstan's ext_authz, and leaving it out could let through what the service would stop")
        }
        for nested in UnknownFields.paths(in: proto) where nested.hasPrefix("#1.") {
            notActedOn.append(.init(path: "\(field).grpc_service.\(nested.dropFirst(3))", reason: "outside Capstan's GrpcService (retry_policy, initial_metadata, …): the check is sent once, with no extra metadata"))
        }
        guard case .grpcService(let service)? = proto.services else {
            throw ConfigError(path: "\(path).grpc_service", message: "is required: Capstan calls gRPC authorization services only")
        }
        guard case .envoyGrpc(let envoyGRPC)? = service.targetSpecifier else {
            throw ConfigError(path: "\(path).grpc_service.google_grpc", message: "is not supported: give envoy_grpc, a cluster of the proxy's")
        }
        guard !envoyGRPC.clusterName.isEmpty else {
            throw ConfigError(path: "\(path).grpc_service.envoy_grpc.cluster_name", message: "is required")
        }
        switch proto.transportApiVersion {
        case .v3, .auto: break
        default:
            throw ConfigError(path: "\(path).transport_api_version", message: "must be V3: Capstan speaks envoy.service.auth.v3 only")
        }
        var requestBody: RequestBodySettings?
        if proto.hasWithRequestBody {
            let settings = proto.withRequestBody
            guard settings.maxRequestBytes > 0 else {
                throw ConfigError(path: "\(path).with_request_body.max_request_bytes", message: "must be above 0")
            }
            requestBody = RequestBodySettings(maxBytes: Int(settings.maxRequestBytes), allowsPartial: settings.allowPartialMessage,
                                              packsAsBytes: settings.packAsBytes)
        }
        var timeout: TimeAmount? = Self.defaultTimeout
        if service.hasTimeout {
            let duration = service.timeout
            guard duration.seconds >= 0, duration.nanos >= 0 else {
                throw ConfigError(path: "\(path).grpc_service.timeout", message: "must not be negative")
            }
            let nanoseconds = duration.seconds.multipliedReportingOverflow(by: 1_000_000_000)
            timeout = nanoseconds.overflow ? nil : .nanoseconds(nanoseconds.partialValue + Int64(duration.nanos))
            if timeout == .nanoseconds(0) { timeout = nil }
        }
        var status = HTTPResponse.Status.forbidden
        if proto.hasStatusOnError, proto.statusOnError.code.rawValue >= 100 {
            status = HTTPResponse.Status(code: proto.statusOnError.code.rawValue)
        }
        let enabled = proto.hasFilterEnabledMetadata
            ? try MetadataMatcher(proto.filterEnabledMetadata, path: "\(path).filter_enabled_metadata") : nil
        if proto.clearRouteCache_p {
            notActedOn.append(.init(path: "\(field).clear_route_cache", reason: "Capstan routes a request before its filters run and does not route it again after the authorization service changed its headers"))
        }
        if !proto.metadataContextNamespaces.isEmpty {
            notActedOn.append(.init(path: "\(field).metadata_context_namespaces", reason: "Capstan sends no metadata context with a check"))
        }
        if proto.hasFilterEnabled {
            notActedOn.append(.init(path: "\(field).filter_enabled", reason: "Capstan reads no runtime: every request (that filter_enabled_metadata selects) is checked"))
        }
        if proto.includePeerCertificate {
            notActedOn.append(.init(path: "\(field).include_peer_certificate", reason: "Capstan sends the peer's principal with a check, not its certificate"))
        }
        if proto.includeTlsSession {
            notActedOn.append(.init(path: "\(field).include_tls_session", reason: "Capstan sends no TLS session (SNI) with a check"))
        }
        self.init(clusterName: envoyGRPC.clusterName, authority: envoyGRPC.authority, timeout: timeout,
                  failureModeAllow: proto.failureModeAllow, failureModeAllowHeaderAdd: proto.failureModeAllowHeaderAdd,
                  statusOnError: status, enabledMetadata: enabled, requestBody: requestBody, statPrefix: proto.statPrefix)
    }
}

/// ext_authz's `with_request_body` (Envoy's `BufferSettings`): how much of a request's body a check
/// waits for and carries.
public struct RequestBodySettings: Sendable, Equatable {
    /// `max_request_bytes`: at most this much is sent.
    public var maxBytes: Int
    /// `allow_partial_message`: a longer body is cut at `maxBytes`; else the request is answered 413.
    public var allowsPartial: Bool
    /// `pack_as_bytes`: sent as `raw_body`, not as the UTF-8 `body`.
    public var packsAsBytes: Bool

    public init(maxBytes: Int, allowsPartial: Bool = false, packsAsBytes: Bool = false) {
        self.maxBytes = maxBytes
        self.allowsPartial = allowsPartial
        self.packsAsBytes = packsAsBytes
    }
}

/// One ext_authz filter's counters: Envoy's `ext_authz.ok`, `.denied`, `.error` and
/// `.failure_mode_allowed` (after the filter's `stat_prefix`), under the connection manager's
/// `http.<stat_prefix>.`. Atomics, counted from every event loop.
public final class ExtAuthzCounters: Sendable {
    public struct Names: Hashable, Sendable {
        /// `ext_authz.` and the filter's `stat_prefix.`, if any.
        public var prefix: String
    }

    public enum Outcome: Sendable, CaseIterable {
        case ok, denied, error, failureModeAllowed

        var name: String {
            switch self {
            case .ok: "ok"
            case .denied: "denied"
            case .error: "error"
            case .failureModeAllowed: "failure_mode_allowed"
            }
        }
    }

    public let names: Names
    private let counts = Outcome.allCases.map { _ in ManagedAtomic<Int>(0) }

    public init(names: Names) { self.names = names }

    public func count(_ outcome: Outcome) {
        counts[Outcome.allCases.firstIndex(of: outcome)!].wrappingIncrement(ordering: .relaxed)
    }

    /// Name and value of each counter.
    public var entries: [(String, Int)] {
        zip(Outcome.allCases, counts).map { (names.prefix + $0.name, $1.load(ordering: .relaxed)) }
    }
}
