import Routing
import SwiftProtobuf
import XDS

/// Istio's HTTP layout for the ports whose protocol is HTTP (``ServiceProtocol/isHTTP``), as istiod
/// 1.20 writes it:
/// - outbound, a listener `0.0.0.0_PORT` that binds no port (`virtualOutbound` hands it the connections
///   to that port by their original destination), `tls_inspector` and `http_inspector`, one chain for
///   plaintext HTTP (`raw_buffer`, `http/1.1` or `h2c`) whose connection manager takes its routes over
///   RDS, and the passthrough chain for anything else;
/// - RDS `PORT`: a virtual host `HOST:PORT` per service on that port (its names and addresses as
///   domains), with the VirtualService's `http` routes in order or istiod's `default` route, then
///   `allow_any` to `PassthroughCluster` for hosts the mesh does not know;
/// - inbound, chains for the workload's HTTP ports whose connection manager routes everything to
///   `inbound|PORT||` (an inline route configuration of that name).
enum HTTPRouteGenerator {
    static let connectionManagerFilter = "envoy.filters.network.http_connection_manager"
    static let httpInspectorFilter = "envoy.filters.listener.http_inspector"
    static let allowAny = "allow_any"
    static let blockAll = "block_all"
    /// What `http_inspector` names plaintext HTTP as, in istiod's chain match.
    static let plaintextHTTP = ["http/1.1", "h2c"]

    // MARK: Outbound

    /// `0.0.0.0_PORT`, or `[::]_PORT` for IPv6 (Envoy's way of writing an IPv6 address and port).
    static func outboundListenerName(port: Int, ipv6: Bool = false) -> String { ipv6 ? "[::]_\(port)" : "0.0.0.0_\(port)" }

    /// `tcpChains`: the chains of TCP services on the same port (by their addresses), which take their
    /// connections before the HTTP chain does (a longer destination prefix wins, as in Envoy).
    /// `ipv6`: the same on `::` (named `[::]_PORT`, its statistics shared with `0.0.0.0_PORT`'s).
    /// `policy`: the mesh's outbound traffic policy, which the default chain follows.
    static func outboundListener(port: Int, tcpChains: [Envoy_Config_Listener_V3_FilterChain] = [],
                                 ipv6: Bool = false, policy: MeshSettings.OutboundTrafficPolicy = .allowAny,
                                 accessLog: [Envoy_Config_Accesslog_V3_AccessLog] = []) throws -> Envoy_Config_Listener_V3_Listener {
        var listener = try outboundListener(address: "0.0.0.0", port: port, routeConfigName: String(port), tcpChains: tcpChains,
                                            defaultChain: ProxyConfigGenerator.passthroughChain(policy), accessLog: accessLog)
        if ipv6 {
            listener.name = outboundListenerName(port: port, ipv6: true)
            listener.address = ProxyConfigGenerator.socketAddress("::", port: port)
        }
        return listener
    }

    /// Istio's protocol sniffing for a service port that declares no protocol, on one of the
    /// service's addresses: listener `ADDRESS_PORT`, whose HTTP chain routes by RDS `HOST:PORT` and
    /// whose default chain (anything `http_inspector` does not take for HTTP) is the service's TCP one.
    static func sniffingListener(address: String, port: Int, host: String, tcp: Envoy_Config_Listener_V3_FilterChain,
                                 accessLog: [Envoy_Config_Accesslog_V3_AccessLog] = []) throws -> Envoy_Config_Listener_V3_Listener {
        try outboundListener(address: address, port: port, routeConfigName: "\(host):\(port)", tcpChains: [], defaultChain: tcp,
                             accessLog: accessLog)
    }

