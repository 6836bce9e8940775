import Authorization
import HTTPTypes
import NIOCore

/// One request's life, filled in as it goes and handed to the ``HTTPStreamObserver`` when it ends:
/// Istio's request metrics, Envoy's statistics and the access log are all computed from it.
public struct HTTPStreamRecord: Sendable {
    public var start: NIODeadline
    public var end: NIODeadline?
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`, as Istio's `request_protocol` says it.
    public var requestProtocol: String
    public var method: HTTPRequest.Method?
    public var authority: String?
    public var path: String?
    public var requestID: String?
    public var userAgent: String?
    /// The status sent downstream; 0 when none was (the stream was reset).
    public var responseCode = 0
    public var flags: ResponseFlags = []
    /// Body bytes received from downstream and sent back to it.
    public var requestBodyBytes = 0
    public var responseBodyBytes = 0
    /// The route's name and the cluster and endpoint the request went to, if it got that far.
    public var routeName: String?
    public var cluster: String?
    /// The cluster itself, for whoever keeps its statistics.
    public var upstream: (any UpstreamCluster)?
    public var upstreamHost: SocketAddress?
    /// Attempts after the first (the route's retry policy).
    public var upstreamRetries = 0
    /// `grpc-status` of the response (trailers, or headers of a trailers-only response).
    public var grpcStatus: String?
    /// Why an HTTP filter answered the request itself, in Envoy's words (`rbac_access_denied_matched_policy[none]`).
    public var filterDetails: String?
    /// The response came from the upstream (Envoy's `via_upstream`), not from the proxy.
    public var respondedByUpstream = false
    /// When the request's last part arrived, and the upstream response's head.
    public var requestEnd: NIODeadline?
    public var upstreamResponseStart: NIODeadline?

    // Kept only when the connection manager has an access log (``HTTPConnectionManagerConfig/recordsForAccessLog``):
    /// The request as it came, with the header fields as they went upstream (`x-request-id` generated,
    /// `x-forwarded-for` appended); its path is the one that came, as Envoy's `X-ENVOY-ORIGINAL-PATH`.
    public var request: HTTPRequest?
    /// The response's header fields as sent downstream, and its trailers.
    public var responseHeaders: HTTPFields?
    public var responseTrailers: HTTPFields?
    /// The local address of the upstream connection.
    public var upstreamLocalAddress: SocketAddress?

    public init(start: NIODeadline, requestProtocol: String) {
        self.start = start
        self.requestProtocol = requestProtocol
    }

    /// Milliseconds from the request's first byte to the response's last.
    public var durationMilliseconds: Double {
        guard let end else { return 0 }
        return Double((end - start).nanoseconds) / 1_000_000
    }

    /// Envoy's `%RESPONSE_CODE_DETAILS%`: why the response is what it is, by Envoy's names, from the flags
    /// and where the response came from. nil when nothing was answered.
    public var responseCodeDetails: String? {
        if let filterDetails { return filterDetails }
        if flags.contains(.faultInjected) { return "fault_filter_abort" }
        if flags.contains(.noRoute) { return "route_not_found" }
        if flags.contains(.noClusterFound) { return "cluster_not_found" }
        if flags.contains(.noHealthyUpstream) { return "no_healthy_upstream" }
        if flags.contains(.upstreamOverflow) { return "upstream_reset_before_response_started{overflow}" }
        if flags.contains(.upstreamConnectionFailure) { return "upstream_reset_before_response_started{connection_failure}" }
        if flags.contains(.upstreamRequestTimeout) { return "upstream_response_timeout" }
        if flags.contains(.streamIdleTimeout) { return "stream_idle_timeout" }
        if flags.contains(.upstreamConnectionTermination) {
            return respondedByUpstream ? "upstream_reset_after_response_started{connection_termination}"
                : "upstream_reset_before_response_started{connection_termination}"
        }
        if flags.contains(.downstreamConnectionTermination) { return "downstream_remote_disconnect" }
        if respondedByUpstream { return "via_upstream" }
        guard responseCode != 0 else { return nil }
        // Answered here without a flag: a route's direct response or redirect, or a request over the limits.
        if routeName != nil && cluster == nil { return "direct_response" }
        if responseCode == 431 { return requestProtocol == "HTTP/2" ? "http2.too_many_headers" : "http1.headers_too_large" }
        return nil
    }
}

/// Who the downstream is: what XFCC, metrics and access logs say of the connection.
public struct DownstreamConnectionInfo: Sendable {
    public var remoteAddress: SocketAddress? {
        didSet { remoteIP = remoteAddress.flatMap(IPAddress.init(socketAddress:)) }
    }
    /// The connection's original destination.
    public var localAddress: SocketAddress? {
        didSet { localIP = localAddress.flatMap(IPAddress.init(socketAddress:)) }
    }
    /// Their IP addresses, as RBAC compares them: found once per connection, not per request.
    public private(set) var remoteIP: IPAddress?
    public private(set) var localIP: IPAddress?
    /// TLS was terminated on this connection.
    public var isTLS: Bool
    /// The verified peer certificate's SPIFFE ID (mutual TLS).
    public var peerPrincipal: String?
    /// This proxy's own SPIFFE ID on that connection.
    public var localPrincipal: String?
    /// The TLS server name (SNI) the client asked for, when tls_inspector read one.
    public var requestedServerName: String?
    /// Accepted by an inbound listener (Istio's `reporter="destination"`).
    public var isInbound: Bool

    public init(remoteAddress: SocketAddress?, localAddress: SocketAddress?, isTLS: Bool = false,
                peerPrincipal: String? = nil, localPrincipal: String? = nil, requestedServerName: String? = nil,
                isInbound: Bool = false) {
        self.isInbound = isInbound
        self.requestedServerName = requestedServerName
        self.remoteAddress = remoteAddress
        self.localAddress = localAddress
        remoteIP = remoteAddress.flatMap(IPAddress.init(socketAddress:))
        localIP = localAddress.flatMap(IPAddress.init(socketAddress:))
        self.isTLS = isTLS
        self.peerPrincipal = peerPrincipal
        self.localPrincipal = localPrincipal
    }
}

/// Told of every request when it ends (statistics, metrics, access log). Called on the stream's event
/// loop: it must not block.
public protocol HTTPStreamObserver: Sendable {
    /// A request's headers arrived.
    func streamStarted()
    func streamEnded(_ record: HTTPStreamRecord, on connection: DownstreamConnectionInfo, manager: HTTPConnectionManagerConfig)
    /// A fault filter started (+1) or ended (-1) a fault: Envoy's `fault.active_faults` gauge.
    func activeFaultsChanged(by delta: Int)
    /// A copy of a request sent to a mirror cluster ended, with its upstream's `status` (0: none) and
    /// `flags`: counted in that cluster's statistics as a request.
    func shadowEnded(to cluster: any UpstreamCluster, status: Int, flags: ResponseFlags)
    /// An HTTP/1 request's head took longer than `request_headers_timeout` and was answered 408.
    func requestHeadersTimedOut()
}

extension HTTPStreamObserver {
    public func activeFaultsChanged(by delta: Int) {}
    public func shadowEnded(to cluster: any UpstreamCluster, status: Int, flags: ResponseFlags) {}
    public func requestHeadersTimedOut() {}
}
