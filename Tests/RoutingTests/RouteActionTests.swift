import HTTPTypes
import Routing
import SwiftProtobuf
import Testing
import XDS

/// What a matched route does: weighted choice, timeouts, rewrites, header changes, redirects and direct
/// responses, and what it refuses.
struct RouteActionTests {
    static let weighted = oneHost(routes: """
        {"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
          {"name": "v1", "weight": 70, "request_headers_to_add": [{"header": {"key": "x-version", "value": "1"}}]},
          {"name": "none", "weight": 0},
          {"name": "v2", "weight": 20, "host_rewrite_literal": "v2.internal"},
          {"name": "v3", "weight": 10}]}}}
        """)

    /// Envoy reduces the random value modulo the total weight and walks the ranges in order.
    @Test(arguments: [(0, "v1"), (69, "v1"), (70, "v2"), (89, "v2"), (90, "v3"), (99, "v3"), (100, "v1"), (170, "v2"),
                      (UInt64.max, "v1")])  // 2^64-1 = 15 mod 100
    func weightedChoiceAtEachBoundary(randomValue: UInt64, cluster: String) throws {
        let table = try routeTable(Self.weighted)
        #expect(table.cluster(request(), randomValue: randomValue) == cluster)
    }

    @Test func aWeightedClusterCarriesItsOwnChanges() throws {
        let table = try routeTable(Self.weighted)
        guard case .forward(let v1)? = table.route(request(), randomValue: 0)?.action,
              case .forward(let v2)? = table.route(request(), randomValue: 75)?.action else { Issue.record("not forwarded"); return }
        #expect(v1.requestHeaders.operations.count == 1)
        #expect(v1.hostRewrite == nil)
        #expect(v2.requestHeaders.isEmpty)
        #expect(v2.hostRewrite == "v2.internal")
    }

