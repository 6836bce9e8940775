import CapstanTestSupport
import Foundation
import Testing

/// The HTTP connection manager's access log, as istiod configures it (Istio's text format to a file),
/// written by the proxy for requests curl makes in the pod: a 200 from the upstream, a 404 without a
/// route (`NR`), and a 503 from an upstream that refuses the connection (`UF`), each line checked field by
/// field. No capture: the proxy's listener binds port 8080 in the pod (curl reaches it on 127.0.0.1), and the upstream (Hypercorn)
/// listens on the peer's 198.51.100.10:80. A second access log writes JSON to the proxy's standard output.
@Suite(.serialized) struct AccessLogTests {
    /// Istio's default format, escaped for the JSON bootstrap.
    static let istioFormat = #"[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"#

    static func bootstrap(logPath: String) -> String {
        """
        {
          "node": {"id": "sidecar~192.0.2.1~app.default~default.svc.cluster.local"},
          "static_resources": {
            "listeners": [
              {"name": "app_8080", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 8080}},
               "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                 "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                 "stat_prefix": "app_8080", "server_name": "istio-envoy", "codec_type": "HTTP1",
                 "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
                   "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                   "path": "\(logPath)", "log_format": {"text_format": "\(istioFormat)"}}},
                  {"name": "envoy.access_loggers.stdout", "typed_config": {
                   "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                   "log_format": {"json_format": {"method": "%REQ(:METHOD)%", "path": "%REQ(:PATH)%", "code": "%RESPONSE_CODE%",
                     "bytes_received": "%BYTES_RECEIVED%", "flags": "%RESPONSE_FLAGS%", "sni": "%REQUESTED_SERVER_NAME%",
                     "line": "%REQ(:METHOD)% %RESPONSE_CODE%"}}}}],
                 "route_config": {"name": "8080", "virtual_hosts": [{"name": "app", "domains": ["app.local"], "routes": [
                   {"name": "to-down", "match": {"prefix": "/down"}, "route": {"cluster": "down", "timeout": "0s"}},
                   {"name": "to-v1", "match": {"prefix": "/"}, "route": {"cluster": "v1", "timeout": "0s"}}]}]},
                 "http_filters": \(HTTPTrafficTests.router)}}]}]}
            ],
            "clusters": [
              \(HTTPTrafficTests.cluster("v1", "198.51.100.10", 80)),
              \(HTTPTrafficTests.cluster("down", "198.51.100.10", 81))
            ]
          }
        }
        """
    }

    /// One line of Istio's format, split into its 24 fields (nil if it is not such a line).
    static func fields(of line: String) -> [String]? {
        let pattern = #"^\[(\S+)\] "(\S+) (\S+) (\S+)" (\d+) (\S+) (\S+) (\S+) "([^"]*)" (\d+) (\d+) (\d+) (\S+) "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)" (\S+) (\S+) (\S+) (\S+) (\S+) (\S+)$"#
        let regex = try! NSRegularExpression(pattern: pattern)
        let range = NSRange(line.startIndex..., in: line)
        guard let match = regex.firstMatch(in: line, range: range) else { return nil }
        return (1..<match.numberOfRanges).map { String(line[Range(match.range(at: $0), in: line)!]) }
    }

