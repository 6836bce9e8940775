import HTTPTypes

/// Where a request goes, as a ``RouteTable`` decides: the virtual host and route that matched, and what
/// to do. The router acts on it; `capstan status` and tests only read it.
public struct RouteDecision: Sendable {
    public enum Action: Sendable {
        /// Forward upstream, to the one cluster chosen (by weight, if the route splits traffic).
        case forward(Forwarding)
        /// Answer with a redirect.
        case redirect(Redirect)
        /// Answer with this status and body.
        case directResponse(DirectResponse)
    }

    /// The virtual host's name (statistics and logs).
    public let virtualHost: String
    /// The route's `name` (empty if it has none) and its index in the virtual host.
    public let routeName: String
    public let routeIndex: Int
    public let action: Action
    /// The virtual host's `include_request_attempt_count`: send `x-envoy-attempt-count` upstream.
    public let includesRequestAttemptCount: Bool
    /// The HTTP filters' configurations for this route (`typed_per_filter_config`, most specific level).
    public let filterConfigs: RouteFilterConfigs

    /// The cluster the request is forwarded to, if it is.
    public var cluster: String? {
        if case .forward(let forwarding) = action { forwarding.cluster } else { nil }
    }
}

/// Forwarding to one cluster, with everything the route (and, for a weighted cluster, the cluster entry)
/// asks to change on the way.
public struct Forwarding: Sendable {
    /// How the upstream request's path is rewritten.
    public enum PathRewrite: Sendable {
        /// `prefix_rewrite`: the route's matched prefix, `matchedLength` UTF-8 bytes, replaced.
        case prefix(String, matchedLength: Int)
        /// `regex_rewrite`: every match in the path (not its query) substituted.
        case regex(RegexSubstitution)
    }

    public let cluster: String
    /// The route's `timeout` for the whole upstream exchange; nil: none (Istio's `0s`). Envoy's default 15 s.
    public let timeout: Duration?
    /// `max_grpc_timeout` and `grpc_timeout_offset`: a gRPC request's own deadline (`grpc-timeout`) is
    /// its timeout instead, capped; nil: the header is not read (the route's `timeout` applies).
    public let grpcTimeout: GRPCTimeout?

    public struct GRPCTimeout: Sendable, Equatable {
        /// nil: no cap (Istio's `max_grpc_timeout: 0s`).
        public let maximum: Duration?
        public let offset: Duration
    }

    /// The timeout of `request`: for gRPC under ``grpcTimeout``, its `grpc-timeout` (less the offset),
    /// none when it has none, at most the maximum; else the route's `timeout`.
    public func timeout(for request: HTTPRequest) -> Duration? {
        guard let grpcTimeout, request.headerFields[.contentType]?.hasPrefix("application/grpc") == true else { return timeout }
        var deadline = request.headerFields[Self.grpcTimeoutHeader].flatMap(Self.grpcDuration)
        if let given = deadline, grpcTimeout.offset > .zero, given > grpcTimeout.offset { deadline = given - grpcTimeout.offset }
        guard let maximum = grpcTimeout.maximum else { return deadline }
        return min(deadline ?? maximum, maximum)
    }

    static let grpcTimeoutHeader = HTTPField.Name("grpc-timeout")!

