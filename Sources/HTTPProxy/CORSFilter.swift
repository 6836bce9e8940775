import HTTPTypes
import Routing

/// `envoy.filters.http.cors` on one request whose route has a CORS policy (Istio's VirtualService
/// `corsPolicy`), as Envoy's filter does it: a preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) from an allowed origin is answered here, 200 with the policy's
/// `Access-Control-Allow-*`; one from another origin goes upstream unless the policy says not to
/// (`forward_not_matching_preflights: false`), then it gets a 200 without them. Any other request from an
/// allowed origin gets `Access-Control-Allow-Origin` (and credentials, exposed headers) on its response.
final class CORSFilter: HTTPFilter {
    private let policy: CORSPolicy
    /// The request's `Origin` when the policy allows it: the response names it.
    private var allowedOrigin: String?

    init(policy: CORSPolicy) { self.policy = policy }

    func decodeHeaders(_ request: inout HTTPRequest, route: RouteDecision?, stream: any HTTPFilterCallbacks) -> HTTPFilterStatus {
        guard let origin = request.headerFields[Self.origin], !origin.isEmpty else { return .proceed }
        let allowed = policy.allows(origin: Substring(origin))
        if allowed { allowedOrigin = origin }
        guard request.method == .options, let asked = request.headerFields[Self.requestMethod], !asked.isEmpty else { return .proceed }
        if !allowed, policy.forwardNotMatchingPreflights ?? true { return .proceed }
        var headers = HTTPFields()
        if allowed { headers[Self.allowOrigin] = origin }
        if policy.allowCredentials == true { headers[Self.allowCredentials] = "true" }
        if !policy.allowMethods.isEmpty { headers[Self.allowMethods] = policy.allowMethods == "*" ? asked : policy.allowMethods }
        if !policy.allowHeaders.isEmpty {
            let askedHeaders = request.headerFields[Self.requestHeaders] ?? ""
            headers[Self.allowHeaders] = policy.allowHeaders == "*" ? askedHeaders : policy.allowHeaders
        }
        if !policy.maxAge.isEmpty { headers[Self.maxAge] = policy.maxAge }
        if policy.allowPrivateNetworkAccess == true, request.headerFields[Self.requestPrivateNetwork] == "true" {
            headers[Self.allowPrivateNetwork] = "true"
        }
        // Answered here, with its own headers: the filter that replies is not asked to encode its reply.
        stream.setResponseCodeDetails("cors_response")
        return .reply(HTTPLocalReply(status: .ok, body: "", flags: [], grpcStatus: nil, headers: headers))
    }

    func encodeHeaders(_ response: inout HTTPResponse) {
        guard let allowedOrigin else { return }
        response.headerFields[Self.allowOrigin] = allowedOrigin
        if policy.allowCredentials == true { response.headerFields[Self.allowCredentials] = "true" }
        if !policy.exposeHeaders.isEmpty { response.headerFields[Self.exposeHeaders] = policy.exposeHeaders }
    }

    func requestEnded() {}

    static let origin = HTTPField.Name("origin")!
    static let requestMethod = HTTPField.Name("access-control-request-method")!
    static let requestHeaders = HTTPField.Name("access-control-request-headers")!
    static let requestPrivateNetwork = HTTPField.Name("access-control-request-private-network")!
    static let allowOrigin = HTTPField.Name("access-control-allow-origin")!
    static let allowCredentials = HTTPField.Name("access-control-allow-credentials")!
    static let allowMethods = HTTPField.Name("access-control-allow-methods")!
    static let allowHeaders = HTTPField.Name("access-control-allow-headers")!
    static let exposeHeaders = HTTPField.Name("access-control-expose-headers")!
    static let maxAge = HTTPField.Name("access-control-max-age")!
    static let allowPrivateNetwork = HTTPField.Name("access-control-allow-private-network")!
}
