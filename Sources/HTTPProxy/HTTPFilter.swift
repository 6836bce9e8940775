import Authorization
import HTTPTypes
import NIOCore
import NIOHTTPTypes
import Routing

/// One HTTP filter of a connection manager's chain, Envoy's decoder filter life cycle on the request's
/// headers: each filter, in configured order, lets the request go on, holds it (and resumes or answers it
/// later, from its event loop), or answers it here. The router, the last filter of every chain, is the
/// ``HTTPStreamHandler`` itself. Filters are made by ``HTTPFilterRegistry`` for each request they have
/// something to do on (Envoy makes them per stream), once it is routed, and used on its event loop only.
///
/// The body and trailers phases are not here yet: while a filter holds a request, the stream keeps its
/// body parts and sends them on once the request goes on; the holding filter sees them as they come
/// (``decodeHeldPart(_:stream:)``: ext_authz's `with_request_body`).
protocol HTTPFilter: AnyObject {
    /// The request's headers, with its route (nil: none matched; the router will answer 404). A filter
    /// may change them (the JWT filter removes the token it verified); later filters and the upstream
    /// see the change.
    func decodeHeaders(_ request: inout HTTPRequest, route: RouteDecision?, stream: any HTTPFilterCallbacks) -> HTTPFilterStatus
    /// The request is over (answered, its exchange done, or the client gone): timers are cancelled and
    /// what it held released. Called for every request, whatever the filter decided.
    func requestEnded()
    /// A body part (or the end) of the request this filter holds, as it came; the stream keeps it for
    /// the upstream whatever the filter does.
    func decodeHeldPart(_ part: HTTPRequestPart, stream: any HTTPFilterCallbacks)
    /// The response's headers on their way downstream, the upstream's or a local reply, for each filter
    /// that let the request on, last first (Envoy's encoder order): CORS adds its `Access-Control-*`.
    func encodeHeaders(_ response: inout HTTPResponse)
}

extension HTTPFilter {
    func decodeHeldPart(_ part: HTTPRequestPart, stream: any HTTPFilterCallbacks) {}
    func encodeHeaders(_ response: inout HTTPResponse) {}
}

/// What a filter decided about a request's headers.
enum HTTPFilterStatus {
    /// On to the next filter (the router last).
    case proceed
    /// Held: the filter calls ``HTTPFilterCallbacks/resume()`` or ``HTTPFilterCallbacks/reply(_:)`` later.
    case hold
    /// Answered here.
    case reply(HTTPLocalReply)
}

/// A response the proxy makes itself (Envoy's local reply).
struct HTTPLocalReply {
    var status: HTTPResponse.Status
    var body: String
    var flags: ResponseFlags
    /// For a gRPC request: answered as gRPC, HTTP 200 with this `grpc-status` (and the body as `grpc-message`).
    var grpcStatus: Int?
    /// Headers of the reply (the JWT filter's `www-authenticate`, ext_authz's denied response's); not sent on a gRPC reply.
    var headers = HTTPFields()
}

/// The stream as its filters see it (Envoy's decoder filter callbacks), used on its event loop only.
protocol HTTPFilterCallbacks: AnyObject {
    var eventLoop: any EventLoop { get }
    /// The connection the request came on: its addresses and verified peer identity.
    var downstream: DownstreamConnectionInfo { get }
    /// What filters left on this request for later ones (Envoy's dynamic metadata), by filter name.
    var metadata: DynamicMetadata { get set }
    /// A held request goes on to the next filter.
    func resume()
    /// A held request goes on to the next filter, with `change` made to it first (the JWT filter's
    /// token removed, ext_authz's headers).
    func resume(_ change: (inout HTTPRequest) -> Void)
    /// A held request is answered here.
    func reply(_ reply: HTTPLocalReply)
    /// Response flags for the access log and metrics (`DI`).
    func addFlags(_ flags: ResponseFlags)
    /// Envoy's `%RESPONSE_CODE_DETAILS%` for a reply a filter made (`rbac_access_denied_matched_policy[…]`).
    func setResponseCodeDetails(_ details: String)
    /// `HTTP/1.1` or `HTTP/2`: how the request came.
    var protocolName: String { get }
    /// A cluster of the configuration the request is routed by, with this event loop's connection
    /// pools: for filters that call a service of their own (ext_authz, the JWT filter's JWKS). Nil: no such cluster.
    func upstream(named cluster: String) -> (cluster: any UpstreamCluster, pools: UpstreamPools)?
}