    private static func outboundListener(address: String, port: Int, routeConfigName: String, tcpChains: [Envoy_Config_Listener_V3_FilterChain],
                                         defaultChain: Envoy_Config_Listener_V3_FilterChain,
                                         accessLog: [Envoy_Config_Accesslog_V3_AccessLog]) throws -> Envoy_Config_Listener_V3_Listener {
        var listener = Envoy_Config_Listener_V3_Listener()
        listener.name = "\(address)_\(port)"
        listener.address = ProxyConfigGenerator.socketAddress(address, port: port)
        listener.bindToPort = Google_Protobuf_BoolValue(false)
        listener.trafficDirection = .outbound
        var tlsInspector = Envoy_Config_Listener_V3_ListenerFilter()
        tlsInspector.name = ProxyConfigGenerator.tlsInspectorFilter
        tlsInspector.typedConfig = try Google_Protobuf_Any(message: Envoy_Extensions_Filters_Listener_TlsInspector_V3_TlsInspector())
        var httpInspector = Envoy_Config_Listener_V3_ListenerFilter()
        httpInspector.name = httpInspectorFilter
        httpInspector.typedConfig = try Google_Protobuf_Any(message: Envoy_Extensions_Filters_Listener_HttpInspector_V3_HttpInspector())
        listener.listenerFilters = [tlsInspector, httpInspector]
        var manager = baseConnectionManager(statPrefix: "outbound_\(address)_\(port)", accessLog: accessLog)
        var rds = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_Rds()
        rds.configSource.ads = Envoy_Config_Core_V3_AggregatedConfigSource()
        rds.configSource.resourceApiVersion = .v3
        rds.routeConfigName = routeConfigName
        manager.rds = rds
        manager.httpFilters = [try upstreamALPNFilter(), try faultFilter(), try corsFilter(), try routerFilter()]
        var chain = Envoy_Config_Listener_V3_FilterChain()
        chain.filterChainMatch.transportProtocol = "raw_buffer"
        chain.filterChainMatch.applicationProtocols = plaintextHTTP
        chain.filters = [try filter(manager)]
        listener.filterChains = tcpChains.map { chain in
            // The listener is the port's: a port match here would hide the HTTP chain, which has none.
            var chain = chain
            chain.filterChainMatch.clearDestinationPort()
            return chain
        } + [chain]
        listener.defaultFilterChain = defaultChain
        return listener
    }

    /// RDS `HOST:PORT` of a sniffed port: one virtual host for every authority (the listener is the
    /// service address's already).
    static func sniffedRouteConfiguration(host: String, port: Int, entry: ServiceEntry,
                                          config: MeshConfig) -> Envoy_Config_Route_V3_RouteConfiguration {
        var routes = Envoy_Config_Route_V3_RouteConfiguration()
        routes.name = "\(host):\(port)"
        var virtualHost = virtualHost(host: host, port: port, entry: entry, config: config)
        virtualHost.domains = ["*"]
        routes.virtualHosts = [virtualHost]
        routes.validateClusters = Google_Protobuf_BoolValue(false)
        routes.maxDirectResponseBodySizeBytes = Google_Protobuf_UInt32Value(1_048_576)
        routes.ignorePortInHostMatching = true
        return routes
    }

    /// RDS `PORT`: `services` (host, the service, its port) in host order, then `allow_any`.
    static func routeConfiguration(port: Int, services: [(host: String, entry: ServiceEntry)],
                                   config: MeshConfig) -> Envoy_Config_Route_V3_RouteConfiguration {
        var routes = Envoy_Config_Route_V3_RouteConfiguration()
        routes.name = String(port)
        // A bare service name (`payments`) is a domain when no other service on the port has it.
        var names: [String: Int] = [:]
        for (host, _) in services { if let name = bareName(host) { names[name, default: 0] += 1 } }
        routes.virtualHosts = services.sorted { $0.host < $1.host }.map { host, entry in
            virtualHost(host: host, port: port, entry: entry, config: config, bareName: bareName(host).map { names[$0] == 1 } ?? false)
        }
        routes.virtualHosts.append(catchAllVirtualHost(config.mesh.outboundTrafficPolicy))
        routes.validateClusters = Google_Protobuf_BoolValue(false)
        routes.maxDirectResponseBodySizeBytes = Google_Protobuf_UInt32Value(1_048_576)
        routes.ignorePortInHostMatching = true
        return routes
    }

    /// istiod's last virtual host of an outbound route configuration, for hosts the mesh does not know:
    /// `allow_any` to `PassthroughCluster` (ALLOW_ANY), or `block_all` answering 502 (REGISTRY_ONLY).
    static func catchAllVirtualHost(_ policy: MeshSettings.OutboundTrafficPolicy) -> Envoy_Config_Route_V3_VirtualHost {
        var any = Envoy_Config_Route_V3_VirtualHost()
        any.domains = ["*"]
        var route = Envoy_Config_Route_V3_Route()
        route.match.prefix = "/"
        switch policy {
        case .allowAny:
            any.name = allowAny
            route.name = allowAny
            route.route.cluster = ProxyConfigGenerator.passthroughCluster
            route.route.timeout = Google_Protobuf_Duration(seconds: 0)
            route.route.maxGrpcTimeout = Google_Protobuf_Duration(seconds: 0)
        case .registryOnly:
            any.name = blockAll
            route.name = blockAll
            route.directResponse.status = 502
        }
        any.routes = [route]
        any.includeRequestAttemptCount = true
        return any
    }