    @Test(arguments: [
        (#""route": {"weighted_clusters": {"clusters": [{"name": "a", "weight": 0}]}}"#, "route.weighted_clusters"),
        (#""route": {"weighted_clusters": {"clusters": [{"name": "a", "weight": 1}], "total_weight": 100}}"#, "route.weighted_clusters.total_weight"),
        (#""route": {"weighted_clusters": {"clusters": [{"name": "a", "weight": 1}], "header_name": "x-r"}}"#, "route.weighted_clusters.header_name"),
        (#""route": {"weighted_clusters": {"clusters": []}}"#, "route.weighted_clusters.clusters"),
        (#""route": {"cluster_header": "x-cluster"}"#, "route.cluster_header"),
        (#""route": {"cluster": "c", "auto_host_rewrite": true}"#, "route.auto_host_rewrite"),
        (#""route": {"cluster": "c", "prefix_rewrite": "/a", "regex_rewrite": {"pattern": {"regex": "a"}, "substitution": "b"}}"#, "route.regex_rewrite"),
        (#""route": {"cluster": "c", "regex_rewrite": {"pattern": {"regex": "(a)"}, "substitution": "\\2"}}"#, "route.regex_rewrite.substitution"),
        (#""route": {"cluster": "c", "regex_rewrite": {"pattern": {"regex": "(a"}, "substitution": ""}}"#, "route.regex_rewrite.pattern.regex"),
        (#""route": {"cluster": "c"}, "request_headers_to_add": [{"header": {"key": ":path", "value": "/"}}]"#, "request_headers_to_add[0].header.key"),
        (#""route": {"cluster": "c"}, "response_headers_to_remove": ["host"]"#, "response_headers_to_remove[0]"),
        (#""route": {"cluster": "c"}, "request_headers_to_add": [{"header": {"key": "x-client", "value": "%DOWNSTREAM_REMOTE_ADDRESS%"}}]"#,
         "request_headers_to_add[0].header.value"),
    ])
    func refuses(route: String, field: String) throws {
        let error = try refusal(oneHost(routes: #"{"match": {"prefix": "/"}, \#(route)}"#))
        #expect(error?.path == "route_config \"test\".virtual_hosts[0].routes[0].\(field)", "\(String(describing: error))")
    }

    @Test(arguments: [("", Duration?.some(.seconds(15))), (#", "timeout": "0s""#, nil), (#", "timeout": "2.5s""#, .milliseconds(2500))])
    func timeout(field: String, expected: Duration?) throws {
        let table = try routeTable(oneHost(routes: #"{"match": {"prefix": "/"}, "route": {"cluster": "c"\#(field)}}"#))
        guard case .forward(let forwarding)? = table.route(request(), randomValue: 0)?.action else { Issue.record("not forwarded"); return }
        #expect(forwarding.timeout == expected)
    }

    @Test func rewritesPaths() throws {
        let table = try routeTable(oneHost(routes: """
            {"match": {"prefix": "/old/"}, "route": {"cluster": "c", "prefix_rewrite": "/new/"}},
            {"match": {"prefix": "/v"}, "route": {"cluster": "c", "regex_rewrite": {"pattern": {"regex": "^/v([0-9]+)/(.*)$"}, "substitution": "/\\\\2?version=\\\\1"}}},
            {"match": {"prefix": "/"}, "route": {"cluster": "c"}}
            """))
        func rewritten(_ path: String) -> String? {
            guard case .forward(let forwarding)? = table.route(request("a", path), randomValue: 0)?.action else { return "not forwarded" }
            return forwarding.rewrittenPath(path)
        }
        #expect(rewritten("/old/a/b?q=1") == "/new/a/b?q=1")
        #expect(rewritten("/v2/items?x=1") == "/items?version=2?x=1")
        #expect(rewritten("/plain") == nil)
    }

    /// Envoy applies the most specific level first (weighted cluster, route, virtual host, configuration),
    /// each removing then adding; `most_specific_header_mutations_wins` reverses the levels.
    @Test(arguments: [(false, ["route", "host", "config"], "config"), (true, ["config", "host", "route"], "route")])
    func headerChangesInEnvoysOrder(mostSpecificWins: Bool, appended: [String], overwritten: String) throws {
        let add = { (level: String) in
            #"[{"header": {"key": "x-level", "value": "\#(level)"}}, {"header": {"key": "x-winner", "value": "\#(level)"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]"#
        }
        let table = try routeTable(oneHost(
            routes: #"{"match": {"prefix": "/"}, "route": {"cluster": "c"}, "request_headers_to_add": \#(add("route")), "request_headers_to_remove": ["x-drop"]}"#,
            host: #"{"name": "h", "domains": ["*"], "request_headers_to_add": \#(add("host"))"#,
            configuration: #""most_specific_header_mutations_wins": \#(mostSpecificWins), "request_headers_to_add": \#(add("config")),"#))
        guard case .forward(let forwarding)? = table.route(request(), randomValue: 0)?.action else { Issue.record("not forwarded"); return }
        var fields = HTTPFields([HTTPField(name: HTTPField.Name("x-drop")!, value: "1"), HTTPField(name: HTTPField.Name("x-level")!, value: "client")])
        forwarding.requestHeaders.apply(to: &fields)
        #expect(fields[values: HTTPField.Name("x-level")!] == ["client"] + appended)
        #expect(fields[values: HTTPField.Name("x-winner")!] == [overwritten])
        #expect(fields[values: HTTPField.Name("x-drop")!] == [])
    }

    @Test(arguments: [
        ("APPEND_IF_EXISTS_OR_ADD", ["a", "new"], ["new"]),
        ("ADD_IF_ABSENT", ["a"], ["new"]),
        ("OVERWRITE_IF_EXISTS_OR_ADD", ["new"], ["new"]),
        ("OVERWRITE_IF_EXISTS", ["new"], []),
    ] as [(String, [String], [String])])
    func appendActions(action: String, whenPresent: [String], whenAbsent: [String]) throws {
        let table = try routeTable(oneHost(routes: """
            {"match": {"prefix": "/"}, "route": {"cluster": "c"}, "response_headers_to_add": [{"header": {"key": "x-h", "value": "new"}, "append_action": "\(action)"}]}
            """))
        guard case .forward(let forwarding)? = table.route(request(), randomValue: 0)?.action else { Issue.record("not forwarded"); return }
        let name = HTTPField.Name("x-h")!
        var present = HTTPFields([HTTPField(name: name, value: "a")])
        var absent = HTTPFields()
        forwarding.responseHeaders.apply(to: &present)
        forwarding.responseHeaders.apply(to: &absent)
        #expect(present[values: name] == whenPresent)
        #expect(absent[values: name] == whenAbsent)
    }

    @Test func redirects() throws {
        let table = try routeTable(oneHost(routes: """
            {"match": {"prefix": "/old"}, "redirect": {"https_redirect": true, "prefix_rewrite": "/new", "response_code": "PERMANENT_REDIRECT"}},
            {"match": {"prefix": "/"}, "redirect": {"host_redirect": "other.org", "port_redirect": 8443, "strip_query": true}}
            """))
        guard case .redirect(let first)? = table.route(request("shop.com:80", "/old/cart?x=1"), randomValue: 0)?.action,
              case .redirect(let second)? = table.route(request("shop.com", "/p?x=1"), randomValue: 0)?.action else {
            Issue.record("no redirect"); return
        }
        #expect(first.status == .permanentRedirect)
        #expect(first.location(for: request("shop.com:80", "/old/cart?x=1")) == "https://shop.com/new/cart?x=1")
        #expect(second.status == .movedPermanently)
        #expect(second.location(for: request("shop.com", "/p?x=1")) == "http://other.org:8443/p")
    }

    @Test func answersDirectly() throws {
        let table = try routeTable(oneHost(routes: """
            {"match": {"path": "/healthz"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}
            """))
        guard case .directResponse(let response)? = table.route(request("a", "/healthz"), randomValue: 0)?.action else {
            Issue.record("no direct response"); return
        }
        #expect(response.status == .ok)
        #expect(response.body == Array("ok".utf8))
        #expect(try refusal(oneHost(routes: #"{"match": {"path": "/"}, "direct_response": {"status": 700}}"#))?.path
                == #"route_config "test".virtual_hosts[0].routes[0].direct_response.status"#)
        #expect(try refusal(oneHost(routes: #"{"match": {"path": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "12345"}}}"#,
                                    configuration: #""max_direct_response_body_size_bytes": 4,"#))?.path
                == #"route_config "test".virtual_hosts[0].routes[0].direct_response.body"#)
    }

    @Test func noRouteIsNil() throws {
        let table = try routeTable(oneHost(routes: #"{"match": {"prefix": "/api"}, "route": {"cluster": "c"}}"#, host: #"{"name": "h", "domains": ["known"]"#))
        #expect(table.route(request("known", "/other"), randomValue: 0) == nil)
        #expect(table.route(request("unknown", "/api"), randomValue: 0) == nil)
    }

    @Test func listsWhatItDoesNotActOn() throws {
        let table = try routeTable(oneHost(routes: """
            {"match": {"prefix": "/"}, "decorator": {"operation": "op"},
             "route": {"cluster": "c", "retry_policy": {"retry_on": "5xx, connect-failure,teapot", "num_retries": 3, "per_try_timeout": "1s",
               "retry_host_predicate": [{"name": "envoy.retry_host_predicates.omit_canary_hosts"}]}, "idle_timeout": "5s"}}
            """))
        #expect(table.fieldsNotActedOn.map(\.path) == [
            #"route_config "test".virtual_hosts[0].routes[0].decorator"#,
            #"route_config "test".virtual_hosts[0].routes[0].route.retry_policy.retry_on"#,
            #"route_config "test".virtual_hosts[0].routes[0].route.retry_policy.retry_host_predicate[0]"#,
            #"route_config "test".virtual_hosts[0].routes[0].route.idle_timeout"#,
        ])
        guard case .forward(let forwarding)? = table.route(request(), randomValue: 0)?.action else { Issue.record("not forwarded"); return }
        #expect(forwarding.retryPolicy?.conditions == [.serverError, .connectFailure])
        #expect(forwarding.retryPolicy?.retries == 3)
        #expect(forwarding.retryPolicy?.perTryTimeout == .seconds(1))
    }
}

extension RouteActionTests {
    /// Fields a control plane sends outside Capstan's proto subset arrive as protobuf's unknown bytes; they
    /// are listed by field number, never dropped unseen.
    @Test func listsFieldsOutsideTheSubset() throws {
        var proto = try Envoy_Config_Route_V3_RouteConfiguration(jsonString: oneHost(routes: #"{"match": {"prefix": "/"}, "route": {"cluster": "c"}}"#))
        // Field 15 (ignore_path_parameters_in_path_matching, not in the subset) = true, as it arrives on the wire.
        try proto.merge(serializedBytes: [0x78, 0x01] as [UInt8])
        let table = try RouteTable(proto)
        #expect(table.fieldsNotActedOn.map(\.path) == [#"route_config "test".#15"#])
    }
}

extension RouteActionTests {
    /// A match or rewrite field outside the subset would change where requests go: refused by its number.
    @Test func refusesMatchFieldsOutsideTheSubset() throws {
        var proto = try Envoy_Config_Route_V3_RouteConfiguration(jsonString: oneHost(routes: #"{"match": {"prefix": "/"}, "route": {"cluster": "c"}}"#))
        // runtime_fraction (#9), empty, as it arrives on the wire.
        try proto.virtualHosts[0].routes[0].match.merge(serializedBytes: [0x4A, 0x00] as [UInt8])
        #expect(refusal(proto)?.path == #"route_config "test".virtual_hosts[0].routes[0].match.#9"#)
    }

    @Test func refusesRewritesOutsideTheSubset() throws {
        var proto = try Envoy_Config_Route_V3_RouteConfiguration(jsonString: oneHost(routes: #"{"match": {"prefix": "/"}, "route": {"cluster": "c"}}"#))
        // path_rewrite (#45) = "/x": tag 45<<3|2 is 0xEA 0x02.
        try proto.virtualHosts[0].routes[0].route.merge(serializedBytes: [0xEA, 0x02, 0x02, 0x2F, 0x78] as [UInt8])
        #expect(refusal(proto)?.path == #"route_config "test".virtual_hosts[0].routes[0].route.#45"#)
    }
}

extension RouteActionTests {
    /// Istio's routes carry `max_grpc_timeout: 0s`: a gRPC request's own deadline is its timeout.
    @Test func aGRPCRequestsDeadlineIsItsTimeoutUnderMaxGRPCTimeout() throws {
        func forwarding(_ route: String) throws -> Forwarding {
            let table = try routeTable(oneHost(routes: #"{"match": {"prefix": "/"}, "route": {"cluster": "c", \#(route)}}"#))
            guard case .forward(let forwarding)? = table.route(request(), randomValue: 0)?.action else {
                Issue.record("not forwarded")
                throw CancellationError()
            }
            return forwarding
        }
        func grpc(_ deadline: String?) -> HTTPRequest {
            request(headers: [("content-type", "application/grpc")] + (deadline.map { [("grpc-timeout", $0)] } ?? []))
        }
        let istio = try forwarding(#""timeout": "0s", "max_grpc_timeout": "0s""#)
        #expect(istio.timeout(for: grpc("250m")) == .milliseconds(250))
        #expect(istio.timeout(for: grpc("3S")) == .seconds(3))
        #expect(istio.timeout(for: grpc(nil)) == nil, "no deadline, no cap: none")
        #expect(istio.timeout(for: grpc("soon")) == nil, "a malformed deadline is none")
        #expect(istio.timeout(for: request()) == nil, "not gRPC: the route's timeout (0s: none)")
        let capped = try forwarding(#""timeout": "7s", "max_grpc_timeout": "2s", "grpc_timeout_offset": "0.1s""#)
        #expect(capped.timeout(for: grpc("1S")) == .milliseconds(900), "the offset is taken off")
        #expect(capped.timeout(for: grpc("1M")) == .seconds(2), "capped")
        #expect(capped.timeout(for: grpc(nil)) == .seconds(2))
        #expect(capped.timeout(for: request()) == .seconds(7))
        let plain = try forwarding(#""timeout": "7s""#)
        #expect(plain.timeout(for: grpc("250m")) == .seconds(7), "without max_grpc_timeout the header is not read")
    }
}

extension RouteActionTests {
    /// A route with istiod's retry policy and `retry_priority` `priority` (its config `config`).
    func retryPriority(_ name: String, config: (any SwiftProtobuf.Message)?) throws -> Envoy_Config_Route_V3_RouteConfiguration {
        var proto = try Envoy_Config_Route_V3_RouteConfiguration(jsonString: oneHost(routes: #"{"match": {"prefix": "/"}, "route": {"cluster": "c", "retry_policy": {"num_retries": 2}}}"#))
        var priority = Envoy_Config_Route_V3_RetryPolicy.RetryPriority()
        priority.name = name
        if let config { priority.typedConfig = try Google_Protobuf_Any(message: config) }
        proto.virtualHosts[0].routes[0].route.retryPolicy.retryPriority = priority
        return proto
    }

    /// `retryRemoteLocalities` as istiod sends it: `previous_priorities` with `update_frequency` 2. Another
    /// retry priority, or a frequency Envoy's validation refuses, is refused.
    @Test func readsPreviousPrioritiesAndRefusesOthers() throws {
        var config = Envoy_Extensions_Retry_Priority_PreviousPriorities_V3_PreviousPrioritiesConfig()
        config.updateFrequency = 2
        let table = try RouteTable(try retryPriority("envoy.retry_priorities.previous_priorities", config: config))
        #expect(table.fieldsNotActedOn.isEmpty)
        guard case .forward(let forwarding)? = table.route(request(), randomValue: 0)?.action else { Issue.record("not forwarded"); return }
        #expect(forwarding.retryPolicy?.previousPrioritiesUpdateFrequency == 2)

        let path = #"route_config "test".virtual_hosts[0].routes[0].route.retry_policy.retry_priority"#
        #expect(refusal(try retryPriority("envoy.retry_priorities.other", config: config))?.path == "\(path).name")
        config.updateFrequency = 0
        #expect(refusal(try retryPriority("envoy.retry_priorities.previous_priorities", config: config))?.path
                == "\(path).typed_config.update_frequency")
        #expect(refusal(try retryPriority("envoy.retry_priorities.previous_priorities", config: Google_Protobuf_Duration()))?.path
                == "\(path).typed_config")
    }
}
