import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// RequestAuthentication through a captured pod: the outbound listener's connection manager runs
/// `envoy.filters.http.jwt_authn` as istiod configures it (a provider with the issuer's JWKS inline,
/// `requires_any: [provider, allow_missing]`, then a rule requiring the token on `/private`), and curl
/// in the pod presents tokens that a Python issuer (the `cryptography` package, not Capstan's code)
/// signed with RS256 and ES256. The keys are inline (istiod's default) or fetched by the proxy through a
/// cluster of its own from a file server in the peer (`remote_jwks`).
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

    /// The provider's keys inline, as istiod sends them by default.
    static func inline(_ jwks: String) throws -> String {
        let quoted = String(data: try JSONSerialization.data(withJSONObject: [jwks], options: [.fragmentsAllowed]), encoding: .utf8)!.dropFirst().dropLast()
        return #""local_jwks": {"inline_string": \#(quoted)}"#
    }

    /// The provider's keys fetched from a server in the peer through the `jwks` cluster.
    static let remote = #""remote_jwks": {"http_uri": {"uri": "http://198.51.100.99:8080/keys.json", "cluster": "jwks", "timeout": "2s"}, "cache_duration": "300s"}"#

    /// `keys`: the provider's `local_jwks` or `remote_jwks`.
    static func bootstrap(keys: String) throws -> String {
        """
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
                           \(keys), "payload_in_metadata": "\(issuer)"}},
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
                    {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "198.51.100.10", "port_value": 80}}}}]}]}},
                  {"name": "jwks", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {"cluster_name": "jwks", "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "198.51.100.99", "port_value": 8080}}}}]}]}}
                ]
              }
            }
            """
    }

    @Test func tokensAreCheckedBeforeTheUpstreamAsEnvoyChecksThem() throws {
        let tokens = try Self.issue()
        try withPod(keys: try Self.inline(tokens["jwks"]!)) { curl in
            // Istio's requirement: no token passes, a bad one does not.
            #expect(try curl("/hello", nil).lowercased().contains("x-upstream-name: v1"))
            for name in ["rs256", "es256"] {
                let passed = try curl("/private", tokens[name]!)
                #expect(passed.hasPrefix("HTTP/1.1 200"), "\(name): \(passed)")
                #expect(!passed.contains("\"authorization\""), "the token is not forwarded upstream: \(passed)")
            }
            let missing = try curl("/private", nil)
            #expect(missing.hasPrefix("HTTP/1.1 401"))
            #expect(missing.lowercased().contains(#"www-authenticate: bearer realm="http://198.51.100.10/private""#))
            #expect(missing.hasSuffix("Jwt is missing"))
            for (name, status, body) in [("expired", "401", "Jwt is expired"), ("stranger", "401", "Jwt verification fails"),
                                         ("other_audience", "403", "Audiences in Jwt are not allowed")] {
                let refused = try curl("/hello", tokens[name]!)
                #expect(refused.hasPrefix("HTTP/1.1 \(status)"), "\(name): \(refused)")
                #expect(refused.hasSuffix(body), "\(name): \(refused)")
            }
        }
    }

    @Test func aRemoteJWKSIsFetchedThroughTheProxysCluster() throws {
        let tokens = try Self.issue()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-jwks-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try tokens["jwks"]!.write(to: directory.appendingPathComponent("keys.json"), atomically: true, encoding: .utf8)
        try withPod(keys: Self.remote, jwksDirectory: directory.path) { curl in
            let passed = try curl("/private", tokens["rs256"]!)
            #expect(passed.hasPrefix("HTTP/1.1 200"), "\(passed)")
            #expect(try curl("/private", tokens["stranger"]!).hasSuffix("Jwt verification fails"))
        }
    }

    /// A captured pod whose proxy has ``bootstrap(keys:)``, v1 in the peer and, given `jwksDirectory`, a
    /// file server for it at 198.51.100.99:8080; `body` gets curl from the pod (path, token → output).
    func withPod(keys: String, jwksDirectory: String? = nil, _ body: (_ curl: (String, String?) throws -> String) throws -> Void) throws {
        try withSandbox { sandbox in
            try sandbox.initialize()
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-jwt-\(sandbox.name).json")
            try Self.bootstrap(keys: keys).write(to: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: file) }
            var jwksServer: NamespacedProcess?
            defer { jwksServer?.stop() }
            if let jwksDirectory {
                let log = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-jwks-\(sandbox.name).log").path
                let server = try NamespacedProcess(["python3", "-u", "-m", "http.server", "8080", "--bind", "198.51.100.99", "--directory", jwksDirectory],
                                                   in: sandbox.peer, logPath: log)
                jwksServer = server
                guard server.waitUntil(seconds: 20, { server.log.contains("Serving HTTP") }) else {
                    throw SandboxError("JWKS server did not start: \(server.log)")
                }
            }
            let log = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-upstream-\(sandbox.name)-jwt.log").path
            let upstream = try NamespacedProcess(["python3", Self.peers.appendingPathComponent("http_upstream.py").path,
                                                  "--listen", "198.51.100.10:80", "--name", "v1"], in: sandbox.peer, logPath: log)
            defer { upstream.stop() }
            guard upstream.waitUntil(seconds: 20, { upstream.log.contains("READY") }) else {
                throw SandboxError("upstream did not start: \(upstream.log)")
            }
            let proxy = try ProxyProcess(in: sandbox, arguments: ["--config", file.path])
            defer { proxy.stop() }
            func curl(_ path: String, token: String?) throws -> String {
                let header = token.map { ["-H", "Authorization: Bearer \($0)"] } ?? []
                let result = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(sandbox.name)-pod", "curl", "-sS", "-i", "--max-time", "10"]
                                                  + header + ["http://198.51.100.10\(path)"])
                #expect(result.status == 0, "\(result)")
                return result.standardOutput
            }
            try body(curl)
        }
    }
}
