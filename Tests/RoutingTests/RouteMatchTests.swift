import HTTPTypes
import Routing
import Testing

/// Each kind of route match, one route per case: does the request reach the route's cluster?
struct RouteMatchTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var match: String
        var path = "/"
        var headers: [(String, String)] = []
        var matches: Bool
        var testDescription: String { "\(match) \(path) \(headers) → \(matches)" }
    }

    @Test(arguments: [
        // Paths
        Case(match: #""prefix": "/api""#, path: "/api/v1", matches: true),
        Case(match: #""prefix": "/api""#, path: "/apiary", matches: true),
        Case(match: #""prefix": "/api""#, path: "/API/v1", matches: false),
        Case(match: #""prefix": "/api", "case_sensitive": false"#, path: "/API/v1", matches: true),
        Case(match: #""prefix": "/a?x""#, path: "/a?x=1", matches: true),              // a prefix sees the query
        Case(match: #""path": "/exact""#, path: "/exact?q=1", matches: true),          // a path does not
        Case(match: #""path": "/exact""#, path: "/exact/", matches: false),
        Case(match: #""path": "/Exact", "case_sensitive": false"#, path: "/eXACT", matches: true),
        Case(match: #""path_separated_prefix": "/api""#, path: "/api", matches: true),
        Case(match: #""path_separated_prefix": "/api""#, path: "/api/v1", matches: true),
        Case(match: #""path_separated_prefix": "/api""#, path: "/api?x", matches: true),
        Case(match: #""path_separated_prefix": "/api""#, path: "/apiary", matches: false),
        // safe_regex: RE2, a full match of the path without its query; case_sensitive does not apply.
        Case(match: #""safe_regex": {"regex": "/v[0-9]+/.*"}"#, path: "/v12/items?x=1", matches: true),
        Case(match: #""safe_regex": {"regex": "/v[0-9]+"}"#, path: "/v12/items", matches: false),
        Case(match: #""safe_regex": {"regex": "/v[0-9]+"}, "case_sensitive": false"#, path: "/V12", matches: false),
        Case(match: #""safe_regex": {"regex": "(?i)/v[0-9]+"}"#, path: "/V12", matches: true),
        Case(match: #""safe_regex": {"google_re2": {}, "regex": "/\\p{Greek}+"}"#, path: "/αβγ", matches: true),
        // Headers
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "exact_match": "prod"}]"#, headers: [("x-env", "prod")], matches: true),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "exact_match": "prod"}]"#, headers: [("x-env", "Prod")], matches: false),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "exact_match": "prod"}]"#, matches: false),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "exact_match": "a,b"}]"#, headers: [("x-env", "a"), ("x-env", "b")], matches: true),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "prefix_match": "pr"}]"#, headers: [("x-env", "prod")], matches: true),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "suffix_match": "od"}]"#, headers: [("x-env", "prod")], matches: true),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "contains_match": "ro"}]"#, headers: [("x-env", "prod")], matches: true),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "contains_match": "dx"}]"#, headers: [("x-env", "prod")], matches: false),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "safe_regex_match": {"regex": "p.*d"}}]"#, headers: [("x-env", "prod")], matches: true),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "safe_regex_match": {"regex": "ro"}}]"#, headers: [("x-env", "prod")], matches: false),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "string_match": {"exact": "PROD", "ignore_case": true}}]"#, headers: [("x-env", "prod")], matches: true),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "string_match": {"prefix": "PR"}}]"#, headers: [("x-env", "prod")], matches: false),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "string_match": {"safe_regex": {"regex": "[a-z]+"}}}]"#, headers: [("x-env", "prod")], matches: true),
        Case(match: #""prefix": "/", "headers": [{"name": "x-n", "range_match": {"start": "10", "end": "20"}}]"#, headers: [("x-n", "19")], matches: true),
        Case(match: #""prefix": "/", "headers": [{"name": "x-n", "range_match": {"start": "10", "end": "20"}}]"#, headers: [("x-n", "20")], matches: false),
        Case(match: #""prefix": "/", "headers": [{"name": "x-n", "range_match": {"start": "10", "end": "20"}}]"#, headers: [("x-n", "1x")], matches: false),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "present_match": true}]"#, headers: [("x-env", "")], matches: true),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "present_match": true}]"#, matches: false),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "present_match": false}]"#, matches: true),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "present_match": false}]"#, headers: [("x-env", "")], matches: false),
        // invert_match, including on a header that is not there
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "exact_match": "prod", "invert_match": true}]"#, headers: [("x-env", "dev")], matches: true),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "exact_match": "prod", "invert_match": true}]"#, headers: [("x-env", "prod")], matches: false),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "exact_match": "prod", "invert_match": true}]"#, matches: false),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "present_match": true, "invert_match": true}]"#, matches: true),
        Case(match: #""prefix": "/", "headers": [{"name": "x-env", "exact_match": "", "treat_missing_header_as_empty": true}]"#, matches: true),
        // Pseudo-headers
        Case(match: #""prefix": "/", "headers": [{"name": ":method", "exact_match": "GET"}]"#, matches: true),
        Case(match: #""prefix": "/", "headers": [{"name": ":authority", "suffix_match": ".com"}]"#, matches: true),
        Case(match: #""prefix": "/", "headers": [{"name": ":path", "prefix_match": "/x"}]"#, path: "/x/y", matches: true),
        // Query parameters: the first value, as sent
        Case(match: #""prefix": "/", "query_parameters": [{"name": "debug", "string_match": {"exact": "1"}}]"#, path: "/p?a=b&debug=1", matches: true),
        Case(match: #""prefix": "/", "query_parameters": [{"name": "debug", "string_match": {"exact": "1"}}]"#, path: "/p?debug=0&debug=1", matches: false),
        Case(match: #""prefix": "/", "query_parameters": [{"name": "debug", "string_match": {"exact": "1"}}]"#, path: "/p?debugger=1", matches: false),
        Case(match: #""prefix": "/", "query_parameters": [{"name": "debug", "present_match": true}]"#, path: "/p?debug", matches: true),
        Case(match: #""prefix": "/", "query_parameters": [{"name": "debug", "present_match": true}]"#, path: "/p#debug", matches: false),
        Case(match: #""prefix": "/", "query_parameters": [{"name": "q", "string_match": {"safe_regex": {"regex": "[0-9]+"}}}]"#, path: "/p?q=42#frag", matches: true),
        // gRPC
        Case(match: #""prefix": "/", "grpc": {}"#, headers: [("content-type", "application/grpc")], matches: true),
        Case(match: #""prefix": "/", "grpc": {}"#, headers: [("content-type", "application/grpc+proto")], matches: true),
        Case(match: #""prefix": "/", "grpc": {}"#, headers: [("content-type", "application/grpc-web")], matches: false),
        Case(match: #""prefix": "/", "grpc": {}"#, matches: false),
    ])
    func matches(_ test: Case) throws {
        let table = try routeTable(oneHost(routes: #"{"match": {\#(test.match)}, "route": {"cluster": "matched"}}"#))
        let decision = table.cluster(request("example.com", test.path, headers: test.headers))
        #expect(decision == (test.matches ? "matched" : nil))
    }

    @Test func firstMatchingRouteWinsInOrder() throws {
        let table = try routeTable(oneHost(routes: """
            {"match": {"prefix": "/api/v2"}, "route": {"cluster": "v2"}},
            {"match": {"prefix": "/api"}, "route": {"cluster": "api"}},
            {"match": {"prefix": "/api/v3"}, "route": {"cluster": "never"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "default"}}
            """))
        #expect(table.cluster(request("a", "/api/v2/x")) == "v2")
        #expect(table.cluster(request("a", "/api/v3/x")) == "api")
        #expect(table.cluster(request("a", "/other")) == "default")
        #expect(table.route(request("a", "/api/v3"), randomValue: 0)?.routeIndex == 1)
    }

    @Test(arguments: [
        (#"{"match": {"safe_regex": {"regex": "/(unclosed"}}, "route": {"cluster": "c"}}"#,
         #"route_config "test".virtual_hosts[0].routes[0].match.safe_regex.regex"#),
        (#"{"match": {"prefix": "/"}, "route": {"cluster": "c"}}, {"match": {"prefix": "/", "headers": [{"name": "x", "safe_regex_match": {"regex": "a**"}}]}, "route": {"cluster": "c"}}"#,
         #"route_config "test".virtual_hosts[0].routes[1].match.headers[0].safe_regex_match.regex"#),
        // RE2 has no backreferences or lookaround: refused, not silently different.
        (#"{"match": {"safe_regex": {"regex": "(a)\\1"}}, "route": {"cluster": "c"}}"#,
         #"route_config "test".virtual_hosts[0].routes[0].match.safe_regex.regex"#),
        (#"{"match": {"prefix": "/", "query_parameters": [{"name": "q", "string_match": {"safe_regex": {"regex": "(?=x)"}}}]}, "route": {"cluster": "c"}}"#,
         #"route_config "test".virtual_hosts[0].routes[0].match.query_parameters[0].string_match.safe_regex.regex"#),
        (#"{"match": {}, "route": {"cluster": "c"}}"#, #"route_config "test".virtual_hosts[0].routes[0].match"#),
        (#"{"match": {"prefix": "/", "headers": [{"name": "x", "prefix_match": ""}]}, "route": {"cluster": "c"}}"#,
         #"route_config "test".virtual_hosts[0].routes[0].match.headers[0].prefix_match"#),
        (#"{"match": {"path_separated_prefix": "/api/"}, "route": {"cluster": "c"}}"#,
         #"route_config "test".virtual_hosts[0].routes[0].match.path_separated_prefix"#),
        (#"{"match": {"prefix": "/"}}"#, #"route_config "test".virtual_hosts[0].routes[0]"#),
    ])
    func refuses(routes: String, path: String) throws {
        let error = try refusal(oneHost(routes: routes))
        #expect(error?.path == path, "\(String(describing: error))")
    }
}
