import Configuration
import HTTPTypes
import XDS

/// One of a virtual host's routes: its match and what it does, compiled with the header changes of the
/// levels around it already merged in.
struct Route: Sendable {
    enum Action: Sendable {
        case forward(Forwarding)
        case weighted(WeightedClusters)
        case redirect(Redirect)
        case directResponse(DirectResponse)
    }

    /// The header changes of the levels around a route, least specific last.
    struct Enclosing {
        var requestHeaders: [HeaderMutations]
        var responseHeaders: [HeaderMutations]
        var mostSpecificWins: Bool
        var maxDirectResponseBody: Int
        /// The virtual host's `retry_policy`, for routes without their own.
        var retryPolicy: RetryPolicy? = nil
        /// The HTTP filters' per-route configurations of the levels around (`typed_per_filter_config`).
        var filterConfigs = RouteFilterConfigs()
    }

    let name: String
    let match: RouteMatch
    let action: Action
    /// `typed_per_filter_config` merged over the virtual host's and the route configuration's.
    let filterConfigs: RouteFilterConfigs

    init(_ proto: Envoy_Config_Route_V3_Route, path: String, enclosing: Enclosing,
         notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        name = proto.name
        guard proto.hasMatch else { throw ConfigError(path: "\(path).match", message: "is required") }
        match = try RouteMatch(proto.match, path: "\(path).match")
        let requestHeaders = try HeaderMutations(adding: proto.requestHeadersToAdd, removing: proto.requestHeadersToRemove,
                                                 path: path, fields: ("request_headers_to_add", "request_headers_to_remove"))
        let responseHeaders = try HeaderMutations(adding: proto.responseHeadersToAdd, removing: proto.responseHeadersToRemove,
                                                  path: path, fields: ("response_headers_to_add", "response_headers_to_remove"))
        var routeLevel = enclosing
        routeLevel.requestHeaders.insert(requestHeaders, at: 0)
        routeLevel.responseHeaders.insert(responseHeaders, at: 0)
        if proto.hasMetadata {
            notActedOn.append(.init(path: "\(path).metadata", reason: "route metadata is read by no filter yet (Istio's names the VirtualService the route came from)"))
        }
        if proto.hasDecorator {
            notActedOn.append(.init(path: "\(path).decorator", reason: "Capstan does not trace, so no span takes its operation name"))
        }
        var filterConfigs = enclosing.filterConfigs
        try filterConfigs.merge(proto.typedPerFilterConfig, path: "\(path).typed_per_filter_config", notActedOn: &notActedOn)
        self.filterConfigs = filterConfigs
        switch proto.action {
        case .route(let route)?:
            action = try Self.forward(route, path: "\(path).route", match: match, enclosing: routeLevel, notActedOn: &notActedOn)
        case .redirect(let redirect)?:
            action = .redirect(try Self.redirect(redirect, path: "\(path).redirect", match: match, enclosing: routeLevel))
        case .directResponse(let response)?:
            action = .directResponse(try Self.directResponse(response, path: "\(path).direct_response", enclosing: routeLevel))
        case nil:
            throw ConfigError(path: path, message: "needs route, redirect or direct_response (filter_action and non_forwarding_action are not supported)")
        }
    }

    /// The decision for a request this route matched.
    func decision(in virtualHost: VirtualHost, index: Int, randomValue: UInt64) -> RouteDecision {
        let decided: RouteDecision.Action = switch action {
        case .forward(let forwarding): .forward(forwarding)
        case .weighted(let clusters): .forward(clusters.choose(randomValue))
        case .redirect(let redirect): .redirect(redirect)
        case .directResponse(let response): .directResponse(response)
        }
        return RouteDecision(virtualHost: virtualHost.name, routeName: name, routeIndex: index, action: decided,
                             includesRequestAttemptCount: virtualHost.includesRequestAttemptCount, filterConfigs: filterConfigs)
    }

    // MARK: Decoding the action

