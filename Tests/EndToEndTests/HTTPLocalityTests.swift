import CapstanTestSupport
import Foundation
import Testing

/// Locality load balancing through a captured pod whose proxy is in region r1, zone za: the payments
/// workloads are v1 in r1/za (the pod's zone) and v2 in r1/zb, as their WorkloadEntries' `locality` says.
extension HTTPControlPlaneTests {
    static let zonedWorkloads = MeshDocuments.httpWorkloads
        .replacingOccurrences(of: "  address: 198.51.100.10\n", with: "  address: 198.51.100.10\n  locality: r1/za\n")
        .replacingOccurrences(of: "  address: 198.51.100.99\n", with: "  address: 198.51.100.99\n  locality: r1/zb\n")

    /// The zoned workloads with `trafficPolicy` (YAML lines indented under it) on the DestinationRule.
    static func zonedWorkloads(trafficPolicy: String) -> String {
        zonedWorkloads.replacingOccurrences(of: "spec:\n  host: payments\n  subsets:", with: """
            spec:
              host: payments
              trafficPolicy:
            \(trafficPolicy)
              subsets:
            """)
    }

    /// istiod's default with `outlierDetection`: the pod's own zone first (priority 0), the other zone of
    /// its region next (priority 1). Every request goes to v1 until v1 fails twice and is ejected; then
    /// every request fails over to v2, in the other zone.
    @Test func trafficStaysInTheZoneUntilItsEndpointIsEjectedThenFailsOver() throws {
        let workloads = Self.zonedWorkloads(trafficPolicy: "    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}")
        #expect(workloads.contains("locality: r1/zb") && workloads.contains("outlierDetection"))
        try withHTTPMesh(["workloads.yaml": workloads], proxyLocality: "r1/za") { mesh in
            let proxy = try #require(mesh.proxy)
            let cluster = "outbound|9080||payments.shop.svc.cluster.local"
            #expect(waitFor("v1", mesh), "\(proxy.errorOutput)")
            let (before, _) = try requests(mesh, count: 60)
            #expect(before == Array(repeating: "v1", count: 60), "all in the pod's zone: \(before)")
            let hosts = try proxy.admin("GET", "/clusters").body
            #expect(hosts.contains("\(cluster)::198.51.100.10:8080::priority::0") && hosts.contains("\(cluster)::198.51.100.10:8080::zone::za"), "\(hosts)")
            #expect(hosts.contains("\(cluster)::198.51.100.99:8080::priority::1") && hosts.contains("\(cluster)::198.51.100.99:8080::zone::zb"), "\(hosts)")
            // The assignment in force, as EDS gave it for this proxy's locality.
            let eds = try proxy.admin("GET", "/config_dump?include_eds").body.replacingOccurrences(of: " ", with: "").replacingOccurrences(of: "\n", with: "")
            #expect(eds.contains(#""zone":"zb""#) && eds.contains(#""priority":1"#), "\(eds.prefix(3000))")

            // v1 answers 503 (the path asks for it) until it is ejected.
            let ejected = proxy.waitUntil(seconds: 20) {
                _ = try? ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(mesh.sandbox.name)-pod", "curl", "-sS", "-o", "/dev/null",
                                                          "--max-time", "5", Self.service + "/status/503"])
                return (try? mesh.stat("cluster.\(cluster).outlier_detection.ejections_active")) == "1"
            }
            #expect(ejected, "\(proxy.errorOutput)")
            #expect(try proxy.admin("GET", "/clusters").body.contains("\(cluster)::198.51.100.10:8080::health_flags::/failed_outlier_check"))
            let (after, _) = try requests(mesh, count: 60)
            #expect(after == Array(repeating: "v2", count: 60), "all failed over to the other zone: \(after)")
        }
    }

    /// `distribute` from the pod's zone: 80 % to its own zone, 20 % to the other.
    @Test func distributeSplitsTrafficEightyTwentyByZone() throws {
        let workloads = Self.zonedWorkloads(trafficPolicy: """
                loadBalancer:
                  localityLbSetting:
                    distribute:
                    - from: r1/za/*
                      to: {"r1/za/*": 80, "r1/zb/*": 20}
            """)
        try withHTTPMesh(["workloads.yaml": workloads], proxyLocality: "r1/za") { mesh in
            let proxy = try #require(mesh.proxy)
            #expect(waitFor("v1", mesh), "\(proxy.errorOutput)")
            let count = 1000
            let (upstreams, _) = try requests(mesh, count: count)
            let v1 = upstreams.filter { $0 == "v1" }.count
            let v2 = upstreams.filter { $0 == "v2" }.count
            #expect(v1 + v2 == count)
            // 80 % ± 4 points over 1,000 requests (the binomial's standard deviation is 1.3 points).
            #expect((760...840).contains(v1), "v1 \(v1), v2 \(v2)")
        }
    }

    /// `retryRemoteLocalities` (istiod's `previous_priorities`, updated every second attempt): v1, in the
    /// pod's zone (priority 0), answers every request 503; v2 is in the other zone (priority 1), where
    /// nothing goes while v1 is in (its failures never eject it here). Under /remote, the first retry still
    /// goes to priority 0 (one host tried is below the update frequency, and v1 is its only host) and the
    /// second leaves priority 0 out: v2 answers, after exactly two failures at v1. Elsewhere, without the
    /// flag, all three attempts go to v1 and the client gets its 503.
    @Test func retryRemoteLocalitiesSendsTheSecondRetryToTheOtherPriority() throws {
        let workloads = Self.zonedWorkloads(trafficPolicy: "    outlierDetection: {consecutive5xxErrors: 1000, interval: 60s, baseEjectionTime: 30s}")
        let routes = MeshDocuments.httpVirtualService("""
              - match:
                - uri: {prefix: /remote}
                retries: {attempts: 2, retryRemoteLocalities: true}
                route:
                - destination: {host: payments}
              - route:
                - destination: {host: payments}
            """)
        try withHTTPMesh(["workloads.yaml": workloads, "routes.yaml": routes], upstreamArguments: ["v1": ["--fail-status", "503"]],
                         proxyLocality: "r1/za") { mesh in
            let proxy = try #require(mesh.proxy)
            let cluster = "outbound|9080||payments.shop.svc.cluster.local"
            #expect(waitFor("v2", mesh, path: "/remote/ready"), "\(proxy.errorOutput)")
            let hosts = try proxy.admin("GET", "/clusters").body
            #expect(hosts.contains("\(cluster)::198.51.100.10:8080::priority::0") && hosts.contains("\(cluster)::198.51.100.99:8080::priority::1"),
                    "\(hosts)")
            let v1Log = "/tmp/\(mesh.sandbox.name)-upstream-v1.log"
            func failuresAtV1() -> Int {
                ((try? String(contentsOfFile: v1Log, encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.hasPrefix("FAILED ") }.count
            }
            let before = failuresAtV1()
            let (upstreams, _) = try requests(mesh, path: "/remote/pay", count: 20)
            #expect(upstreams == Array(repeating: "v2", count: 20), "\(upstreams)")
            #expect(failuresAtV1() - before == 40, "two attempts at v1 before each failover")
            #expect((try mesh.stat("cluster.\(cluster).outlier_detection.ejections_active") ?? "0") == "0")
            // Without the flag: the default policy's three attempts all go to v1.
            let (statuses, _) = try self.statuses(mesh, path: "/pay", count: 5)
            #expect(statuses == [503: 5], "\(statuses)")
        }
    }
}
