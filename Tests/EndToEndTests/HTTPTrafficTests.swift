import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// HTTP through a captured pod, with clients and servers we did not write: curl, nghttp, httpx and
/// grpcio in the pod, Hypercorn and grpcio upstreams in the peer. The proxy's listeners are laid out as
/// istiod lays them out: `virtualOutbound` (use_original_dst) hands each connection to the listener of
/// its original destination (`0.0.0.0_80`, `198.51.100.10_9090`), which binds no port of its own.
@Suite(.serialized) struct HTTPTrafficTests {
    static let peers = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers")

    static let router = #"[{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]"#

    static func connectionManager(_ statPrefix: String, routes: String) -> String {
        """
        {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
          "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
          "stat_prefix": "\(statPrefix)", "server_name": "istio-envoy", "use_remote_address": false,
          "upgrade_configs": [{"upgrade_type": "websocket"}],
          "route_config": \(routes), "http_filters": \(router)}}
        """
    }

    /// `http2`: the cluster speaks HTTP/2 upstream, each connection carrying at most two streams.
    static func cluster(_ name: String, _ address: String, _ port: Int, http2: Bool = false) -> String {
        let options = http2 ? #""typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "explicit_http_config": {"http2_protocol_options": {}}, "common_http_protocol_options": {"max_requests_per_connection": 2}}},"# : ""
        return """
            {"name": "\(name)", "type": "STATIC", "connect_timeout": "1s", \(options)
             "load_assignment": {"cluster_name": "\(name)", "endpoints": [{"lb_endpoints": [
               {"endpoint": {"address": {"socket_address": {"address": "\(address)", "port_value": \(port)}}}}]}]}}
            """
    }