    private static func forward(_ proto: Envoy_Config_Route_V3_RouteAction, path: String, match: RouteMatch,
                                enclosing: Enclosing, notActedOn: inout [FieldNotActedOn]) throws(ConfigError) -> Action {
        // Envoy's default route timeout is 15 s; 0 turns it off (Istio sends 0s unless a VirtualService sets one).
        var timeout: Duration? = .seconds(15)
        if proto.hasTimeout { timeout = Duration(proto.timeout) == .zero ? nil : Duration(proto.timeout) }
        // Rewrites outside the subset (host_rewrite_path_regex #35, path_rewrite_policy #41, host_rewrite #44,
        // path_rewrite #45) would change the upstream request: refused rather than listed.
        if let unknown = UnknownFields.paths(in: proto).first(where: { ["#35", "#41", "#44", "#45"].contains($0) }) {
            throw ConfigError(path: "\(path).\(unknown)", message: "a rewrite Capstan's subset of Envoy's API does not have (by its number): not supported")
        }
        let pathRewrite = try pathRewrite(proto, path: path, match: match)
        var hostRewrite: String?
        switch proto.hostRewriteSpecifier {
        case .hostRewriteLiteral(let host)?: hostRewrite = host
        case .autoHostRewrite?: throw ConfigError(path: "\(path).auto_host_rewrite", message: "is not supported (host_rewrite_literal is)")
        case .hostRewriteHeader?: throw ConfigError(path: "\(path).host_rewrite_header", message: "is not supported (host_rewrite_literal is)")
        case nil: break
        }
        // The route's own policy replaces the virtual host's, as in Envoy.
        var retryPolicy = enclosing.retryPolicy
        if proto.hasRetryPolicy {
            retryPolicy = try RetryPolicy(proto.retryPolicy, path: "\(path).retry_policy", notActedOn: &notActedOn)
        }
        var hashPolicies: [HashPolicy] = []
        for (index, policy) in proto.hashPolicy.enumerated() {
            hashPolicies.append(try HashPolicy(policy, path: "\(path).hash_policy[\(index)]"))
        }
        var mirrors: [MirrorPolicy] = []
        for (index, policy) in proto.requestMirrorPolicies.enumerated() {
            mirrors.append(try MirrorPolicy(policy, path: "\(path).request_mirror_policies[\(index)]", notActedOn: &notActedOn))
        }
        for (field, given, reason) in [
            ("idle_timeout", proto.hasIdleTimeout, "streams have no idle timeout of their own yet"),
            ("max_stream_duration", proto.hasMaxStreamDuration, "streams have no maximum duration yet"),
        ] where given {
            notActedOn.append(.init(path: "\(path).\(field)", reason: reason))
        }

        // gRPC deadlines: with max_grpc_timeout (0: no cap), a gRPC request's grpc-timeout replaces `timeout`.
        let grpcTimeout = proto.hasMaxGrpcTimeout
            ? Forwarding.GRPCTimeout(maximum: Duration(proto.maxGrpcTimeout) == .zero ? nil : Duration(proto.maxGrpcTimeout),
                                     offset: proto.hasGrpcTimeoutOffset ? Duration(proto.grpcTimeoutOffset) : .zero)
            : nil

        func forwarding(to cluster: String, clusterHeaders: (request: HeaderMutations, response: HeaderMutations)?,
                        hostRewrite: String?) -> Forwarding {
            Forwarding(
                cluster: cluster, timeout: timeout, grpcTimeout: grpcTimeout, pathRewrite: pathRewrite, hostRewrite: hostRewrite, retryPolicy: retryPolicy,
                hashPolicies: hashPolicies, mirrors: mirrors,
                requestHeaders: HeaderMutations(levels: (clusterHeaders.map { [$0.request] } ?? []) + enclosing.requestHeaders,
                                                mostSpecificWins: enclosing.mostSpecificWins),
                responseHeaders: HeaderMutations(levels: (clusterHeaders.map { [$0.response] } ?? []) + enclosing.responseHeaders,
                                                 mostSpecificWins: enclosing.mostSpecificWins))
        }

        switch proto.clusterSpecifier {
        case .cluster(let cluster)?:
            guard !cluster.isEmpty else { throw ConfigError(path: "\(path).cluster", message: "must not be empty") }
            return .forward(forwarding(to: cluster, clusterHeaders: nil, hostRewrite: hostRewrite))
        case .weightedClusters(let weighted)?:
            let weightedPath = "\(path).weighted_clusters"
            guard weighted.randomValueSpecifier == nil else {
                throw ConfigError(path: "\(weightedPath).header_name", message: "is not supported: the proxy chooses with its own random value")
            }
            if !weighted.runtimeKeyPrefix.isEmpty {
                notActedOn.append(.init(path: "\(weightedPath).runtime_key_prefix", reason: "Capstan has no runtime: the configured weights apply"))
            }
            guard !weighted.clusters.isEmpty else { throw ConfigError(path: "\(weightedPath).clusters", message: "needs at least one cluster") }
            var clusters: [(forwarding: Forwarding, weight: UInt32)] = []
            var sum: UInt64 = 0
            for (index, entry) in weighted.clusters.enumerated() {
                let entryPath = "\(weightedPath).clusters[\(index)]"
                guard !entry.name.isEmpty else { throw ConfigError(path: "\(entryPath).name", message: "is required (cluster_header is not supported)") }
                if !entry.typedPerFilterConfig.isEmpty {
                    notActedOn.append(.init(path: "\(entryPath).typed_per_filter_config", reason: "a weighted cluster's own filter configuration is not read: the route's (or its virtual host's) applies"))
                }
                let headers = (
                    request: try HeaderMutations(adding: entry.requestHeadersToAdd, removing: entry.requestHeadersToRemove,
                                                 path: entryPath, fields: ("request_headers_to_add", "request_headers_to_remove")),
                    response: try HeaderMutations(adding: entry.responseHeadersToAdd, removing: entry.responseHeadersToRemove,
                                                  path: entryPath, fields: ("response_headers_to_add", "response_headers_to_remove")))
                var entryHost = hostRewrite
                if case .hostRewriteLiteral(let host)? = entry.hostRewriteSpecifier { entryHost = host }
                let weight = entry.hasWeight ? entry.weight.value : 0
                sum += UInt64(weight)
                clusters.append((forwarding(to: entry.name, clusterHeaders: headers, hostRewrite: entryHost), weight))
            }
            guard sum > 0 else { throw ConfigError(path: weightedPath, message: "the clusters' weights add up to 0") }
            if weighted.hasTotalWeight && UInt64(weighted.totalWeight.value) != sum {
                throw ConfigError(path: "\(weightedPath).total_weight",
                                  message: "\(weighted.totalWeight.value) is not the sum of the clusters' weights (\(sum))")
            }
            return .weighted(WeightedClusters(clusters))
        case .clusterHeader?:
            throw ConfigError(path: "\(path).cluster_header", message: "is not supported (cluster or weighted_clusters)")
        case nil:
            throw ConfigError(path: path, message: "needs cluster or weighted_clusters")
        }
    }

