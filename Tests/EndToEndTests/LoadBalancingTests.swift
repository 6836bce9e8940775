import CapstanTestSupport
import Foundation
import Testing

/// DestinationRule `connectionPool` and `loadBalancer` through a captured pod, from the control plane
/// to the proxy, against real upstreams (Hypercorn) and a real client (curl): circuit breakers and
/// consistent hashing.
@Suite(.serialized) struct LoadBalancingTests {
    let mesh = HTTPControlPlaneTests()

    /// Istio's circuit-breaking example: one connection and one pending request. Ten requests at once
    /// to subset v1 (whose server takes a second for each): one is served, one waits for the connection
    /// and is served after it, and the others are refused at once with 503 and `x-envoy-overloaded`.
    /// The proxy runs one event loop, so its one pool per endpoint holds the one connection (Envoy, like
    /// Capstan, lets each worker's pool open one, whatever `maxConnections` says).
    @Test func oneConnectionAndOnePendingRequestOverflowTheRest() throws {
        let workloads = MeshDocuments.httpWorkloads.replacingOccurrences(of: "  host: payments\n  subsets:", with: """
              host: payments
              trafficPolicy:
                connectionPool:
                  tcp: {maxConnections: 1}
                  http: {http1MaxPendingRequests: 1}
              subsets:
            """)
        #expect(workloads != MeshDocuments.httpWorkloads)
        let toV1 = MeshDocuments.httpVirtualService("""
              - route:
                - destination:
                    host: payments
                    subset: v1
            """)
        try mesh.withHTTPMesh(["workloads.yaml": workloads, "route.yaml": toV1], proxyArguments: ["--concurrency", "1"]) { sandbox in
            #expect(mesh.waitFor("v1", sandbox), "\(sandbox.proxy?.errorOutput ?? "")")
            let cluster = "cluster.outbound|9080|v1|payments.shop.svc.cluster.local"
            let connectionsBefore = Int(try sandbox.stat("\(cluster).upstream_cx_total") ?? "") ?? -1
            let result = try ChildProcess.run("/usr/sbin/ip", [
                "netns", "exec", "\(sandbox.sandbox.name)-pod", "curl", "-s", "-Z", "--parallel-immediate", "--parallel-max", "10",
                "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code} %header{x-envoy-overloaded}\\n",
                "\(HTTPControlPlaneTests.service)/delay/1000?n=[1-10]",
            ])
            let answers = result.standardOutput.split(separator: "\n").map { String($0) }
            #expect(answers.count == 10, "\(result)")
            let served = answers.filter { $0.hasPrefix("200 ") }.count
            let refused = answers.filter { $0 == "503 true" }.count
            #expect(served + refused == 10, "each request served, or refused as an overflow: \(answers)")
            #expect((1...3).contains(served) && refused >= 7, "\(answers)")
            // One HTTP/1.1 connection, so the server never had two of these requests at once.
            let connectionsAfter = Int(try sandbox.stat("\(cluster).upstream_cx_total") ?? "") ?? -1
            #expect(connectionsAfter - connectionsBefore <= 1, "one connection, kept alive: \(connectionsBefore) → \(connectionsAfter)")
            #expect(try sandbox.stat("\(cluster).upstream_rq_pending_overflow") == String(refused))
            #expect(try sandbox.stat("\(cluster).circuit_breakers.default.remaining_cx") == "0", "the connection is open")
        }
    }

    /// Istio's sticky sessions: `consistentHash: {httpHeaderName: end-user}` on the default route keeps a
    /// user on one endpoint for 100 requests, and spreads 100 users over both.
    @Test func aHeaderHashKeepsEachUserOnOneEndpointAndSpreadsUsers() throws {
        let workloads = MeshDocuments.httpWorkloads.replacingOccurrences(of: "  host: payments\n  subsets:", with: """
              host: payments
              trafficPolicy:
                loadBalancer:
                  consistentHash: {httpHeaderName: end-user}
              subsets:
            """)
        #expect(workloads != MeshDocuments.httpWorkloads)
        try mesh.withHTTPMesh(["workloads.yaml": workloads]) { sandbox in
            #expect(mesh.waitFor("v1", sandbox) || mesh.waitFor("v2", sandbox), "\(sandbox.proxy?.errorOutput ?? "")")
            /// Who answered each of `users` (one request each), on one curl's keep-alive connections.
            func answers(_ users: [String]) throws -> [String] {
                let config = users.map { user in
                    "url = \"\(HTTPControlPlaneTests.service)/\"\nheader = \"end-user: \(user)\"\noutput = /dev/null\nwrite-out = \"%header{x-upstream-name}\\n\"\n"
                }.joined(separator: "next\n")
                let file = FileManager.default.temporaryDirectory.appendingPathComponent("\(sandbox.sandbox.name)-curl.conf")
                try config.write(to: file, atomically: true, encoding: .utf8)
                defer { try? FileManager.default.removeItem(at: file) }
                let result = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(sandbox.sandbox.name)-pod", "curl", "-s", "--max-time", "30",
                                                                  "-K", file.path])
                let names = result.standardOutput.split(separator: "\n").map(String.init)
                guard names.count == users.count else { throw SandboxError("curl: \(result)") }
                return names
            }
            // Once the route with its hash policy is in force, jason stays put.
            let routed = sandbox.proxy?.waitUntil(seconds: 10) { (try? Set(answers(Array(repeating: "jason", count: 10))).count) == 1 } ?? false
            #expect(routed)
            let jason = try answers(Array(repeating: "jason", count: 100))
            #expect(Set(jason).count == 1, "one endpoint for one user: \(Set(jason))")
            let everyone = try answers((0..<100).map { "user-\($0)" })
            let shares = Dictionary(grouping: everyone, by: { $0 }).mapValues(\.count)
            #expect(Set(everyone) == ["v1", "v2"] && shares.values.allSatisfy { $0 >= 25 }, "\(shares)")
            #expect(try answers((0..<100).map { "user-\($0)" }) == everyone, "each user again where they were")
        }
    }
}
