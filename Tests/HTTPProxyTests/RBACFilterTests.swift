import Authorization
import Configuration
import NIOCore
import NIOEmbedded
import SwiftProtobuf
import Testing
import XDS
@testable import HTTPProxy

/// The RBAC filter in the connection manager, on `EmbeddedChannel`s: what its rules allow goes upstream,
/// what they deny is answered 403 without an upstream, a DENY filter before an ALLOW one wins, and shadow
/// rules only count. The downstream is 192.0.2.1, without TLS.
@Suite struct RBACFilterTests {
    typealias Fixture = HTTPStreamHandlerTests.Fixture

    static let rbacType = "\"@type\": \"type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC\""

    /// DENY `/admin*` to anyone; ALLOW GET from 192.0.2.0/24; shadow: DENY POST (counted only).
    static func config() throws -> HTTPConnectionManagerConfig {
        let anyone = #"[{"any": true}]"#
        let json = """
            {"stat_prefix": "test", "codec_type": "HTTP1", "server_name": "istio-envoy",
             "route_config": {"name": "test", "virtual_hosts": [{"name": "app", "domains": ["app.local"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]},
             "http_filters": [
               {"name": "envoy.filters.http.rbac", "typed_config": {\(rbacType), "rules": {"action": "DENY", "policies": {
                 "ns[shop]-policy[no-admin]-rule[0]": {"permissions": [{"url_path": {"path": {"prefix": "/admin"}}}], "principals": \(anyone)}}}}},
               {"name": "envoy.filters.http.rbac", "typed_config": {\(rbacType),
                 "rules": {"policies": {"ns[shop]-policy[get-from-pods]-rule[0]": {
                   "permissions": [{"header": {"name": ":method", "exact_match": "GET"}}],
                   "principals": [{"direct_remote_ip": {"address_prefix": "192.0.2.0", "prefix_len": 24}}]}}},
                 "shadow_rules": {"action": "DENY", "policies": {"ns[shop]-policy[no-post]-rule[0]": {
                   "permissions": [{"header": {"name": ":method", "exact_match": "POST"}}], "principals": \(anyone)}}},
                 "shadow_rules_stat_prefix": "istio_dry_run_deny_"}},
               {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
            """
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_Router_V3_Router.self)
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_Rbac_V3_RBAC.self)
        return try HTTPConnectionManagerConfig(try HTTPConnectionManagerConfig.Proto(jsonString: json), path: "hcm")
    }

    /// The two filters' engines, their counters bound (the proxy binds them per stat prefix).
    static func engines(_ config: HTTPConnectionManagerConfig) -> [RBACEngine] {
        config.filters.compactMap { filter -> RBACEngine? in
            guard case .rbac(let rbac) = filter.behaviour else { return nil }
            _ = rbac.engine.counters.storeIfNilThenLoad(RBACCounters(names: rbac.engine.statNames))
            return rbac.engine
        }
    }

    static func counts(_ engines: [RBACEngine]) -> [String: Int] {
        var counts: [String: Int] = [:]
        for engine in engines { for (name, value) in engine.counters.load()?.entries ?? [] { counts[name, default: 0] += value } }
        return counts
    }

    @Test func allowedRequestsGoUpstream() throws {
        let config = try Self.config()
        let engines = Self.engines(config)
        let fixture = try Fixture(config: config)
        try fixture.send("GET /orders HTTP/1.1\r\nHost: app.local\r\n\r\n")
        #expect(try fixture.upstreamText().hasPrefix("GET /orders HTTP/1.1\r\n"))
        try fixture.answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 200 OK"))
        #expect(Self.counts(engines) == ["rbac.allowed": 2, "rbac.denied": 0,
                                         "rbac.istio_dry_run_deny_shadow_allowed": 1, "rbac.istio_dry_run_deny_shadow_denied": 0])
    }

    @Test func deniedRequestsAreAnswered403WithoutTheUpstream() throws {
        let config = try Self.config()
        let engines = Self.engines(config)
        let fixture = try Fixture(config: config)
        // Denied by the DENY filter first: GET would be allowed by the ALLOW filter.
        try fixture.send("GET /admin/users HTTP/1.1\r\nHost: app.local\r\n\r\n")
        let response = try fixture.downstreamText()
        #expect(response.hasPrefix("HTTP/1.1 403 Forbidden\r\n"))
        #expect(response.hasSuffix("\r\n\r\nRBAC: access denied"))
        #expect(fixture.records.ended.first?.responseCodeDetails == "rbac_access_denied_matched_policy[ns[shop]-policy[no-admin]-rule[0]]")
        // Denied by the ALLOW filter, which no policy matches; the shadow DENY matches and only counts.
        try fixture.send("POST /orders HTTP/1.1\r\nHost: app.local\r\ncontent-length: 2\r\n\r\nhi")
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 403 Forbidden\r\n"))
        #expect(fixture.records.ended.last?.responseCodeDetails == "rbac_access_denied_matched_policy[none]")
        #expect(fixture.backend.connections.isEmpty, "nothing went upstream")
        #expect(Self.counts(engines) == ["rbac.allowed": 1, "rbac.denied": 2,
                                         "rbac.istio_dry_run_deny_shadow_allowed": 0, "rbac.istio_dry_run_deny_shadow_denied": 1])
    }
}