    /// `NAME` of a Kubernetes-style `NAME.NS.svc.cluster.local`.
    static func bareName(_ host: String) -> String? {
        let suffix = ".svc.cluster.local"
        guard host.hasSuffix(suffix) else { return nil }
        return host.dropLast(suffix.count).split(separator: ".").first.map(String.init)
    }

    /// `HOST:PORT`, with the names a client may use for the service as domains: the host, and for a
    /// Kubernetes-style `NAME.NS.svc.cluster.local` also `NAME.NS.svc`, `NAME.NS` and, when `bareName`,
    /// `NAME`, then the service's addresses (single IPs only). istiod gives `NAME` to the proxies of the
    /// service's namespace only; routes here are the same for every proxy, so `NAME` is given when no
    /// other service on the port is called so (a client's DNS resolves it to this service, or not at all).
    static func virtualHost(host: String, port: Int, entry: ServiceEntry, config: MeshConfig,
                            bareName: Bool = false) -> Envoy_Config_Route_V3_VirtualHost {
        var virtualHost = Envoy_Config_Route_V3_VirtualHost()
        virtualHost.name = "\(host):\(port)"
        var domains = [host]
        let suffix = ".svc.cluster.local"
        if host.hasSuffix(suffix) {
            let short = String(host.dropLast(suffix.count))
            domains += ["\(short).svc", short]
            if bareName, let name = Self.bareName(host) { domains.append(name) }
        }
        domains += entry.addresses.compactMap(IPNetwork.init).filter(\.isSingleAddress).map(\.address)
        virtualHost.domains = domains
        virtualHost.includeRequestAttemptCount = true
        let services = config.virtualServices.filter { $0.hosts.contains(host) && !$0.http.isEmpty }
        if services.isEmpty {
            var route = Envoy_Config_Route_V3_Route()
            route.name = "default"
            route.match.prefix = "/"
            route.route = forward(cluster: ProxyConfigGenerator.clusterName(port: port, subset: "", host: host), timeout: nil)
            if let hash = hashPolicy(host: host, subset: nil, port: port, config: config) { route.route.hashPolicy = [hash] }
            virtualHost.routes = [route]
        } else {
            for service in services {
                for route in service.http {
                    virtualHost.routes += routes(route, port: port, config: config)
                }
            }
        }
        return virtualHost
    }

