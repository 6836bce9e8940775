import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// RequestAuthentication through a captured pod: the outbound listener's connection manager runs
/// `envoy.filters.http.jwt_authn` as istiod configures it (a provider with the issuer's JWKS inline,
/// `requires_any: [provider, allow_missing]`, then a rule requiring the token on `/private`), and curl
/// in the pod presents tokens that a Python issuer (the `cryptography` package, not Capstan's code)
/// signed with RS256 and ES256.
@Suite(.serialized) struct JWTAuthenticationEndToEndTests {
    static let peers = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers")
    static let issuer = "https://issuer.example"

    /// The issuer's JWKS and tokens (see jwt_issuer.py).
    static func issue() throws -> [String: String] {
        let result = try ChildProcess.run("/usr/bin/env", ["python3", peers.appendingPathComponent("jwt_issuer.py").path, issuer])
        guard result.status == 0, let tokens = try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: String] else {
            throw SandboxError("jwt_issuer.py: \(result)")
        }
        return tokens
    }

    static func bootstrap(jwks: String) throws -> String {
        let inline = String(data: try JSONSerialization.data(withJSONObject: [jwks], options: [.fragmentsAllowed]), encoding: .utf8)!.dropFirst().dropLast()
        return """
            {
              "node": {"id": "sidecar~192.0.2.1~app.default~default.svc.cluster.local"},
              "static_resources": {
                "listeners": [
                  {"name": "virtualOutbound", "traffic_direction": "OUTBOUND", "use_original_dst": true,
                   "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
                   "default_filter_chain": {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                     "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "cluster": "PassthroughCluster"}}]}},
                  {"name": "0.0.0.0_80", "traffic_direction": "OUTBOUND", "bind_to_port": false,
                   "address": {"socket_address": {"address": "0.0.0.0", "port_value": 80}},
                   "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                     "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                     "stat_prefix": "outbound_0.0.0.0_80", "server_name": "istio-envoy",
                     "route_config": {"name": "80", "virtual_hosts": [{"name": "reviews", "domains": ["*"], "routes": [
                       {"match": {"prefix": "/"}, "route": {"cluster": "v1", "timeout": "0s"}}]}]},
                     "http_filters": [
                       {"name": "envoy.filters.http.jwt_authn", "typed_config": {
                         "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                         "providers": {"origins-0": {"issuer": "\(issuer)", "audiences": ["bookinfo"],
                           "local_jwks": {"inline_string": \(inline)}, "payload_in_metadata": "\(issuer)"}},
                         "rules": [
                           {"match": {"prefix": "/private"}, "requires": {"provider_name": "origins-0"}},
                           {"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                             {"provider_name": "origins-0"}, {"allow_missing": {}}]}}}],
                         "bypass_cors_preflight": true}},
                       {"name": "envoy.filters.http.router", "typed_config": {
                         "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}
                ],
                "clusters": [
                  {"name": "PassthroughCluster", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s"},
                  {"name": "v1", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {"cluster_name": "v1", "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "198.51.100.10", "port_value": 80}}}}]}]}}
                ]
              }
            }
            """
    }

    @Test func tokensAreCheckedBeforeTheUpstreamAsEnvoyChecksThem() throws {
        let tokens = try Self.issue()
        try withSandbox { sandbox in
            try sandbox.initialize()
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-jwt-\(sandbox.name).json")
            try Self.bootstrap(jwks: tokens["jwks"]!).write(to: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: file) }
            let log = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-upstream-\(sandbox.name)-jwt.log").path
            let upstream = try NamespacedProcess(["python3", Self.peers.appendingPathComponent("http_upstream.py").path,
                                                  "--listen", "198.51.100.10:80", "--name", "v1"], in: sandbox.peer, logPath: log)
            defer { upstream.stop() }
            guard upstream.waitUntil(seconds: 20, { upstream.log.contains("READY") }) else {
                throw SandboxError("upstream did not start: \(upstream.log)")
            }
            let proxy = try ProxyProcess(in: sandbox, arguments: ["--config", file.path])
            defer { proxy.stop() }
            func curl(_ path: String, token: String? = nil) throws -> String {
                let header = token.map { ["-H", "Authorization: Bearer \($0)"] } ?? []
                let result = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(sandbox.name)-pod", "curl", "-sS", "-i", "--max-time", "10"]
                                                  + header + ["http://198.51.100.10\(path)"])
                #expect(result.status == 0, "\(result)")
                return result.standardOutput
            }

            // Istio's requirement: no token passes, a bad one does not.
            #expect(try curl("/hello").lowercased().contains("x-upstream-name: v1"))
            for name in ["rs256", "es256"] {
                let passed = try curl("/private", token: tokens[name]!)
                #expect(passed.hasPrefix("HTTP/1.1 200"), "\(name): \(passed)")
                #expect(!passed.contains("\"authorization\""), "the token is not forwarded upstream: \(passed)")
            }
            let missing = try curl("/private")
            #expect(missing.hasPrefix("HTTP/1.1 401"))
            #expect(missing.lowercased().contains(#"www-authenticate: bearer realm="http://198.51.100.10/private""#))
            #expect(missing.hasSuffix("Jwt is missing"))
            for (name, status, body) in [("expired", "401", "Jwt is expired"), ("stranger", "401", "Jwt verification fails"),
                                         ("other_audience", "403", "Audiences in Jwt are not allowed")] {
                let refused = try curl("/hello", token: tokens[name]!)
                #expect(refused.hasPrefix("HTTP/1.1 \(status)"), "\(name): \(refused)")
                #expect(refused.hasSuffix(body), "\(name): \(refused)")
            }
        }
    }
}
