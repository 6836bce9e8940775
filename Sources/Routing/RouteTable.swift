import Configuration
import HTTPTypes
import XDS

/// An HTTP connection manager's route configuration (Envoy's `RouteConfiguration`, from RDS or inline),
/// compiled once into an immutable value: choosing the virtual host by authority and the first matching
/// route allocates nothing in the common case (only an authority with capitals is lowercased, and a
/// header sent several times joined). A configuration Capstan cannot honour is
/// refused with the field's path (the NACK's message); one it accepts but does not fully act on lists
/// those fields in ``fieldsNotActedOn``.
public struct RouteTable: Sendable {
    public let name: String
    public let virtualHosts: [VirtualHost]
    private let domains: VirtualHostDomains
    /// `ignore_port_in_host_matching`: the authority's port is dropped before domains are compared.
    public let ignoresPortInHostMatching: Bool
    public let fieldsNotActedOn: [FieldNotActedOn]

    /// Compiles `proto`; `path` names it in refusals (default: `route_config "NAME"`).
    public init(_ proto: Envoy_Config_Route_V3_RouteConfiguration, path given: String? = nil) throws(ConfigError) {
        let path = given ?? "route_config \"\(proto.name)\""
        name = proto.name
        ignoresPortInHostMatching = proto.ignorePortInHostMatching
        var notActedOn = UnknownFields.paths(in: proto).map { FieldNotActedOn(path: "\(path).\($0)", reason: UnknownFields.reason) }
        for (field, given, reason) in [
            ("internal_only_headers", !proto.internalOnlyHeaders.isEmpty, "the proxy does not yet tell internal requests from external ones"),
            ("validate_clusters", proto.hasValidateClusters && proto.validateClusters.value,
             "routes are not checked against the clusters known; a missing cluster answers 503 per request"),
            ("metadata", proto.hasMetadata, "route configuration metadata is read by no filter yet"),
        ] where given {
            notActedOn.append(.init(path: "\(path).\(field)", reason: reason))
        }
        var configuration = Route.Enclosing(
            requestHeaders: [try HeaderMutations(adding: proto.requestHeadersToAdd, removing: proto.requestHeadersToRemove,
                                                 path: path, fields: ("request_headers_to_add", "request_headers_to_remove"))],
            responseHeaders: [try HeaderMutations(adding: proto.responseHeadersToAdd, removing: proto.responseHeadersToRemove,
                                                  path: path, fields: ("response_headers_to_add", "response_headers_to_remove"))],
            mostSpecificWins: proto.mostSpecificHeaderMutationsWins,
            // Envoy's default limit on a direct response's body is 4 KiB.
            maxDirectResponseBody: proto.hasMaxDirectResponseBodySizeBytes ? Int(proto.maxDirectResponseBodySizeBytes.value) : 4096)
        try configuration.filterConfigs.merge(proto.typedPerFilterConfig, path: "\(path).typed_per_filter_config", notActedOn: &notActedOn)
        var virtualHosts: [VirtualHost] = []
        var paths: [String] = []
        for (index, virtualHost) in proto.virtualHosts.enumerated() {
            let hostPath = "\(path).virtual_hosts[\(index)]"
            paths.append(hostPath)
            virtualHosts.append(try VirtualHost(virtualHost, path: hostPath, configuration: configuration, notActedOn: &notActedOn))
        }
        self.virtualHosts = virtualHosts
        domains = try VirtualHostDomains(domains: virtualHosts.map(\.domains), paths: paths)
        fieldsNotActedOn = notActedOn
    }

    /// The decision for `request`, nil when no virtual host or route matches (the router answers 404,
    /// response flag NR). `randomValue` chooses among weighted clusters.
    public func route(_ request: HTTPRequest, randomValue: UInt64) -> RouteDecision? {
        guard let virtualHost = virtualHost(for: request) else { return nil }
        return virtualHost.route(request, randomValue: randomValue)
    }

    /// The virtual host serving the request's authority.
    public func virtualHost(for request: HTTPRequest) -> VirtualHost? {
        var host = Substring(request.authority ?? "")
        if ignoresPortInHostMatching { host = VirtualHostDomains.splitPort(host).host }
        // Lowercased only when it has to be (hosts are case-insensitive; most arrive lowercase).
        let index: Int?
        if host.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) {
            index = domains.virtualHost(for: Substring(host.lowercased()))
        } else {
            index = domains.virtualHost(for: host)
        }
        return index.map { virtualHosts[$0] }
    }
}