    /// The Envoy routes of one `http` route on `port` for `gateway` (`mesh`: sidecars): one per match
    /// that applies to both (matches are ORed), none when every match names another port or gateway.
    static func routes(_ route: VirtualService.HTTPRoute, port: Int, config: MeshConfig,
                       gateway: String = VirtualService.meshGateway) -> [Envoy_Config_Route_V3_Route] {
        // Merged away when the mesh was read (``VirtualServiceDelegation``): none is left delegating.
        if case .delegate = route.action { return [] }
        let matches: [VirtualService.HTTPMatch?] = route.matches.isEmpty ? [nil]
            : route.matches.filter { ($0.port == nil || $0.port == port) && ($0.gateways?.contains(gateway) ?? true) }.map { Optional($0) }
        return matches.map { match in
            var result = Envoy_Config_Route_V3_Route()
            let names = [route.name, match?.name].compactMap { $0 }
            if !names.isEmpty { result.name = names.joined(separator: ".") }
            result.match = routeMatch(match)
            switch route.action {
            case .route(let destinations):
                var action: Envoy_Config_Route_V3_RouteAction
                if destinations.count == 1, destinations[0].headers == nil {
                    action = forward(cluster: clusterName(destinations[0], port: port, config: config), timeout: route.timeout, retries: route.retries)
                } else {
                    action = forward(cluster: nil, timeout: route.timeout, retries: route.retries)
                    var weighted = Envoy_Config_Route_V3_WeightedCluster()
                    weighted.clusters = destinations.map { destination in
                        var cluster = Envoy_Config_Route_V3_WeightedCluster.ClusterWeight()
                        cluster.name = clusterName(destination, port: port, config: config)
                        cluster.weight = Google_Protobuf_UInt32Value(UInt32(destination.weight))
                        if let headers = destination.headers {
                            cluster.requestHeadersToAdd = headerOptions(headers.request)
                            cluster.requestHeadersToRemove = headers.request.remove
                            cluster.responseHeadersToAdd = headerOptions(headers.response)
                            cluster.responseHeadersToRemove = headers.response.remove
                        }
                        return cluster
                    }
                    action.weightedClusters = weighted
                }
                // A weighted route hashes only if every destination hashes alike.
                let hashes = destinations.map { hashPolicy(host: $0.host, subset: $0.subset, port: $0.port, config: config) }
                if let hash = hashes.first ?? nil, hashes.allSatisfy({ $0 == hash }) { action.hashPolicy = [hash] }
                if let uri = route.rewriteURI {
                    switch match?.uri {
                    case nil, .prefix?: action.prefixRewrite = uri
                    // Envoy rewrites prefixes only after a prefix match: an exact or regex match has its
                    // whole path replaced.
                    case .exact?, .regex?:
                        action.regexRewrite.pattern = regex("^.*$")
                        action.regexRewrite.substitution = uri
                    }
                }
                if let (pattern, substitution) = route.rewriteURIRegex {
                    action.regexRewrite.pattern = regex(pattern)
                    action.regexRewrite.substitution = substitution
                }
                if let authority = route.rewriteAuthority { action.hostRewriteLiteral = authority }
                action.requestMirrorPolicies = route.mirrors.map { mirrorPolicy($0, port: port, config: config) }
                result.route = action
            case .redirect(let redirect):
                var action = Envoy_Config_Route_V3_RedirectAction()
                if let uri = redirect.uri { action.pathRedirect = uri }
                if let authority = redirect.authority { action.hostRedirect = authority }
                if let port = redirect.port { action.portRedirect = UInt32(port) }
                if let scheme = redirect.scheme { action.schemeRedirect = scheme }
                switch redirect.code {
                case 302: action.responseCode = .found
                case 303: action.responseCode = .seeOther
                case 307: action.responseCode = .temporaryRedirect
                case 308: action.responseCode = .permanentRedirect
                default: action.responseCode = .movedPermanently
                }
                result.redirect = action
            case .directResponse(let status, let body):
                var action = Envoy_Config_Route_V3_DirectResponseAction()
                action.status = UInt32(status)
                if let body { action.body.inlineString = body }
                result.directResponse = action
            case .delegate:
                break  // not reached: delegating routes are left out above
            }
            if let fault = route.fault, let config = try? Google_Protobuf_Any(message: faultConfig(fault)) {
                result.typedPerFilterConfig[faultFilterName] = config
            }
            if let cors = route.cors, let config = try? Google_Protobuf_Any(message: corsConfig(cors)) {
                result.typedPerFilterConfig[corsFilterName] = config
            }
            if let headers = route.headers {
                result.requestHeadersToAdd = headerOptions(headers.request)
                result.requestHeadersToRemove = headers.request.remove
                result.responseHeadersToAdd = headerOptions(headers.response)
                result.responseHeadersToRemove = headers.response.remove
            }
            return result
        }
    }

    /// A mirror as istiod translates it: its destination's cluster; a percentage as a fraction of a
    /// million (value × 10,000), the deprecated integer percent over a hundred, none as 100 of 100;
    /// `trace_sampled: false`.
    static func mirrorPolicy(_ mirror: VirtualService.HTTPRoute.Mirror, port: Int, config: MeshConfig) -> Envoy_Config_Route_V3_RouteAction.RequestMirrorPolicy {
        var policy = Envoy_Config_Route_V3_RouteAction.RequestMirrorPolicy()
        policy.cluster = clusterName(mirror.destination, port: port, config: config)
        var fraction = Envoy_Type_V3_FractionalPercent()
        switch mirror.share {
        case .all: fraction.numerator = 100
        case .percent(let percent): fraction.numerator = UInt32(percent)
        case .percentage(let value):
            fraction.numerator = UInt32((value * 10_000).rounded(.down))
            fraction.denominator = .million
        }
        policy.runtimeFraction.defaultValue = fraction
        policy.traceSampled = Google_Protobuf_BoolValue(false)
        return policy
    }

    /// The hash policy of requests to `host` (its `subset`, on `port` when given), as istiod derives it
    /// from the DestinationRule's `consistentHash` (``DestinationRule/consistentHash(subset:port:)``); nil without one.
    static func hashPolicy(host: String, subset: String?, port: Int? = nil, config: MeshConfig) -> Envoy_Config_Route_V3_RouteAction.HashPolicy? {
        guard let rule = config.destinationRules.first(where: { $0.host == host }),
              let hash = rule.consistentHash(subset: subset, port: port) else { return nil }
        var result = Envoy_Config_Route_V3_RouteAction.HashPolicy()
        switch hash.key {
        case .header(let name): result.header.headerName = name
        case .cookie(let name, let path, let ttl):
            result.cookie.name = name
            if let path { result.cookie.path = path }
            if let ttl { result.cookie.ttl = ProxyConfigGenerator.protoDuration(ttl) }
        case .sourceIP: result.connectionProperties.sourceIp = true
        case .queryParameter(let name): result.queryParameter.name = name
        }
        return result
    }