    /// Port 80 of 198.51.100.10 (and any host name for it): `/split` 90/10 between v1 and v2 per request,
    /// `/teapot` a direct response, `/old` a redirect, the rest v1; other hosts have no route. Port 9090:
    /// gRPC to v1 over HTTP/2.
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
               "listener_filters": [{"name": "envoy.filters.listener.http_inspector", "typed_config": {
                 "@type": "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"}}],
               "filter_chains": [{"filter_chain_match": {"application_protocols": ["http/1.0", "http/1.1", "h2c"]},
                 "filters": [\(connectionManager("outbound_0.0.0.0_80", routes: """
                   {"name": "80", "virtual_hosts": [{"name": "reviews", "domains": ["198.51.100.10", "198.51.100.10:80", "reviews"],
                     "routes": [
                       {"match": {"prefix": "/split"}, "route": {"weighted_clusters": {"clusters": [
                          {"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}]}, "timeout": "0s"}},
                       {"match": {"prefix": "/teapot"}, "direct_response": {"status": 418, "body": {"inline_string": "short and stout"}}},
                       {"match": {"path": "/old"}, "redirect": {"path_redirect": "/new"}},
                       {"match": {"prefix": "/flaky/"}, "route": {"cluster": "flaky", "prefix_rewrite": "/", "timeout": "0s", "retry_policy": {
                          "retry_on": "connect-failure,retriable-status-codes", "retriable_status_codes": [503], "num_retries": 2,
                          "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts"}], "host_selection_retry_max_attempts": 5}}},
                       {"match": {"prefix": "/checked/"}, "route": {"cluster": "checked", "prefix_rewrite": "/", "timeout": "0s"}},
                       {"match": {"prefix": "/"}, "route": {"cluster": "v1", "timeout": "0s"}}]}]}
                   """))]}]},
              {"name": "198.51.100.10_9090", "traffic_direction": "OUTBOUND", "bind_to_port": false,
               "address": {"socket_address": {"address": "198.51.100.10", "port_value": 9090}},
               "filter_chains": [{"filters": [\(connectionManager("outbound_198.51.100.10_9090", routes: """
                   {"name": "9090", "virtual_hosts": [{"name": "echo", "domains": ["*"], "routes": [
                     {"match": {"prefix": "/"}, "route": {"cluster": "grpc", "timeout": "0s"}}]}]}
                   """))]}]}
            ],
            "clusters": [
              {"name": "PassthroughCluster", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s"},
              \(cluster("v1", "198.51.100.10", 80)),
              \(cluster("v2", "198.51.100.99", 80)),
              \(cluster("grpc", "198.51.100.10", 9090, http2: true)),
              {"name": "flaky", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {"cluster_name": "flaky", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "198.51.100.10", "port_value": 81}}}},
                {"endpoint": {"address": {"socket_address": {"address": "198.51.100.99", "port_value": 80}}}}]}]}},
              {"name": "checked", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {"cluster_name": "checked", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "198.51.100.10", "port_value": 80}}}},
                {"endpoint": {"address": {"socket_address": {"address": "198.51.100.99", "port_value": 80}}}}]}]},
               "health_checks": [{"timeout": "1s", "interval": "0.2s", "no_traffic_interval": "0.2s", "unhealthy_threshold": 2,
                 "healthy_threshold": 2, "http_health_check": {"path": "/healthz"}}]}
            ]
          }
        }
        """

    /// A captured pod whose proxy has ``bootstrap``, and the two upstreams in the peer.
    struct Mesh {
        let sandbox: Sandbox
        let proxy: ProxyProcess
        /// The upstream HTTP servers started with the proxy, by name (v1, v2).
        let upstreams: [String: NamespacedProcess]
        /// Starts an upstream HTTP server in the peer, with `arguments` besides.
        let startUpstream: (_ name: String, _ address: String, _ arguments: [String]) throws -> NamespacedProcess

        func run(_ command: [String]) throws -> ChildProcess.Result {
            try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(sandbox.name)-pod"] + command)
        }

        func client(_ arguments: [String]) throws -> [String: Any] {
            let result = try run(["python3", HTTPTrafficTests.peers.appendingPathComponent("http_client.py").path] + arguments)
            guard let object = try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any] else {
                throw SandboxError("http_client.py \(arguments): \(result)")
            }
            return object
        }

        /// curl's `-w` line and the body, from the pod.
        func curl(_ arguments: [String]) throws -> ChildProcess.Result {
            try run(["curl", "-sS", "--max-time", "10"] + arguments)
        }
    }

    /// `bootstrap`: the proxy's, ``bootstrap`` unless a test brings its own (ext_authz's).
    func withMesh<T>(bootstrap: String = Self.bootstrap, _ body: (Mesh) throws -> T) throws -> T {
        try withSandbox { sandbox in
            try sandbox.initialize()
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-http-\(sandbox.name).json")
            try bootstrap.write(to: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: file) }
            let upstream = Self.peers.appendingPathComponent("http_upstream.py").path
            var upstreams: [NamespacedProcess] = []
            defer { upstreams.forEach { $0.stop() } }
            func start(_ name: String, _ address: String, _ arguments: [String]) throws -> NamespacedProcess {
                let log = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-upstream-\(sandbox.name)-\(name)-\(upstreams.count).log").path
                let process = try NamespacedProcess(["python3", upstream, "--listen", "\(address):80", "--name", name] + arguments,
                                                    in: sandbox.peer, logPath: log)
                upstreams.append(process)
                guard process.waitUntil(seconds: 20, { process.log.contains("READY") }) else {
                    throw SandboxError("upstream \(name) did not start: \(process.log)")
                }
                return process
            }
            var initial: [String: NamespacedProcess] = [:]
            for (name, address, grpc) in [("v1", "198.51.100.10", ["--grpc-port", "9090"]), ("v2", "198.51.100.99", [])] {
                initial[name] = try start(name, address, grpc)
            }
            let proxy = try ProxyProcess(in: sandbox, arguments: ["--config", file.path])
            defer { proxy.stop() }
            return try body(Mesh(sandbox: sandbox, proxy: proxy, upstreams: initial, startUpstream: start))
        }
    }

    @Test func curlOverHTTP1AndHTTP2ReachesTheRoutedUpstream() throws {
        try withMesh { mesh in
            for version in [["--http1.1"], ["--http2-prior-knowledge"]] {
                let result = try mesh.curl(version + ["-i", "http://198.51.100.10/hello"])
                #expect(result.status == 0, "\(result)")
                let text = result.standardOutput.lowercased()
                #expect(text.contains("x-upstream-name: v1"))
                #expect(text.contains("server: istio-envoy"))
                #expect(text.contains("\"x-request-id\": "), "the upstream saw a generated x-request-id")
                #expect(text.contains("\"x-forwarded-proto\": \"http\""))
            }
            let nghttp = try mesh.run(["nghttp", "-v", "-t", "10", "http://198.51.100.10/nghttp"])
            #expect(nghttp.status == 0, "\(nghttp)")
            #expect(nghttp.standardOutput.contains("x-upstream-name: v1"))
        }
    }

    /// `request_headers_timeout: 1s`: a client that sends half a head and stops is answered 408 and closed,
    /// counted in `downstream_rq_header_timeout`; a whole request in time is served as before.
    @Test func aHeadThatTakesTooLongIsAnswered408() throws {
        let bootstrap = Self.bootstrap.replacingOccurrences(of: #""use_remote_address": false,"#,
                                                            with: #""use_remote_address": false, "request_headers_timeout": "1s","#)
        try withMesh(bootstrap: bootstrap) { mesh in
            let served = try mesh.curl(["--http1.1", "-o", "/dev/null", "-w", "%{http_code}", "http://198.51.100.10/hello"])
            #expect(served.standardOutput == "200", "\(served)")
            let slow = try ProbeSocket.tcp(.ipv4, in: mesh.sandbox.pod, uid: 1000, gid: 1000)
            try slow.connect(to: SocketAddress(IPAddress("198.51.100.10")!, 80), timeoutMilliseconds: 2000)
            try slow.sendAll(Array("GET /hello HTTP/1.1\r\nhost: reviews\r\n".utf8))
            let started = Date()
            let answer = String(decoding: try slow.receive(count: Int.max, timeoutMilliseconds: 5000), as: UTF8.self)
            #expect(answer.hasPrefix("HTTP/1.1 408 Request Timeout\r\n") && answer.hasSuffix("request header timeout"), "\(answer)")
            #expect(Date().timeIntervalSince(started) >= 0.9, "not before the limit")
            let stats = try mesh.proxy.admin("GET", "/stats").body
            #expect(stats.contains("http.outbound_0.0.0.0_80.downstream_rq_header_timeout: 1"), "\(stats)")
            // A WebSocket's bytes after its upgrade are no head: quiet longer than the limit, it stays open.
            let tunnel = try mesh.client(["ws", "ws://198.51.100.10/ws", "--messages", "3", "--pause", "1.5"])
            #expect(tunnel["all_match"] as? Bool == true, "\(tunnel)")
        }
    }

    /// How 1,000 requests to `/split` on one connection were answered: by upstream name, and the number
    /// of client ports (connections) used.
    static func split(_ mesh: Mesh, http2: Bool) throws -> (byUpstream: [String: Int], connections: Int) {
        let result = try mesh.client(["httpx", "http://198.51.100.10/split", "--count", "1000"] + (http2 ? ["--http2"] : []))
        guard let requests = result["requests"] as? [[String: Any]] else { throw SandboxError("no requests in \(result)") }
        var byUpstream: [String: Int] = [:]
        var ports = Set<Int>()
        for request in requests {
            byUpstream[request["upstream"] as? String ?? "?", default: 0] += 1
            if let port = request["local_port"] as? Int { ports.insert(port) }
        }
        return (byUpstream, ports.count)
    }

    @Test func weightedClustersSplitEachRequestNinetyTenOnOneConnection() throws {
        try withMesh { mesh in
            for http2 in [false, true] {
                let (byUpstream, connections) = try Self.split(mesh, http2: http2)
                let v2 = byUpstream["v2", default: 0]
                #expect(byUpstream.values.reduce(0, +) == 1000)
                #expect((70...130).contains(v2), "v2 took \(v2) of 1000 (\(byUpstream)), over HTTP/\(http2 ? 2 : 1)")
                #expect(connections == 1, "one client connection saw both versions")
            }
        }
    }

    @Test func grpcUnaryAndStreamingKeepTheirStatus() throws {
        try withMesh { mesh in
            for method in ["unary", "server-stream", "bidi"] {
                let result = try mesh.client(["grpc", "198.51.100.10:9090", method])
                #expect(result["code"] as? String == "OK", "\(method): \(result)")
                #expect((result["messages"] as? [Any])?.isEmpty == false)
            }
            let failed = try mesh.client(["grpc", "198.51.100.10:9090", "unary", "--fail-with", "5"])
            #expect(failed["code"] as? String == "NOT_FOUND", "\(failed)")
            // Four calls, one after the other, on HTTP/2 connections that carry two streams each.
            let stats = try mesh.proxy.admin("GET", "/stats").body
            #expect(stats.split(separator: "\n").contains("cluster.grpc.upstream_cx_total: 2"), "max_requests_per_connection 2")
        }
    }

    @Test func webSocketsAreTunnelledAfterTheUpgrade() throws {
        try withMesh { mesh in
            let result = try mesh.client(["ws", "ws://198.51.100.10/ws", "--messages", "20"])
            #expect(result["upstream"] as? String == "v1", "\(result)")
            #expect((result["echoes"] as? [Any])?.count == 20, "\(result)")
            #expect(result["all_match"] as? Bool == true, "\(result)")
        }
    }

    @Test func largeBodiesArriveIntactBothWays() throws {
        try withMesh { mesh in
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-body-\(mesh.sandbox.name)")
            try Data((0..<(6 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) }).write(to: file)
            defer { try? FileManager.default.removeItem(at: file) }
            let expected = try ChildProcess.run("/usr/bin/sha256sum", [file.path]).standardOutput.prefix(64)
            for version in ["--http1.1", "--http2-prior-knowledge"] {
                let echoed = try mesh.run(["sh", "-c", "curl -sS --max-time 30 \(version) --data-binary @\(file.path) http://198.51.100.10/echo | sha256sum"])
                #expect(echoed.standardOutput.prefix(64) == expected, "\(version): \(echoed)")
                let download = try mesh.curl([version, "-D", "-", "-o", "/dev/null", "-w", "%{size_download}", "http://198.51.100.10/bytes/5000000"])
                #expect(download.standardOutput.hasSuffix("5000000"), "\(download)")
            }
        }
    }

    @Test func routeActionsAndRefusalsCarryEnvoysStatus() throws {
        try withMesh { mesh in
            func status(_ arguments: [String]) throws -> String {
                try mesh.curl(["-o", "/dev/null", "-w", "%{http_code}"] + arguments).standardOutput
            }
            #expect(try status(["http://198.51.100.10/teapot"]) == "418")
            let redirect = try mesh.curl(["-i", "http://198.51.100.10/old"]).standardOutput.lowercased()
            #expect(redirect.hasPrefix("http/1.1 301"))
            #expect(redirect.contains("location: http://198.51.100.10/new"))
            #expect(try status(["-H", "Host: elsewhere", "http://198.51.100.10/"]) == "404")
            let many = (0..<101).flatMap { ["-H", "x-h\($0): v"] }
            #expect(try status(many + ["http://198.51.100.10/"]) == "431")
            #expect(try status(["-H", "x-big: " + String(repeating: "a", count: 61 * 1024), "http://198.51.100.10/"]) == "431")
            #expect(try status(["-0", "http://198.51.100.10/"]) == "200", "HTTP/1.0 is served, not refused with 426")
            // Request smuggling: both Content-Length and Transfer-Encoding.
            let smuggled = try mesh.run(["python3", "-c", """
                import socket
                s = socket.create_connection(("198.51.100.10", 80), timeout=5)
                s.sendall(b"POST / HTTP/1.1\\r\\nHost: 198.51.100.10\\r\\nContent-Length: 5\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n")
                print(s.recv(100).split(b"\\r\\n")[0].decode())
                """])
            #expect(smuggled.standardOutput.hasPrefix("HTTP/1.1 400"), "\(smuggled)")
            let metrics = try mesh.proxy.admin("GET", "/stats/prometheus", port: 15090).body
            #expect(metrics.contains(#"response_code="404""#) && metrics.contains(#"response_flags="NR""#), "\(metrics)")
        }
    }

    /// `/flaky/` goes to a cluster of two endpoints, one of which refuses connections (port 81), with
    /// Istio's retry policy: every request is answered by the live one, some after a retry.
    @Test func connectFailuresAndRetriable503sAreRetriedOnAnotherHost() throws {
        try withMesh { mesh in
            for index in 0..<6 {
                let result = try mesh.curl(["-o", "/dev/null", "-w", "%{http_code}", "http://198.51.100.10/flaky/\(index)"])
                #expect(result.standardOutput == "200", "request \(index): \(result)")
            }
            let stats = try mesh.proxy.admin("GET", "/stats").body.split(separator: "\n")
            // Round robin, one request after the other: each first attempt meets port 81, as each retry
            // takes the other turn.
            #expect(stats.contains("cluster.flaky.upstream_rq_retry: 6"), "\(stats.filter { $0.contains("flaky") })")
            #expect(stats.contains("cluster.flaky.upstream_rq_retry_success: 6"))
            // A 503 from the live endpoint, retried until the retries run out; a POST is not retried.
            let exhausted = try mesh.curl(["-o", "/dev/null", "-w", "%{http_code}", "http://198.51.100.10/flaky/status/503"])
            #expect(exhausted.standardOutput == "503")
            let post = try mesh.curl(["-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-d", "x", "http://198.51.100.10/flaky/status/503"])
            #expect(post.standardOutput == "503")
            let after = try mesh.proxy.admin("GET", "/stats").body.split(separator: "\n")
            #expect(after.contains("cluster.flaky.upstream_rq_retry_limit_exceeded: 1"), "\(after.filter { $0.contains("flaky") })")
            let metrics = try mesh.proxy.admin("GET", "/stats/prometheus", port: 15090).body
            #expect(metrics.contains(#"URX""#), "the exhausted request's flags end with URX (after UF when its last attempt met port 81)")
            #expect(metrics.contains(#"istio_requests_total{reporter="source""#))
        }
    }

    /// Active health checks (`/healthz` every 200 ms, two failures to go out, two successes to come back):
    /// v2 starting to answer 503 is out of rotation within two intervals, every request then goes to
    /// v1, and v2 comes back once it answers 200 again.
    @Test func aHealthCheckedEndpointThatStartsFailingLeavesTheRotation() throws {
        try withMesh { mesh in
            func upstreams(_ count: Int) throws -> [String] {
                try (0..<count).map { index in
                    let result = try mesh.curl(["-o", "/dev/null", "-w", "%{http_code} %header{x-upstream-name}", "http://198.51.100.10/checked/\(index)"])
                    return result.standardOutput
                }
            }
            func flags() throws -> [String] {
                try mesh.proxy.admin("GET", "/clusters").body.split(separator: "\n").filter { $0.hasPrefix("checked::") && $0.contains("health_flags") }
                    .map(String.init)
            }
            // Both pass their first check: both take requests.
            #expect(mesh.proxy.waitUntil(seconds: 5) { (try? flags().allSatisfy { $0.hasSuffix("::healthy") }) == true })
            #expect(Set(try upstreams(10)) == ["200 v1", "200 v2"])

            // v2 starts failing (restarted, answering every request 503).
            try #require(mesh.upstreams["v2"]).stop()
            let failing = try mesh.startUpstream("v2", "198.51.100.99", ["--fail-status", "503"])
            let start = Date()
            #expect(mesh.proxy.waitUntil(seconds: 5) { (try? flags().contains { $0.contains("198.51.100.99:80::health_flags::/failed_active_hc") }) == true },
                    "\((try? flags()) ?? [])")
            // Two intervals of 200 ms, and the restart's own time; well within a second and a half.
            #expect(Date().timeIntervalSince(start) < 1.5)
            #expect(try upstreams(20) == Array(repeating: "200 v1", count: 20), "no request goes to the failing endpoint")
            let stats = try mesh.proxy.admin("GET", "/stats").body.split(separator: "\n").map(String.init)
            #expect(stats.contains("cluster.checked.health_check.healthy: 1"), "\(stats.filter { $0.contains("checked.health") })")
            #expect(stats.contains { $0.hasPrefix("cluster.checked.health_check.failure: ") && !$0.hasSuffix(": 0") })

            // v2 recovers: back in rotation after two passing checks.
            failing.stop()
            _ = try mesh.startUpstream("v2", "198.51.100.99", [])
            #expect(mesh.proxy.waitUntil(seconds: 5) { (try? flags().allSatisfy { $0.hasSuffix("::healthy") }) == true })
            #expect(Set(try upstreams(10)) == ["200 v1", "200 v2"])
        }
    }
}
