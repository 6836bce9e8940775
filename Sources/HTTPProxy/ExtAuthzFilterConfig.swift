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
    public static let defaultTimeout = ExternalAuthorizationService.defaultTimeout

    /// The service asked: its cluster, `:authority` and deadline.
    public let service: ExternalAuthorizationService
    public var clusterName: String { service.clusterName }
    public var authority: String { service.authority }
    public var timeout: TimeAmount? { service.timeout }
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
        service = ExternalAuthorizationService(clusterName: clusterName, authority: authority, timeout: timeout)
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
        let target = try ExternalAuthorizationService(service, apiVersion: proto.transportApiVersion, path: path)
        var requestBody: RequestBodySettings?
        if proto.hasWithRequestBody {
            let settings = proto.withRequestBody
            guard settings.maxRequestBytes > 0 else {
                throw ConfigError(path: "\(path).with_request_body.max_request_bytes", message: "must be above 0")
            }
            requestBody = RequestBodySettings(maxBytes: Int(settings.maxRequestBytes), allowsPartial: settings.allowPartialMessage,
                                              packsAsBytes: settings.packAsBytes)
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
        self.init(clusterName: target.clusterName, authority: target.authority, timeout: target.timeout,
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