    /// A destination's cluster: its port, else the service's only port, else the port routed.
    static func clusterName(_ destination: VirtualService.Destination, port: Int, config: MeshConfig) -> String {
        let ports = config.serviceEntries.first { $0.hosts.contains(destination.host) }?.ports ?? []
        let number = destination.port ?? (ports.count == 1 ? ports[0].number : port)
        return ProxyConfigGenerator.clusterName(port: number, subset: destination.subset ?? "", host: destination.host)
    }

    /// istiod's route action: `timeout` (`0s`: none), the retry policy (Istio's default without
    /// `retries`), `max_grpc_timeout: 0s`.
    static func forward(cluster: String?, timeout: Duration?, retries: VirtualService.HTTPRoute.Retries? = nil) -> Envoy_Config_Route_V3_RouteAction {
        var action = Envoy_Config_Route_V3_RouteAction()
        if let cluster { action.cluster = cluster }
        action.timeout = ProxyConfigGenerator.protoDuration(timeout ?? .zero)
        if let policy = retryPolicy(retries) { action.retryPolicy = policy }
        action.maxGrpcTimeout = Google_Protobuf_Duration(seconds: 0)
        return action
    }

    /// A route's `retries` as istiod converts them: none when `attempts` is 0; `retryOn` split into
    /// conditions and status codes (a code adds `retriable-status-codes`), Istio's default conditions
    /// and 503 when it is empty; always on other hosts (`previous_hosts`, five tries to find one);
    /// `retryRemoteLocalities` as `previous_priorities`.
    static func retryPolicy(_ retries: VirtualService.HTTPRoute.Retries?) -> Envoy_Config_Route_V3_RetryPolicy? {
        guard let retries else { return defaultRetryPolicy }
        guard retries.attempts > 0 else { return nil }
        var policy = defaultRetryPolicy
        policy.numRetries = Google_Protobuf_UInt32Value(UInt32(retries.attempts))
        if let perTry = retries.perTryTimeout { policy.perTryTimeout = ProxyConfigGenerator.protoDuration(perTry) }
        if !retries.retryOn.isEmpty {
            var conditions = retries.retryOn.filter { Int($0) == nil }
            let codes = retries.retryOn.compactMap { UInt32($0) }
            if !codes.isEmpty && !conditions.contains("retriable-status-codes") { conditions.append("retriable-status-codes") }
            policy.retryOn = conditions.joined(separator: ",")
            policy.retriableStatusCodes = codes
        }
        if retries.retryRemoteLocalities { policy.retryPriority = previousPriorities }
        return policy
    }

    /// `retryRemoteLocalities`, as istiod converts it: Envoy's `previous_priorities`, updated every second
    /// attempt.
    static let previousPriorities: Envoy_Config_Route_V3_RetryPolicy.RetryPriority = {
        var priority = Envoy_Config_Route_V3_RetryPolicy.RetryPriority()
        priority.name = "envoy.retry_priorities.previous_priorities"
        var config = Envoy_Extensions_Retry_Priority_PreviousPriorities_V3_PreviousPrioritiesConfig()
        config.updateFrequency = 2
        priority.typedConfig = try! Google_Protobuf_Any(message: config)
        return priority
    }()

    /// Istio's default when a route sets no `retries`: two attempts more on connect failures, refused
    /// streams, `unavailable`, `cancelled` and 503, each on another host.
    static let defaultRetryPolicy: Envoy_Config_Route_V3_RetryPolicy = {
        var policy = Envoy_Config_Route_V3_RetryPolicy()
        policy.retryOn = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
        policy.numRetries = Google_Protobuf_UInt32Value(2)
        var predicate = Envoy_Config_Route_V3_RetryPolicy.RetryHostPredicate()
        predicate.name = "envoy.retry_host_predicates.previous_hosts"
        var config = Google_Protobuf_Any()
        config.typeURL = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
        predicate.typedConfig = config
        policy.retryHostPredicate = [predicate]
        policy.hostSelectionRetryMaxAttempts = 5
        policy.retriableStatusCodes = [503]
        return policy
    }()

