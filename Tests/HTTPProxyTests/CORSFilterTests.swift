import Configuration
import HTTPTypes
import NIOCore
import NIOEmbedded
import Routing
import SwiftProtobuf
import Testing
import XDS
@testable import HTTPProxy

/// The CORS filter in the connection manager, on `EmbeddedChannel`s, as Envoy's behaves: preflights from
/// allowed origins answered here, the others forwarded (or answered bare when the policy says so), and
/// the `Access-Control-*` headers on the responses of allowed origins only, local replies included.
@Suite struct CORSFilterTests {
    typealias Fixture = HTTPStreamHandlerTests.Fixture

    static let policyType = "\"@type\": \"type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy\""

    /// `/api`: istiod's policy for `allowOrigins: [{exact: https://shop.example}, {prefix: https://dev.}]`,
    /// methods GET and POST, header `x-user`, exposed `x-trace`, a day, credentials; `/strict`: the same
    /// origins with unmatched preflights answered here; `/half`: a policy enabled for no request (0 %);
    /// `/missing`: the policy's origins, routed to a cluster that does not exist (a 503 here); the rest:
    /// no policy, under a virtual host whose own policy names only its origins.
    static func config() throws -> HTTPConnectionManagerConfig {
        let origins = #"[{"exact": "https://shop.example"}, {"prefix": "https://dev."}]"#
        let policy = """
            {\(policyType), "allow_origin_string_match": \(origins), "allow_methods": "GET,POST", "allow_headers": "x-user",
             "expose_headers": "x-trace", "max_age": "86400", "allow_credentials": true,
             "filter_enabled": {"default_value": {"numerator": 100}}, "forward_not_matching_preflights": true}
            """
        let json = """
            {"stat_prefix": "test", "codec_type": "HTTP1", "server_name": "istio-envoy",
             "route_config": {"name": "test", "virtual_hosts": [{"name": "app", "domains": ["app.local"],
               "typed_per_filter_config": {"envoy.filters.http.cors": {\(policyType), "allow_origin_string_match": [{"exact": "https://vhost.example"}],
                 "allow_methods": "PUT"}},
               "routes": [
               {"match": {"prefix": "/api"}, "route": {"cluster": "backend"}, "typed_per_filter_config": {"envoy.filters.http.cors": \(policy)}},
               {"match": {"prefix": "/strict"}, "route": {"cluster": "backend"}, "typed_per_filter_config": {"envoy.filters.http.cors":
                 {\(policyType), "allow_origin_string_match": \(origins), "forward_not_matching_preflights": false}}},
               {"match": {"prefix": "/half"}, "route": {"cluster": "backend"}, "typed_per_filter_config": {"envoy.filters.http.cors":
                 {\(policyType), "allow_origin_string_match": \(origins), "filter_enabled": {"default_value": {"numerator": 0}}}}},
               {"match": {"prefix": "/missing"}, "route": {"cluster": "nowhere"}, "typed_per_filter_config": {"envoy.filters.http.cors": \(policy)}},
               {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]},
             "http_filters": [{"name": "envoy.filters.http.cors", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
               {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
            """
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_Router_V3_Router.self)
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_Cors_V3_Cors.self)
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_Cors_V3_CorsPolicy.self)
        return try HTTPConnectionManagerConfig(try HTTPConnectionManagerConfig.Proto(jsonString: json), path: "hcm")
    }

    static func preflight(_ path: String, origin: String) -> String {
        "OPTIONS \(path) HTTP/1.1\r\nHost: app.local\r\norigin: \(origin)\r\naccess-control-request-method: POST\r\naccess-control-request-headers: x-user\r\n\r\n"
    }

    @Test func aPreflightFromAnAllowedOriginIsAnsweredHere() throws {
        let fixture = try Fixture(config: try Self.config())
        try fixture.send(Self.preflight("/api/orders", origin: "https://dev.shop.example"))
        let response = try fixture.downstreamText()
        #expect(response.hasPrefix("HTTP/1.1 200 OK\r\n"))
        for line in ["access-control-allow-origin: https://dev.shop.example", "access-control-allow-credentials: true",
                     "access-control-allow-methods: GET,POST", "access-control-allow-headers: x-user", "access-control-max-age: 86400"] {
            #expect(response.contains(line + "\r\n"), "\(line) in \(response)")
        }
        #expect(!response.contains("access-control-expose-headers"))
        #expect(fixture.backend.connections.isEmpty)
        #expect(fixture.records.ended.first?.responseCodeDetails == "cors_response")
    }

    @Test func aPreflightFromAnotherOriginGoesUpstreamOrIsAnsweredBare() throws {
        let fixture = try Fixture(config: try Self.config())
        try fixture.send(Self.preflight("/api/orders", origin: "https://evil.example"))
        #expect(try fixture.upstreamText().hasPrefix("OPTIONS /api/orders HTTP/1.1"))
        try fixture.answer("HTTP/1.1 204 No Content\r\n\r\n")
        #expect(!(try fixture.downstreamText()).contains("access-control-"))
        // forward_not_matching_preflights: false: a 200 from the proxy, naming no origin.
        try fixture.send(Self.preflight("/strict", origin: "https://evil.example"))
        let bare = try fixture.downstreamText()
        #expect(bare.hasPrefix("HTTP/1.1 200 OK\r\n") && !bare.contains("access-control-allow-origin"))
        #expect(fixture.backend.connections.count == 1)
    }

    @Test func responsesToAllowedOriginsCarryTheHeaders() throws {
        let fixture = try Fixture(config: try Self.config())
        try fixture.send("GET /api/orders HTTP/1.1\r\nHost: app.local\r\norigin: https://shop.example\r\n\r\n")
        #expect(try fixture.upstreamText().contains("origin: https://shop.example"))
        try fixture.answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        let allowed = try fixture.downstreamText()
        for line in ["access-control-allow-origin: https://shop.example", "access-control-allow-credentials: true", "access-control-expose-headers: x-trace"] {
            #expect(allowed.contains(line + "\r\n"), "\(line) in \(allowed)")
        }
        // Another origin: the response as the upstream sent it.
        try fixture.send("GET /api/orders HTTP/1.1\r\nHost: app.local\r\norigin: https://evil.example\r\n\r\n")
        _ = try fixture.upstreamText()
        try fixture.answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        #expect(!(try fixture.downstreamText()).contains("access-control-"))
    }

    @Test func localRepliesAfterTheFilterCarryTheHeadersToo() throws {
        let fixture = try Fixture(config: try Self.config())
        try fixture.send("GET /missing HTTP/1.1\r\nHost: app.local\r\norigin: https://shop.example\r\n\r\n")
        let response = try fixture.downstreamText()
        #expect(response.hasPrefix("HTTP/1.1 503"))
        #expect(response.contains("access-control-allow-origin: https://shop.example\r\n"))
    }

    @Test func theVirtualHostsPolicyAndTheEnabledShare() throws {
        let fixture = try Fixture(config: try Self.config())
        // No route policy: the virtual host's, for its own origin only.
        try fixture.send(Self.preflight("/other", origin: "https://vhost.example"))
        let vhost = try fixture.downstreamText()
        #expect(vhost.contains("access-control-allow-origin: https://vhost.example\r\n") && vhost.contains("access-control-allow-methods: PUT\r\n"))
        // A route policy laid over the virtual host's: its unset methods come from there.
        try fixture.send(Self.preflight("/strict", origin: "https://shop.example"))
        #expect(try fixture.downstreamText().contains("access-control-allow-methods: PUT\r\n"))
        // Enabled for 0 % of requests: the preflight goes upstream untouched.
        try fixture.send(Self.preflight("/half", origin: "https://shop.example"))
        #expect(try fixture.upstreamText().hasPrefix("OPTIONS /half HTTP/1.1"))
    }
}
