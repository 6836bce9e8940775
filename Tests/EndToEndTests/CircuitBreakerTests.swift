import CapstanTestSupport
import Foundation
import Testing

/// DestinationRule `connectionPool` through a captured pod: the cluster's circuit breakers, from the
/// control plane to the proxy, against a real upstream (Hypercorn) and a real client (curl, in parallel).
@Suite(.serialized) struct CircuitBreakerEndToEndTests {
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
}