    /// Envoy's match for an Istio match (nil: every request): `uri` as the path specifier (`/` prefix
    /// when none), `ignoreUriCase` as `case_sensitive: false`, `authority`, `method` and `scheme` as
    /// pseudo-header matchers, `withoutHeaders` inverted.
    static func routeMatch(_ match: VirtualService.HTTPMatch?) -> Envoy_Config_Route_V3_RouteMatch {
        var result = Envoy_Config_Route_V3_RouteMatch()
        switch match?.uri {
        case nil: result.prefix = "/"
        case .exact(let path)?: result.path = path
        case .prefix(let prefix)?: result.prefix = prefix
        // Envoy's case_sensitive does not apply to regexes: istiod makes the regex itself case-insensitive.
        case .regex(let pattern)?: result.safeRegex = regex(match?.ignoreURICase == true ? "(?i)" + pattern : pattern)
        }
        guard let match else { return result }
        if match.ignoreURICase { result.caseSensitive = Google_Protobuf_BoolValue(false) }
        var headers: [Envoy_Config_Route_V3_HeaderMatcher] = []
        for (name, value) in [(":authority", match.authority), (":method", match.method), (":scheme", match.scheme)] {
            if let value { headers.append(headerMatcher(name, value, inverted: false)) }
        }
        headers += match.headers.map { headerMatcher($0.name, $0.match, inverted: false) }
        headers += match.withoutHeaders.map { headerMatcher($0.name, $0.match, inverted: true) }
        result.headers = headers
        result.queryParameters = match.queryParams.map { name, value in
            var matcher = Envoy_Config_Route_V3_QueryParameterMatcher()
            matcher.name = name
            matcher.stringMatch = stringMatcher(value)
            return matcher
        }
        return result
    }

    static func headerMatcher(_ name: String, _ match: VirtualService.StringMatch, inverted: Bool) -> Envoy_Config_Route_V3_HeaderMatcher {
        var matcher = Envoy_Config_Route_V3_HeaderMatcher()
        matcher.name = name
        matcher.stringMatch = stringMatcher(match)
        matcher.invertMatch = inverted
        return matcher
    }

    static func stringMatcher(_ match: VirtualService.StringMatch) -> Envoy_Type_Matcher_V3_StringMatcher {
        var matcher = Envoy_Type_Matcher_V3_StringMatcher()
        switch match {
        case .exact(let text): matcher.exact = text
        case .prefix(let text): matcher.prefix = text
        case .regex(let pattern): matcher.safeRegex = regex(pattern)
        }
        return matcher
    }

    static func regex(_ pattern: String) -> Envoy_Type_Matcher_V3_RegexMatcher {
        var regex = Envoy_Type_Matcher_V3_RegexMatcher()
        regex.regex = pattern
        return regex
    }

    /// Istio's `set` overwrites, `add` appends.
    static func headerOptions(_ changes: HeaderOperations.Changes) -> [Envoy_Config_Core_V3_HeaderValueOption] {
        func option(_ name: String, _ value: String, _ action: Envoy_Config_Core_V3_HeaderValueOption.HeaderAppendAction) -> Envoy_Config_Core_V3_HeaderValueOption {
            var option = Envoy_Config_Core_V3_HeaderValueOption()
            option.header.key = name
            option.header.value = value
            option.appendAction = action
            return option
        }
        return changes.overwrite.map { option($0.name, $0.value, .overwriteIfExistsOrAdd) }
            + changes.append.map { option($0.name, $0.value, .appendIfExistsOrAdd) }
    }

    // MARK: Inbound

    /// The connection manager of an inbound HTTP chain on `port`: everything to `inbound|PORT||`, with
    /// istiod's `x-forwarded-client-cert` handling (`APPEND_FORWARD`, subject, DNS and URI), and the
    /// workload's RBAC filters (``RBACGenerator``) before the others.
    static func inboundConnectionManager(port: Int,
                                         authorization: [Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter] = [],
                                         accessLog: [Envoy_Config_Accesslog_V3_AccessLog] = []) throws -> Envoy_Config_Listener_V3_Filter {
        var manager = baseConnectionManager(statPrefix: "inbound_0.0.0.0_\(port)", accessLog: accessLog)
        manager.forwardClientCertDetails = .appendForward
        manager.setCurrentClientCertDetails.subject = Google_Protobuf_BoolValue(true)
        manager.setCurrentClientCertDetails.dns = true
        manager.setCurrentClientCertDetails.uri = true
        let cluster = "inbound|\(port)||"
        var routes = Envoy_Config_Route_V3_RouteConfiguration()
        routes.name = cluster
        var virtualHost = Envoy_Config_Route_V3_VirtualHost()
        virtualHost.name = "inbound|http|\(port)"
        virtualHost.domains = ["*"]
        var route = Envoy_Config_Route_V3_Route()
        route.name = "default"
        route.match.prefix = "/"
        route.route.cluster = cluster
        route.route.timeout = Google_Protobuf_Duration(seconds: 0)
        virtualHost.routes = [route]
        routes.virtualHosts = [virtualHost]
        routes.validateClusters = Google_Protobuf_BoolValue(false)
        manager.routeConfig = routes
        // Authorization first, as istiod orders a sidecar's inbound filters.
        manager.httpFilters = authorization + [try faultFilter(), try corsFilter(), try routerFilter()]
        return try filter(manager)
    }