    /// The x-request-id the upstream saw, from its JSON answer.
    static func requestIDSeenUpstream(_ body: String) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
              let headers = object["headers"] as? [String: Any] else { return nil }
        return headers["x-request-id"] as? String
    }

    /// The log's lines once there are at least `count` (the proxy writes them within a second or so).
    static func lines(of path: String, atLeast count: Int) -> [String] {
        var lines: [String] = []
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            lines = text.split(separator: "\n").map(String.init)
            if lines.count >= count { break }
            Thread.sleep(forTimeInterval: 0.2)
        }
        return lines
    }

    @Test func istiosFormatToAFileForA200A404AndA503UF() throws {
        try withSandbox { sandbox in
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-accesslog-\(sandbox.name)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            // The proxy runs as uid 1337: it creates the log in this directory.
            try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: directory.path)
            let logPath = directory.appendingPathComponent("access.log").path
            let bootstrap = directory.appendingPathComponent("bootstrap.json")
            try Self.bootstrap(logPath: logPath).write(to: bootstrap, atomically: true, encoding: .utf8)

            let upstream = HTTPTrafficTests.peers.appendingPathComponent("http_upstream.py").path
            let upstreamLog = directory.appendingPathComponent("upstream.log").path
            let server = try NamespacedProcess(["python3", upstream, "--listen", "198.51.100.10:80", "--name", "v1"],
                                               in: sandbox.peer, logPath: upstreamLog)
            defer { server.stop() }
            guard server.waitUntil(seconds: 20, { server.log.contains("READY") }) else {
                throw SandboxError("upstream did not start: \(server.log)")
            }
            let proxy = try ProxyProcess(in: sandbox, arguments: ["--config", bootstrap.path])
            defer { proxy.stop() }

            func curl(_ arguments: [String], host: String = "app.local") throws -> ChildProcess.Result {
                try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(sandbox.name)-pod", "curl", "-sS", "--max-time", "10",
                                                      "-H", "Host: \(host)", "-A", "capstan-test/1"] + arguments)
            }
            let ok = try curl(["--data-binary", "12345", "http://127.0.0.1:8080/hello?x=1"])
            #expect(ok.status == 0, "\(ok)")
            let generatedID = Self.requestIDSeenUpstream(ok.standardOutput)
            #expect(generatedID != nil, "the upstream saw a generated x-request-id: \(ok.standardOutput)")
            let notFound = try curl(["-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                                     "-H", "x-request-id: id-404", "http://127.0.0.1:8080/missing"], host: "nowhere")
            #expect(notFound.standardOutput == "404 0", "\(notFound)")
            let refused = try curl(["-o", "/dev/null", "-w", "%{http_code} %{size_download}", "-H", "x-request-id: id-503",
                                    "http://127.0.0.1:8080/down/there"])
            #expect(refused.standardOutput.hasPrefix("503 "), "\(refused)")

            let lines = Self.lines(of: logPath, atLeast: 3)
            try #require(lines.count == 3, "three lines: \(lines); proxy: \(proxy.errorOutput)")
            let parsed = lines.compactMap(Self.fields(of:))
            try #require(parsed.count == 3, "Istio's format: \(lines)")
            // Each connection's line is buffered on its event loop: lines of different loops may come in
            // any order within the flush interval, so they are found by path.
            func line(_ path: String) throws -> [String] { try #require(parsed.first { $0[2] == path }, "\(path) in \(lines)") }
            let first = try line("/hello?x=1"), second = try line("/missing"), third = try line("/down/there")

            // [start] "method path protocol" code flags details termination "failure" received sent duration
            // service-time "xff" "agent" "id" "authority" "upstream" cluster upstream-local downstream-local
            // downstream-remote sni route
            #expect(first[0].range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"#, options: .regularExpression) != nil, "\(first[0])")
            #expect(Array(first[1...7]) == ["POST", "/hello?x=1", "HTTP/1.1", "200", "-", "via_upstream", "-"])
            #expect(first[8] == "-")
            #expect(first[9] == "5", "the request body")
            #expect(first[10] == "\(ok.standardOutput.utf8.count)", "the response body")
            #expect(Int(first[11]) != nil)
            #expect(first[13] == "-", "no x-forwarded-for without use_remote_address")
            #expect(first[14] == "capstan-test/1")
            #expect(first[15] == generatedID, "the x-request-id the upstream saw")
            #expect(first[16] == "app.local")
            #expect(first[17] == "198.51.100.10:80")
            #expect(first[18] == "v1")
            #expect(first[19].hasPrefix("192.0.2.1:"), "the upstream connection's local address: \(first[19])")
            #expect(first[20] == "127.0.0.1:8080")
            #expect(first[21].hasPrefix("127.0.0.1:"))
            #expect(Array(first[22...23]) == ["-", "to-v1"])

            #expect(Array(second[1...7]) == ["GET", "/missing", "HTTP/1.1", "404", "NR", "route_not_found", "-"])
            #expect(Array(second[9...10]) == ["0", "0"])
            #expect(Array(second[14...18]) == ["capstan-test/1", "id-404", "nowhere", "-", "-"])
            #expect(second[19] == "-")
            #expect(Array(second[22...23]) == ["-", "-"])

            #expect(Array(third[1...7]) == ["GET", "/down/there", "HTTP/1.1", "503", "UF",
                                            "upstream_reset_before_response_started{connection_failure}", "-"])
            #expect(third[10] == String(refused.standardOutput.dropFirst(4)), "the local reply's body")
            #expect(Array(third[15...18]) == ["id-503", "app.local", "198.51.100.10:81", "down"])
            #expect(third[19] == "-", "no upstream connection")
            #expect(third[23] == "to-down")

            // The same requests on the proxy's standard output, in JSON: numbers stay numbers, unknown is null.
            let json = #"{"bytes_received":5,"code":200,"flags":"-","line":"POST 200","method":"POST","path":"/hello?x=1","sni":null}"#
            #expect(proxy.waitUntil(seconds: 5) { proxy.errorOutput.contains(json) }, "\(proxy.errorOutput)")
            #expect(proxy.errorOutput.contains(#"{"bytes_received":0,"code":503,"flags":"UF","line":"GET 503","method":"GET","path":"/down/there","sni":null}"#))

            // What a loop still holds when the proxy stops is written before it exits.
            let last = try curl(["-o", "/dev/null", "-w", "%{http_code}", "-H", "x-request-id: id-last", "http://127.0.0.1:8080/last"])
            #expect(last.standardOutput == "200", "\(last)")
            #expect(try proxy.admin("POST", "/quitquitquit").status == 200)
            #expect(proxy.waitForExit(seconds: 10) == 0, "\(proxy.errorOutput)")
            let all = Self.lines(of: logPath, atLeast: 4).compactMap(Self.fields(of:))
            #expect(all.contains { $0[2] == "/last" && $0[15] == "id-last" }, "\(all)")
        }
    }
}
