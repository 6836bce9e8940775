import CapstanTestSupport
import Foundation
import Testing

/// Slow start through a captured pod: DestinationRule `warmupDurationSecs` becomes the round-robin
/// cluster's `slow_start_config`, and a workload that joins the service takes a share that grows over the
/// window instead of round robin's half at once.
extension HTTPControlPlaneTests {
    @Test func aWorkloadThatJoinsTheServiceWarmsUpOverTheWindow() throws {
        let window = 20.0
        let warm = MeshDocuments.httpWorkloads.replacingOccurrences(of: "spec:\n  host: payments\n  subsets:", with: """
            spec:
              host: payments
              trafficPolicy:
                loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: \(Int(window))s}
              subsets:
            """)
        // v2's WorkloadEntry outside the service (another app label) until it joins.
        let withoutV2 = warm.replacingOccurrences(of: "  address: 198.51.100.99\n  labels:\n    app: payments\n",
                                                  with: "  address: 198.51.100.99\n  labels:\n    app: elsewhere\n")
        #expect(warm != MeshDocuments.httpWorkloads && withoutV2 != warm)
        try withHTTPMesh(["workloads.yaml": withoutV2]) { mesh in
            let proxy = try #require(mesh.proxy)
            #expect(waitFor("v1", mesh), "\(proxy.errorOutput)")
            // v1 leaves its own window first (it joined when the proxy got its endpoints).
            Thread.sleep(forTimeInterval: window + 1)
            let joined = Date()
            try mesh.write("workloads.yaml", warm)
            #expect(waitFor("v2", mesh), "\(mesh.controlPlane?.log ?? "")")
            let (early, _) = try requests(mesh, count: 100)
            // At most v2's weight at the end of these requests, measured from before it could join (its
            // factor is at least 10 % and grows by 1/20 a second): far below round robin's 50.
            let factor = max(0.1, Date().timeIntervalSince(joined) / window)
            let bound = Int(100 * min(1, factor) / (1 + min(1, factor))) + 8
            let v2 = early.filter { $0 == "v2" }.count
            #expect(v2 >= 1 && v2 <= bound && bound < 50, "v2 took \(v2) of 100, bound \(bound)")
            // After the window, round robin's halves.
            Thread.sleep(forTimeInterval: max(0, window + 1 - Date().timeIntervalSince(joined)))
            let (late, _) = try requests(mesh, count: 100)
            #expect((48...52).contains(late.filter { $0 == "v2" }.count), "\(late)")
        }
    }
}