    /// gRPC's `grpc-timeout`: up to eight digits and a unit (H, M, S, m, u, n); nil when malformed.
    static func grpcDuration(_ value: String) -> Duration? {
        let bytes = Array(value.utf8)
        guard (2...9).contains(bytes.count), let unit = bytes.last,
              let amount = Int64(String(decoding: bytes.dropLast(), as: UTF8.self)), amount >= 0 else { return nil }
        switch unit {
        case UInt8(ascii: "H"): return .seconds(amount * 3600)
        case UInt8(ascii: "M"): return .seconds(amount * 60)
        case UInt8(ascii: "S"): return .seconds(amount)
        case UInt8(ascii: "m"): return .milliseconds(amount)
        case UInt8(ascii: "u"): return .microseconds(amount)
        case UInt8(ascii: "n"): return .nanoseconds(amount)
        default: return nil
        }
    }
    public let pathRewrite: PathRewrite?
    /// `host_rewrite_literal`: the upstream request's authority.
    public let hostRewrite: String?
    /// The route's, else its virtual host's.
    public let retryPolicy: RetryPolicy?
    /// What the request is hashed by, for a RING_HASH or MAGLEV cluster (empty: not hashed).
    public let hashPolicies: [HashPolicy]
    /// `request_mirror_policies`: the clusters a copy of the request is sent to (shadowed), in order.
    public let mirrors: [MirrorPolicy]
    /// Merged from every level in Envoy's order.
    public let requestHeaders: HeaderMutations
    public let responseHeaders: HeaderMutations

    /// The upstream request's path for `path` (the downstream `:path`); nil when it is not rewritten.
    public func rewrittenPath(_ path: String) -> String? {
        switch pathRewrite {
        case nil: return nil
        case .prefix(let replacement, let matchedLength):
            return replacement + String(Substring(path.utf8.dropFirst(matchedLength)))
        case .regex(let substitution):
            let whole = Substring(path)
            let pathOnly = RouteMatch.pathOnly(whole)
            return substitution.apply(to: pathOnly) + whole[pathOnly.endIndex...]
        }
    }
}

/// Envoy's `RedirectAction`: the parts of the `Location` that change, and the status.
public struct Redirect: Sendable {
    public enum PathChange: Sendable {
        /// `path_redirect`: the whole path (and query, if it has one).
        case path(String)
        /// `prefix_rewrite`: the matched prefix replaced.
        case prefix(String, matchedLength: Int)
        /// `regex_rewrite`: every match in the path substituted.
        case regex(RegexSubstitution)
    }

    /// `https_redirect` (as `https`) or `scheme_redirect`.
    public let scheme: String?
    public let host: String?
    public let port: UInt32?
    public let pathChange: PathChange?
    public let status: HTTPResponse.Status
    public let stripsQuery: Bool
    /// The response headers of the route and the levels around it, as for a forwarded request's response.
    public let responseHeaders: HeaderMutations

    /// The `Location` for `request`: its scheme, authority and path with the configured parts replaced.
    /// A port is kept unless replaced, or dropped when the scheme changes and the port is the old scheme's
    /// default.
    public func location(for request: HTTPRequest) -> String {
        let originalScheme = request.scheme ?? "http"
        let newScheme = scheme ?? originalScheme
        var (originalHost, originalPort) = VirtualHostDomains.splitPort(Substring(request.authority ?? ""))
        if scheme != nil, newScheme != originalScheme, originalPort == (originalScheme == "https" ? "443" : "80") {
            originalPort = nil
        }
        let newHost = host ?? String(originalHost)
        let newPort = port.map(String.init) ?? originalPort.map(String.init)
        let whole = Substring(request.path ?? "/")
        let pathOnly = RouteMatch.pathOnly(whole)
        var query = whole[pathOnly.endIndex...]
        var newPath: String
        switch pathChange {
        case nil: newPath = String(pathOnly)
        case .path(let path):
            newPath = path
            if path.contains("?") { query = "" }
        case .prefix(let replacement, let matchedLength): newPath = replacement + String(Substring(pathOnly.utf8.dropFirst(matchedLength)))
        case .regex(let substitution): newPath = substitution.apply(to: pathOnly)
        }
        if stripsQuery { query = "" }
        return "\(newScheme)://\(newHost)\(newPort.map { ":\($0)" } ?? "")\(newPath)\(query)"
    }
}

/// Envoy's `DirectResponseAction`.
public struct DirectResponse: Sendable, Equatable {
    public let status: HTTPResponse.Status
    /// Empty when the route gives no body.
    public let body: [UInt8]
    /// The response headers of the route and the levels around it, as for a forwarded request's response.
    public let responseHeaders: HeaderMutations
}
