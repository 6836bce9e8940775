import Configuration
import HTTPTypes
import XDS

/// Envoy's `VirtualHost`: the routes for a set of domains, tried in order; the first that matches decides.
public struct VirtualHost: Sendable {
    public let name: String
    public let domains: [String]
    let routes: [Route]
    /// `include_request_attempt_count`: the router sends `x-envoy-attempt-count` upstream.
    public let includesRequestAttemptCount: Bool

    init(_ proto: Envoy_Config_Route_V3_VirtualHost, path: String, configuration: Route.Enclosing,
         notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        guard !proto.name.isEmpty else { throw ConfigError(path: "\(path).name", message: "is required") }
        name = proto.name
        domains = proto.domains
        includesRequestAttemptCount = proto.includeRequestAttemptCount
        var enclosing = configuration
        enclosing.requestHeaders.insert(
            try HeaderMutations(adding: proto.requestHeadersToAdd, removing: proto.requestHeadersToRemove,
                                path: path, fields: ("request_headers_to_add", "request_headers_to_remove")), at: 0)
        enclosing.responseHeaders.insert(
            try HeaderMutations(adding: proto.responseHeadersToAdd, removing: proto.responseHeadersToRemove,
                                path: path, fields: ("response_headers_to_add", "response_headers_to_remove")), at: 0)
        if proto.hasRetryPolicy {
            enclosing.retryPolicy = try RetryPolicy(proto.retryPolicy, path: "\(path).retry_policy", notActedOn: &notActedOn)
        }
        for (field, given, reason) in [
            ("include_attempt_count_in_response", proto.includeAttemptCountInResponse, "responses carry no x-envoy-attempt-count yet"),
            ("metadata", proto.hasMetadata, "virtual host metadata is read by no filter yet"),
        ] where given {
            notActedOn.append(.init(path: "\(path).\(field)", reason: reason))
        }
        try enclosing.filterConfigs.merge(proto.typedPerFilterConfig, path: "\(path).typed_per_filter_config", notActedOn: &notActedOn)
        var routes: [Route] = []
        for (index, route) in proto.routes.enumerated() {
            routes.append(try Route(route, path: "\(path).routes[\(index)]", enclosing: enclosing, notActedOn: &notActedOn))
        }
        self.routes = routes
    }

    /// The first route that matches, and its decision.
    func route(_ request: HTTPRequest, randomValue: UInt64) -> RouteDecision? {
        let path = Substring(request.path ?? "")
        let pathOnly = RouteMatch.pathOnly(path)
        for (index, route) in routes.enumerated() where route.match.matches(request, path: path, pathOnly: pathOnly) {
            return route.decision(in: self, index: index, randomValue: randomValue)
        }
        return nil
    }
}
