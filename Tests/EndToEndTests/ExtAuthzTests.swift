import CapstanTestSupport
import Foundation
import Testing

/// envoy.filters.http.ext_authz against an authorization service we did not write: a grpcio server built
/// from xds-protos' `envoy.service.auth.v3` (Peers/ext_authz_server.py) in the peer, reached through the
/// proxy's own HTTP/2 cluster, in front of the Hypercorn upstream of ``HTTPTrafficTests``. curl in the pod.
@Suite(.serialized) struct ExtAuthzTests {
    static let authzAddress = "198.51.100.10"
    static let authzPort = 9191

    /// Port 80 of 198.51.100.10: every request checked by `ext-authz` (as istiod writes the filter, with
    /// up to 8,000 bytes of the request body), then routed to v1.
    static let bootstrap = """
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
                 "stat_prefix": "outbound_0.0.0.0_80", "server_name": "istio-envoy", "use_remote_address": false,
                 "route_config": {"name": "80", "virtual_hosts": [{"name": "reviews", "domains": ["*"],
                   "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "v1", "timeout": "0s"}}]}]},
                 "http_filters": [
                   {"name": "envoy.filters.http.ext_authz", "typed_config": {
                     "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                     "grpc_service": {"envoy_grpc": {"cluster_name": "ext-authz", "authority": "ext-authz.local"}, "timeout": "2s"},
                     "with_request_body": {"max_request_bytes": 8000}, "transport_api_version": "V3"}},
                   {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}
            ],
            "clusters": [
              {"name": "PassthroughCluster", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s"},
              \(HTTPTrafficTests.cluster("v1", "198.51.100.10", 80)),
              \(HTTPTrafficTests.cluster("v2", "198.51.100.99", 80)),
              \(HTTPTrafficTests.cluster("ext-authz", authzAddress, authzPort, http2: true))
            ]
          }
        }
        """

    @Test func theServiceAllowsDeniesAndWhenGoneTheRequestIsRefused() throws {
        try HTTPTrafficTests().withMesh(bootstrap: Self.bootstrap) { mesh in
            let script = HTTPTrafficTests.peers.appendingPathComponent("ext_authz_server.py").path
            let log = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-ext-authz-\(mesh.sandbox.name).log").path
            let authz = try NamespacedProcess(["python3", script, "--listen", "\(Self.authzAddress):\(Self.authzPort)"],
                                              in: mesh.sandbox.peer, logPath: log)
            defer { authz.stop() }
            guard authz.waitUntil(seconds: 20, { authz.log.contains("READY") }) else {
                throw SandboxError("ext_authz_server.py did not start: \(authz.log)")
            }

            // Allowed, over HTTP/1.1 and HTTP/2: upstream, with the service's header.
            for version in ["--http1.1", "--http2-prior-knowledge"] {
                let allowed = try mesh.curl([version, "-i", "-H", "x-allow: yes", "http://198.51.100.10/hello"])
                #expect(allowed.status == 0, "\(allowed)")
                let text = allowed.standardOutput.lowercased()
                #expect(text.hasPrefix("http/1.1 200") || text.hasPrefix("http/2 200"), "\(allowed)")
                #expect(text.contains("\"x-ext-authz\": \"checked\""), "the upstream saw the service's header: \(allowed)")
            }
            #expect(authz.log.contains("CHECK GET 198.51.100.10 /hello ALLOWED"), "\(authz.log)")
            // The body goes with the check, then upstream.
            let posted = try mesh.curl(["-i", "-H", "x-allow: yes", "--data", "order=42", "http://198.51.100.10/orders"])
            #expect(posted.standardOutput.hasPrefix("HTTP/1.1 200"), "\(posted)")
            #expect(posted.standardOutput.contains("\"body_bytes\": 8"), "\(posted)")
            #expect(authz.log.contains("CHECK POST 198.51.100.10 /orders ALLOWED body='order=42'"), "\(authz.log)")

            // Denied: the service's status, header and body; the upstream never sees it.
            let denied = try mesh.curl(["-i", "http://198.51.100.10/private"])
            #expect(denied.status == 0, "\(denied)")
            #expect(denied.standardOutput.hasPrefix("HTTP/1.1 403"), "\(denied)")
            #expect(denied.standardOutput.lowercased().contains("x-ext-authz-denied: yes"), "\(denied)")
            #expect(denied.standardOutput.hasSuffix("denied by ext_authz"), "\(denied)")

            // The service gone: failure_mode_allow is false, so even what it would allow is refused, 403.
            authz.stop()
            let refused = try mesh.curl(["-i", "-H", "x-allow: yes", "http://198.51.100.10/hello"])
            #expect(refused.standardOutput.hasPrefix("HTTP/1.1 403"), "\(refused)")
            #expect(!refused.standardOutput.contains("x-upstream-name"), "\(refused)")

            // Envoy's counters, under the connection manager's prefix.
            let stats = try mesh.proxy.admin("GET", "/stats").body.split(separator: "\n").filter { $0.contains("ext_authz") }
            for expected in ["ok: 3", "denied: 1", "error: 1", "failure_mode_allowed: 0"] {
                #expect(stats.contains { $0 == "http.outbound_0.0.0.0_80.ext_authz.\(expected)" }, "\(stats)")
            }
        }
    }
}
