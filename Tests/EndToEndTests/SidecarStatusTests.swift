import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// `capstan status --network-namespace` in a mesh (``MeshCluster``): for a pod whose agent answers, the
/// Sidecar section agrees with what the agent and the proxy say on their own endpoints and with the
/// certificate the agent wrote; for a pod without an agent, one line says so and nothing else changes.
@Suite(.serialized) struct SidecarStatusTests {
    static let client = IPAddress("192.0.2.1")!
    static let outsider = IPAddress("192.0.2.50")!
    static let clientID = "spiffe://cluster.local/ns/shop/sa/client"

    func status(_ pod: MeshCluster.Pod, _ extra: [String] = []) throws -> ChildProcess.Result {
        try ChildProcess.run(Sandbox.capstanExecutable, ["status", "--network-namespace", pod.namespace.path!] + extra)
    }

    /// `version_info` of each xDS service in the proxy's own `/config_dump?include_eds`, read here with
    /// Foundation's JSON parser.
    static func versions(configDump text: String) throws -> [String: String] {
        let dump = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        var versions: [String: String] = [:]
        for config in try #require(dump["configs"] as? [[String: Any]]) {
            switch config["@type"] as? String {
            case "type.googleapis.com/envoy.admin.v3.ClustersConfigDump": versions["CDS"] = config["version_info"] as? String
            case "type.googleapis.com/envoy.admin.v3.ListenersConfigDump": versions["LDS"] = config["version_info"] as? String
            case "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump":
                versions["EDS"] = (config["dynamic_endpoint_configs"] as? [[String: Any]])?.first?["version_info"] as? String
            case "type.googleapis.com/envoy.admin.v3.SecretsConfigDump":
                versions["SDS"] = (config["dynamic_active_secrets"] as? [[String: Any]])?.first?["version_info"] as? String
            default: continue
            }
        }
        return versions
    }

    @Test func aPodWithAnAgentShowsItsIdentityXDSVersionsProxyStateAndListeners() throws {
        try withMeshCluster { mesh in
            try mesh.startControlPlane(files: AgentTests.meshFiles())
            let pod = try mesh.addWorkload("client", address: Self.client, serviceAccount: "client", appPort: nil)

            // What the pieces say on their own endpoints.
            let versions = try Self.versions(configDump: try pod.http("GET", "/config_dump?include_eds", port: 15000).body)
            for service in ["CDS", "EDS", "LDS", "SDS"] {
                #expect(versions[service]?.isEmpty == false, "\(service) has no accepted version: \(versions)")
            }
            let listeners = try pod.http("GET", "/listeners", port: 15000).body.split(separator: "\n").map { line in
                let separator = line.range(of: "::")!
                return (name: String(line[..<separator.lowerBound]), address: String(line[separator.upperBound...]))
            }
            #expect(listeners.contains { $0.address.hasSuffix(":15001") } && listeners.contains { $0.address.hasSuffix(":15006") })
            let serial = try ChildProcess.run("/usr/bin/openssl", ["x509", "-in", "\(mesh.directory)/client/certs/cert-chain.pem",
                                                                   "-noout", "-serial"])
            let expectedSerial = try #require(serial.standardOutput.split(separator: "=").last).trimmingCharacters(in: .whitespacesAndNewlines).lowercased()

            let text = try status(pod)
            #expect(text.status == 0, "\(text)")
            let output = text.standardOutput
            #expect(output.contains("Sidecar  (agent :15020, proxy admin :15000)"), "\(output)")
            #expect(output.contains("readiness  ready"), "\(output)")
            #expect(output.contains("identity   \(Self.clientID)"), "\(output)")
            #expect(output.contains("serial \(expectedSerial), expires "), "\(output)")
            #expect(output.contains("upstream connected; accepted CDS \(versions["CDS"] ?? "?"), EDS \(versions["EDS"] ?? "?"), LDS \(versions["LDS"] ?? "?"), SDS \(versions["SDS"] ?? "?")"), "\(output)")
            #expect(output.contains("proxy      LIVE, 0 restarts"), "\(output)")
            for listener in listeners {
                #expect(output.range(of: "\(listener.name) +\(NSRegularExpression.escapedPattern(for: listener.address))\n",
                                     options: .regularExpression) != nil, "\(listener) in \(output)")
            }
            #expect(!output.contains("unknown"), "\(output)")

            let json = try status(pod, ["-o", "json"])
            #expect(json.status == 0)
            let document = try #require(try JSONSerialization.jsonObject(with: Data(json.standardOutput.utf8)) as? [String: Any])
            let sidecar = try #require(document["sidecar"] as? [String: Any], "\(json.standardOutput)")
            #expect(sidecar["agentAnswering"] as? Bool == true)
            #expect(sidecar["ready"] as? Bool == true)
            #expect(sidecar["proxyState"] as? String == "LIVE")
            #expect(sidecar["xdsUpstreamConnected"] as? Bool == true)
            #expect(sidecar["proxyRestarts"] as? Int == 0)
            #expect(sidecar["acceptedVersions"] as? [String: String] == versions)
            let certificate = try #require(sidecar["certificate"] as? [String: Any])
            #expect(certificate["identity"] as? String == Self.clientID)
            #expect(certificate["serialNumber"] as? String == expectedSerial)
            let secondsLeft = try #require(certificate["secondsLeft"] as? Int)
            #expect(secondsLeft > 3600 && secondsLeft <= 24 * 3600, "Istio's default certificate lives 24 hours: \(secondsLeft)")
            let listed = try #require(sidecar["listeners"] as? [[String: String]])
            #expect(listed.map { $0["name"] ?? "" } == listeners.map(\.name))
            #expect(listed.map { $0["address"] ?? "" } == listeners.map(\.address))
            #expect(sidecar["problems"] == nil, "\(sidecar)")
        }
    }

    @Test func anAgentWithoutItsProxyYetShowsWhyItIsNotReadyAndWhatIsUnknown() throws {
        try withMeshCluster { mesh in
            // The control plane goes away before the pod starts: no certificate, so no proxy.
            let istiod = try mesh.startControlPlane(files: AgentTests.meshFiles())
            for process in istiod.processes { process.stop() }
            let pod = try mesh.addWorkload("client", address: Self.client, serviceAccount: "client", appPort: nil, untilReady: false)
            let agent = pod.processes.last!
            #expect(agent.waitUntil(seconds: 5) { (try? pod.http("GET", "/healthz/ready", port: 15020))?.status == 503 })

            let started = Date()
            let text = try status(pod)
            #expect(Date().timeIntervalSince(started) < 5, "no reader may hang")
            #expect(text.status == 0, "the capture is intact; the sidecar does not change the exit status: \(text)")
            let output = text.standardOutput
            #expect(output.contains("readiness  not ready: proxy not LIVE (admin API not answering); LDS not accepted yet; CDS not accepted yet; no valid certificate"), "\(output)")
            #expect(output.contains("identity   unknown"), "\(output)")
            #expect(output.contains("upstream not connected; accepted versions unknown"), "\(output)")
            #expect(output.contains("proxy      unknown, 0 restarts"), "\(output)")
            #expect(output.contains("listeners  unknown"), "\(output)")
            #expect(output.contains("http://127.0.0.1:15000/certs: cannot connect"), "\(output)")

            let json = try status(pod, ["-o", "json"])
            let document = try #require(try JSONSerialization.jsonObject(with: Data(json.standardOutput.utf8)) as? [String: Any])
            let sidecar = try #require(document["sidecar"] as? [String: Any])
            #expect(sidecar["agentAnswering"] as? Bool == true)
            #expect(sidecar["ready"] as? Bool == false)
            #expect((sidecar["unmetConditions"] as? [String])?.contains("no valid certificate") == true, "\(sidecar)")
            #expect(sidecar["proxyState"] == nil && sidecar["listeners"] == nil && sidecar["certificate"] == nil)
            #expect((sidecar["problems"] as? [String])?.count == 4, "\(sidecar)")
        }
    }

    @Test func aPodWithoutAnAgentSaysSoAndKeepsItsExitStatus() throws {
        try withMeshCluster { mesh in
            let pod = try mesh.addPod("outsider", address: Self.outsider)
            try mesh.capture(pod)
            let text = try status(pod)
            #expect(text.status == 0, "\(text)")
            #expect(text.standardOutput.contains("state      intact"), "\(text)")
            let sidecarLines = text.standardOutput.split(separator: "\n").filter { $0.contains("Sidecar") }
            #expect(sidecarLines.count == 1 && sidecarLines[0].hasPrefix("Sidecar: no agent answering on :15020"), "\(text)")
            #expect(!text.standardOutput.contains("readiness"))

            let json = try status(pod, ["-o", "json"])
            #expect(json.status == 0)
            let document = try #require(try JSONSerialization.jsonObject(with: Data(json.standardOutput.utf8)) as? [String: Any])
            let sidecar = try #require(document["sidecar"] as? [String: Any])
            #expect(sidecar["agentAnswering"] as? Bool == false)
            #expect((sidecar["reason"] as? String)?.contains("refused") == true, "\(sidecar)")
            #expect(sidecar["proxyState"] == nil)

            // Without capture rules the exit status stays 1, sidecar or not.
            let bare = try mesh.addPod("bare", address: IPAddress("192.0.2.51")!)
            let missing = try status(bare)
            #expect(missing.status == 1)
            #expect(missing.standardOutput.contains("Sidecar: no agent answering on :15020"))
        }
    }
}