    private static func pathRewrite(_ proto: Envoy_Config_Route_V3_RouteAction, path: String,
                                    match: RouteMatch) throws(ConfigError) -> Forwarding.PathRewrite? {
        let prefixGiven = !proto.prefixRewrite.isEmpty
        switch (prefixGiven, proto.hasRegexRewrite) {
        case (true, true):
            throw ConfigError(path: "\(path).regex_rewrite", message: "cannot be given with prefix_rewrite")
        case (true, false):
            guard let length = match.prefixLength else {
                throw ConfigError(path: "\(path).prefix_rewrite", message: "needs a route matching by prefix or path_separated_prefix")
            }
            return .prefix(proto.prefixRewrite, matchedLength: length)
        case (false, true):
            return .regex(try RegexSubstitution(proto.regexRewrite, path: "\(path).regex_rewrite"))
        case (false, false):
            return nil
        }
    }

    private static func redirect(_ proto: Envoy_Config_Route_V3_RedirectAction, path: String,
                                 match: RouteMatch, enclosing: Enclosing) throws(ConfigError) -> Redirect {
        let scheme: String? = switch proto.schemeRewriteSpecifier {
        case .httpsRedirect(true)?: "https"
        case .schemeRedirect(let scheme)? where !scheme.isEmpty: scheme.lowercased()
        default: nil
        }
        let pathChange: Redirect.PathChange?
        switch proto.pathRewriteSpecifier {
        case .pathRedirect(let newPath)?: pathChange = .path(newPath)
        case .prefixRewrite(let prefix)?:
            guard let length = match.prefixLength else {
                throw ConfigError(path: "\(path).prefix_rewrite", message: "needs a route matching by prefix or path_separated_prefix")
            }
            pathChange = .prefix(prefix, matchedLength: length)
        case .regexRewrite(let rewrite)?: pathChange = .regex(try RegexSubstitution(rewrite, path: "\(path).regex_rewrite"))
        case nil: pathChange = nil
        }
        let status: HTTPResponse.Status = switch proto.responseCode {
        case .movedPermanently: .movedPermanently
        case .found: .found
        case .seeOther: .seeOther
        case .temporaryRedirect: .temporaryRedirect
        case .permanentRedirect: .permanentRedirect
        case .UNRECOGNIZED(let number):
            throw ConfigError(path: "\(path).response_code", message: "\(number) is not a RedirectResponseCode")
        }
        return Redirect(scheme: scheme, host: proto.hostRedirect.isEmpty ? nil : proto.hostRedirect,
                        port: proto.portRedirect == 0 ? nil : proto.portRedirect, pathChange: pathChange,
                        status: status, stripsQuery: proto.stripQuery,
                        responseHeaders: HeaderMutations(levels: enclosing.responseHeaders, mostSpecificWins: enclosing.mostSpecificWins))
    }

    private static func directResponse(_ proto: Envoy_Config_Route_V3_DirectResponseAction, path: String,
                                       enclosing: Enclosing) throws(ConfigError) -> DirectResponse {
        guard (100...599).contains(proto.status) else {
            throw ConfigError(path: "\(path).status", message: "\(proto.status) is not an HTTP status (100-599)")
        }
        var body: [UInt8] = []
        switch proto.body.specifier {
        case .inlineString(let text)?: body = Array(text.utf8)
        case .inlineBytes(let bytes)?: body = Array(bytes)
        case .filename?, .environmentVariable?:
            throw ConfigError(path: "\(path).body", message: "only inline_string and inline_bytes are supported")
        case nil: break
        }
        guard body.count <= enclosing.maxDirectResponseBody else {
            throw ConfigError(path: "\(path).body", message: "\(body.count) bytes exceed max_direct_response_body_size_bytes (\(enclosing.maxDirectResponseBody))")
        }
        return DirectResponse(status: HTTPResponse.Status(code: Int(proto.status)), body: body,
                              responseHeaders: HeaderMutations(levels: enclosing.responseHeaders, mostSpecificWins: enclosing.mostSpecificWins))
    }
}