    // MARK: Pieces

    /// What istiod sets on both sides: no `x-forwarded-for` from the sidecar's address, WebSocket
    /// upgrades, no stream idle timeout, `istio-envoy` as the server name.
    static func baseConnectionManager(statPrefix: String,
                                      accessLog: [Envoy_Config_Accesslog_V3_AccessLog] = []) -> Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager {
        var manager = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager()
        manager.statPrefix = statPrefix
        manager.accessLog = accessLog
        manager.serverName = "istio-envoy"
        manager.useRemoteAddress = Google_Protobuf_BoolValue(false)
        var websocket = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager.UpgradeConfig()
        websocket.upgradeType = "websocket"
        manager.upgradeConfigs = [websocket]
        manager.streamIdleTimeout = Google_Protobuf_Duration(seconds: 0)
        return manager
    }

    /// The mesh config's `accessLogFile` as istiod writes it on every HTTP connection manager:
    /// `envoy.access_loggers.file` with the text format (`accessLogFormat`, else Istio's) inline. None
    /// without a file.
    static func accessLogs(_ mesh: MeshSettings) throws -> [Envoy_Config_Accesslog_V3_AccessLog] {
        guard let file = mesh.accessLogFile else { return [] }
        var config = Envoy_Extensions_AccessLoggers_File_V3_FileAccessLog()
        config.path = file
        config.logFormat.textFormatSource.inlineString = mesh.accessLogFormat ?? MeshSettings.istioTextLogFormat
        var log = Envoy_Config_Accesslog_V3_AccessLog()
        log.name = "envoy.access_loggers.file"
        log.typedConfig = try Google_Protobuf_Any(message: config)
        return [log]
    }

    /// `istio.alpn` as istiod configures it: the upstream TLS of a request offers `istio-http/1.0`,
    /// `istio-http/1.1` or `istio-h2` (then `istio` and the plain name), so the peer's sidecar chooses
    /// its HTTP chain.
    static func upstreamALPNFilter() throws -> Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter {
        typealias Config = Istio_Envoy_Config_Filter_Http_Alpn_V2alpha1_FilterConfig
        var config = Config()
        config.alpnOverride = [(.http10, ["istio-http/1.0", "istio", "http/1.0"]), (.http11, ["istio-http/1.1", "istio", "http/1.1"]),
                               (.http2, ["istio-h2", "istio", "h2"])].map { version, names in
            var override = Config.AlpnOverride()
            override.upstreamProtocol = version
            override.alpnOverride = names
            return override
        }
        var filter = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter()
        filter.name = "istio.alpn"
        filter.typedConfig = try Google_Protobuf_Any(message: config)
        return filter
    }

    static let faultFilterName = "envoy.filters.http.fault"

    /// `envoy.filters.http.fault` with an empty configuration, as istiod puts it before the router on
    /// both sides: it acts only on routes that carry their own (a VirtualService's `fault`).
    static func faultFilter() throws -> Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter {
        try httpFilter(faultFilterName, Envoy_Extensions_Filters_Http_Fault_V3_HTTPFault())
    }

    static let corsFilterName = "envoy.filters.http.cors"

    /// `envoy.filters.http.cors`, as istiod puts it after the fault filter on both sides: it acts only on
    /// routes that carry a policy (a VirtualService's `corsPolicy`).
    static func corsFilter() throws -> Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter {
        try httpFilter(corsFilterName, Envoy_Extensions_Filters_Http_Cors_V3_Cors())
    }

    /// A route's `corsPolicy` as istiod's `TranslateCORSPolicy` writes it: lists joined by commas, `maxAge`
    /// in whole seconds, enabled for every request, and unmatched preflights forwarded unless `IGNORE`.
    static func corsConfig(_ cors: VirtualService.HTTPRoute.CORSPolicy) -> Envoy_Extensions_Filters_Http_Cors_V3_CorsPolicy {
        var config = Envoy_Extensions_Filters_Http_Cors_V3_CorsPolicy()
        config.forwardNotMatchingPreflights = .init(!cors.ignoresUnmatchedPreflights)
        config.allowOriginStringMatch = cors.allowOrigins.map(stringMatcher)
        config.filterEnabled.defaultValue.numerator = 100
        config.filterEnabled.defaultValue.denominator = .hundred
        if let credentials = cors.allowCredentials { config.allowCredentials = .init(credentials) }
        config.allowHeaders = cors.allowHeaders.joined(separator: ",")
        config.allowMethods = cors.allowMethods.joined(separator: ",")
        config.exposeHeaders = cors.exposeHeaders.joined(separator: ",")
        if let maxAge = cors.maxAge { config.maxAge = String(maxAge.components.seconds) }
        return config
    }

