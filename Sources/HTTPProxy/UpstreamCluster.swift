import NIOCore

/// The HTTP version spoken to an upstream, from the cluster's `HttpProtocolOptions`.
public enum UpstreamProtocol: Sendable, Equatable {
    case http1
    case http2
    /// `use_downstream_protocol_config`: whatever the downstream request came in.
    case downstream
}

/// The version a request is sent upstream in, once ``UpstreamProtocol`` is resolved for it.
public enum UpstreamVersion: Sendable, Hashable {
    case http1
    case http2
}

/// The endpoint chosen for one request. `token` goes back to the cluster when the request ends
/// (LEAST_REQUEST counts active requests per endpoint with it).
public struct UpstreamEndpoint: Sendable, Hashable {
    public var address: SocketAddress
    /// The local address to connect from (Istio's inbound passthrough source); nil: the kernel's choice.
    public var source: SocketAddress?
    public var token: Int?
    /// How connections to it are secured, as the cluster chose for this endpoint (opaque here, Istio's
    /// `tlsMode`): connections are pooled by it too, so a plaintext one never serves a TLS endpoint. The
    /// cluster gives the same object each time it chooses the same endpoint; pools compare it by identity.
    public var transport: (any AnyObject & Sendable)?
    /// The priority the cluster placed it in (its rank among the cluster's priorities, 0 first), for
    /// `previous_priorities`; not part of its identity.
    public var priority: Int

    public init(address: SocketAddress, source: SocketAddress? = nil, token: Int? = nil, transport: (any AnyObject & Sendable)? = nil,
                priority: Int = 0) {
        self.address = address
        self.source = source
        self.token = token
        self.transport = transport
        self.priority = priority
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.address == rhs.address && lhs.source == rhs.source && lhs.token == rhs.token
            && lhs.transport.map(ObjectIdentifier.init) == rhs.transport.map(ObjectIdentifier.init)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(address)
        hasher.combine(source)
        hasher.combine(token)
        hasher.combine(transport.map(ObjectIdentifier.init))
    }

    /// The same endpoint as a pool knows it: without the request's token.
    var pooled: Self {
        var copy = self
        copy.token = nil
        return copy
    }
}

/// Why a cluster has no endpoint for a request: Envoy's `UH` and `UO`.
public enum UpstreamUnavailable: Error, Sendable {
    case noHealthyUpstream
    case overflow
}

/// What became of one attempt at an endpoint, as the router saw it: what a cluster's outlier detection
/// counts.
public enum UpstreamOutcome: Sendable, Equatable {
    /// The response head arrived with this final status (1xx other than 101 are not reported).
    case response(status: Int)
    /// No connection (or stream) could be had to the endpoint.
    case connectFailure
    /// The connection or stream ended before the response did.
    case reset
    /// The route's `timeout` or the attempt's `per_try_timeout` ran out while the endpoint had it.
    case timeout
}

/// A cluster as the router sees it: endpoints chosen per request, and connections made with the
/// cluster's TLS. The proxy's cluster runtime implements it; tests plug in their own.
public protocol UpstreamCluster: AnyObject, Sendable {
    var name: String { get }
    var upstreamProtocol: UpstreamProtocol { get }
    /// `HttpProtocolOptions`' `idle_timeout`: an idle HTTP/1.1 connection is closed after it (nil: never).
    var upstreamIdleTimeout: TimeAmount? { get }
    /// `max_requests_per_connection`: an HTTP/1.1 connection that carried this many is not reused.
    var maxRequestsPerConnection: Int? { get }
    /// The limits on connections, pending requests, requests and retries the cluster has open.
    var circuitBreakers: CircuitBreakers { get }
    /// The endpoint for the next request from `downstream`, by the cluster's `lb_policy` (an
    /// ORIGINAL_DST cluster: the connection's original destination); RING_HASH and MAGLEV place `hash`
    /// (the route's hash policies', ``HashPolicy``; nil: a random place).
    func chooseEndpoint(for downstream: DownstreamConnectionInfo, hash: UInt64?) -> Result<UpstreamEndpoint, UpstreamUnavailable>
    /// The endpoint for a retry under `previous_priorities`: as ``chooseEndpoint(for:hash:)``, with the
    /// priority drawn from the load `priorities` gives for the cluster's priorities' health.
    func chooseEndpoint(for downstream: DownstreamConnectionInfo, hash: UInt64?,
                        priorities: inout PreviousPriorities) -> Result<UpstreamEndpoint, UpstreamUnavailable>
    /// The request sent to `endpoint` has ended.
    func requestEnded(at endpoint: UpstreamEndpoint)
    /// How an attempt at `endpoint` went (its outlier detection counts it); reported before
    /// ``requestEnded(at:)``, possibly more than once per attempt (a reset after the response head).
    func record(_ outcome: UpstreamOutcome, at endpoint: UpstreamEndpoint)
    /// A connection to `endpoint` on `loop` with the cluster's transport socket established; with TLS,
    /// offering `alpn` (``HTTPConnectionManagerConfig/upstreamALPN(for:)``) in place of the cluster's
    /// ALPN when given. `configure` puts the HTTP codec on it before the first byte from the upstream
    /// reaches the end of its pipeline; its result is the future's.
    func connect<Connection>(to endpoint: UpstreamEndpoint, version: UpstreamVersion, alpn: [String]?, on loop: any EventLoop,
                             configure: @escaping (Channel) throws -> Connection) -> EventLoopFuture<Connection>
}

extension UpstreamCluster {
    /// Clusters without outlier detection (tests' own) need not listen.
    public func record(_ outcome: UpstreamOutcome, at endpoint: UpstreamEndpoint) {}

    /// Clusters of one priority (tests' own) have nothing to leave out.
    public func chooseEndpoint(for downstream: DownstreamConnectionInfo, hash: UInt64?,
                               priorities: inout PreviousPriorities) -> Result<UpstreamEndpoint, UpstreamUnavailable> {
        chooseEndpoint(for: downstream, hash: hash)
    }
}