    /// A route's `fault` as istiod translates it: `percentage.value` as a fraction of a million (value ×
    /// 10,000), the deprecated delay `percent` as a fraction of a hundred; an abort without a percentage
    /// gets none (Envoy then aborts no request); a gRPC status by its number.
    static func faultConfig(_ fault: VirtualService.HTTPRoute.Fault) -> Envoy_Extensions_Filters_Http_Fault_V3_HTTPFault {
        func fraction(_ value: Double) -> Envoy_Type_V3_FractionalPercent {
            var fraction = Envoy_Type_V3_FractionalPercent()
            fraction.numerator = UInt32(value * 10_000)
            fraction.denominator = .million
            return fraction
        }
        var config = Envoy_Extensions_Filters_Http_Fault_V3_HTTPFault()
        if let (fixed, share) = fault.delay {
            config.delay.fixedDelay = ProxyConfigGenerator.protoDuration(fixed)
            switch share {
            case .percentage(let value): config.delay.percentage = fraction(value)
            case .percent(let percent):
                config.delay.percentage.numerator = UInt32(percent)
                config.delay.percentage.denominator = .hundred
            }
        }
        if let (status, percentage) = fault.abort {
            switch status {
            case .http(let code): config.abort.httpStatus = UInt32(code)
            case .grpc(_, let code): config.abort.grpcStatus = UInt32(code)
            }
            if let percentage { config.abort.percentage = fraction(percentage) }
        }
        return config
    }

    static func routerFilter() throws -> Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter {
        try httpFilter("envoy.filters.http.router", Envoy_Extensions_Filters_Http_Router_V3_Router())
    }

    /// An HTTP filter named `name` with `config` as its `typed_config`.
    static func httpFilter(_ name: String, _ config: some SwiftProtobuf.Message) throws -> Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter {
        var filter = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter()
        filter.name = name
        filter.typedConfig = try Google_Protobuf_Any(message: config)
        return filter
    }

    static func filter(_ manager: Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager) throws -> Envoy_Config_Listener_V3_Filter {
        var filter = Envoy_Config_Listener_V3_Filter()
        filter.name = connectionManagerFilter
        filter.typedConfig = try Google_Protobuf_Any(message: manager)
        return filter
    }

    /// `typed_extension_protocol_options` of a cluster: explicit HTTP/2 on `http2` and `grpc` ports and
    /// for DestinationRule `h2UpgradePolicy: UPGRADE`; a sniffed port's cluster speaks the downstream's
    /// version (`use_downstream_protocol_config`); and the connection pool's idle timeout, requests per
    /// connection and connection duration as common options, as istiod sets them (on any port). Empty:
    /// HTTP/1.1 with Envoy's defaults.
    static func protocolOptions(_ proto: ServiceProtocol, policy: DestinationRule.TrafficPolicy, sniffed: Bool = false) throws -> [String: Google_Protobuf_Any] {
        var options = Envoy_Extensions_Upstreams_Http_V3_HttpProtocolOptions()
        if sniffed && proto == .unknown {
            options.useDownstreamProtocolConfig.httpProtocolOptions = Envoy_Config_Core_V3_Http1ProtocolOptions()
            options.useDownstreamProtocolConfig.http2ProtocolOptions = Envoy_Config_Core_V3_Http2ProtocolOptions()
        } else if proto.isHTTP, proto.requiresHTTP2 || (proto == .http && policy.connectionPool?.http2Upgrade == true) {
            options.explicitHTTPConfig.http2ProtocolOptions = Envoy_Config_Core_V3_Http2ProtocolOptions()
        }
        if let pool = policy.connectionPool {
            if let idle = pool.idleTimeout ?? pool.tcpIdleTimeout {
                options.commonHTTPProtocolOptions.idleTimeout = ProxyConfigGenerator.protoDuration(idle)
            }
            if let requests = pool.maxRequestsPerConnection {
                options.commonHTTPProtocolOptions.maxRequestsPerConnection = Google_Protobuf_UInt32Value(UInt32(requests))
            }
            if let duration = pool.maxConnectionDuration {
                options.commonHTTPProtocolOptions.maxConnectionDuration = ProxyConfigGenerator.protoDuration(duration)
            }
        }
        guard options != Envoy_Extensions_Upstreams_Http_V3_HttpProtocolOptions() else { return [:] }
        return ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions": try Google_Protobuf_Any(message: options)]
    }
}
