import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// Istio's CA API on the wire, both ways, against peers we did not write: Python programs compiled from the
/// transcription of Istio's published ca.proto (Peers/istio-api/), never from the repository's proto/.
/// - `capstan agent` against a Python CA, in each of the three answer shapes Istio's API allows;
/// - a Python client, doing what pilot-agent does, against `capstan control-plane`'s CA.
@Suite(.serialized) struct IstioCAInteropTests {
    static let peers = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers").path
    static let caAddress = IPAddress("192.0.2.3")!

    /// Starts the Python CA (`Peers/ca_server.py`) in its own pod on 192.0.2.3:15012, issuing the client's identity.
    static func startPythonCA(_ mesh: MeshCluster, form: String, extra: [String] = []) throws -> (process: NamespacedProcess, state: String) {
        let pod = try mesh.addPod("python-ca", address: caAddress)
        let state = try mesh.makeDirectory("python-ca")
        let ca = try NamespacedProcess(["/usr/bin/env", "python3", "\(peers)/ca_server.py", "\(caAddress):15012", state,
                                        MeshCluster.token(for: "client"), AgentTests.clientID, "--form", form] + extra,
                                       in: pod.namespace, logPath: "\(state)/ca.log")
        pod.processes.append(ca)
        guard ca.waitUntil(seconds: 20, { ca.log.contains("listening") }) else { throw SandboxError("the Python CA did not start: \(ca.log)") }
        return (ca, state)
    }

    /// The client workload, asking the Python CA for its certificate (plaintext, as to a CA on a trusted network).
    static func clientOfPythonCA(_ mesh: MeshCluster, environment: [String: String] = [:]) throws -> MeshCluster.Pod {
        try mesh.addWorkload("client", address: AgentTests.client, serviceAccount: "client", appPort: nil, environment: [
            "CA_ADDR": "\(caAddress):15012", "CAPSTAN_PLAINTEXT_CONTROL_PLANE": "true",
            "PROXY_CONFIG": #"{"discoveryAddress": "\#(MeshCluster.xdsAddress)"}"#,
        ].merging(environment) { $1 })
    }

    static func certificateCount(_ path: String) throws -> Int {
        try String(contentsOfFile: path, encoding: .utf8).components(separatedBy: "-----BEGIN CERTIFICATE-----").count - 1
    }

    /// istiod's form (one certificate an entry, the roots last), the older concatenated form, and the newer
    /// `root_cert` form: each gives the agent the leaf and intermediate as its chain and both roots as its trust
    /// bundle, and the agent becomes ready with it.
    @Test(arguments: ["istiod", "concatenated", "roots"])
    func theAgentReadsEachFormOfIstiosAnswer(form: String) throws {
        try withMeshCluster { mesh in
            try mesh.startControlPlane(files: AgentTests.meshFiles())
            let (_, state) = try Self.startPythonCA(mesh, form: form)
            let client = try Self.clientOfPythonCA(mesh)
            #expect(try client.http("GET", "/healthz/ready", port: 15021).status == 200)
            let requests = try String(contentsOfFile: "\(state)/requests.jsonl", encoding: .utf8)
            #expect(requests.contains(#""form": "\#(form)""#), "\(requests)")
            let certificates = "\(mesh.directory)/client/certs"
            #expect(try Self.certificateCount("\(certificates)/cert-chain.pem") == 2, "leaf and intermediate, no root")
            #expect(try Self.certificateCount("\(certificates)/root-cert.pem") == 2, "both roots of the bundle")
            let verify = try ChildProcess.run("/usr/bin/openssl", ["verify", "-CAfile", "\(certificates)/root-cert.pem",
                                                                   "-untrusted", "\(certificates)/cert-chain.pem", "\(certificates)/cert-chain.pem"])
            #expect(verify.status == 0, "\(verify)")
        }
    }

    /// A CA that answers once and is down afterwards: the agent's request is Istio's, and the agent keeps
    /// serving the certificate it has while retrying, until it expires.
    @Test func aCAThatGoesDownAtRotation() throws {
        try withMeshCluster { mesh in
            try mesh.startControlPlane(files: AgentTests.meshFiles())
            let (_, state) = try Self.startPythonCA(mesh, form: "istiod", extra: ["--fail-after", "1"])
            let client = try Self.clientOfPythonCA(mesh, environment: ["SECRET_TTL": "5s"])
            let agent = client.processes.last!
            let requests = try String(contentsOfFile: "\(state)/requests.jsonl", encoding: .utf8)
            #expect(requests.contains(#""authorization_ok": true"#), "\(requests)")
            #expect(requests.contains(#""csr_sans": ["\#(AgentTests.clientID)"]"#), "\(requests)")
            #expect(requests.contains(#""validity_duration": 5"#), "\(requests)")
            // The rotation (after about 2.5 s) fails; the agent retries and stays ready while the certificate lasts.
            #expect(agent.waitUntil(seconds: 4) { agent.log.contains("certificate request failed, retrying") }, "\(agent.log)")
            #expect(try client.http("GET", "/healthz/ready", port: 15021).status == 200)
            // Once it expires it is withdrawn: not ready, saying why.
            #expect(agent.waitUntil(seconds: 5) { (try? client.http("GET", "/healthz/ready", port: 15021))?.status == 503 })
            #expect(agent.log.contains("expired before a new one was issued"), "\(agent.log)")
        }
    }

    /// What a pilot-agent built from Istio's API receives from `capstan control-plane`, plugged in with an
    /// intermediate and a two-root bundle (Istio's cacerts layout, made by pyca/cryptography): istiod's form,
    /// one certificate an entry, each ending in a newline, [leaf, intermediate, root, next root], no
    /// `root_cert`; the leaf names the token's identity, not the CSR's, and each certificate is issued by
    /// the next up to the root.
    @Test func aClientBuiltFromIstiosAPIGetsIstiodsAnswer() throws {
        try withMeshCluster { mesh in
            let cacerts = try ChildProcess.run("/usr/bin/env", ["python3", "\(Self.peers)/ca_client.py", "cacerts", "\(mesh.directory)/ca"])
            try #require(cacerts.status == 0, "\(cacerts)")
            try mesh.startControlPlane(files: AgentTests.meshFiles())
            let pod = try mesh.addPod("pilot-agent", address: AgentTests.client)
            let client = try NamespacedProcess(["/usr/bin/env", "python3", "\(Self.peers)/ca_client.py", "request", MeshCluster.secureAddress,
                                                "\(mesh.directory)/root-cert.pem", MeshCluster.token(for: "client")],
                                               in: pod.namespace, logPath: "\(mesh.directory)/ca-client.log")
            pod.processes.append(client)
            try #require(client.waitForExit(seconds: 30) == 0, "\(client.log)")
            let line = try #require(client.log.split(separator: "\n").last { $0.hasPrefix("{") }, "\(client.log)")
            let answer = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect(answer["entries"] as? Int == 4, "\(answer)")
            #expect(answer["certificates_per_entry"] as? [Int] == [1, 1, 1, 1], "\(answer)")
            #expect(answer["entries_end_with_newline"] as? Bool == true, "\(answer)")
            #expect(answer["has_root_cert"] as? Bool == false, "\(answer)")
            #expect(answer["leaf_key_matches"] as? Bool == true, "\(answer)")
            #expect(answer["leaf_uris"] as? [String] == [AgentTests.clientID], "\(answer)")
            #expect(answer["self_signed"] as? [Bool] == [false, false, true, true], "\(answer)")
            #expect((answer["issued_by_next"] as? [Any]).map { $0.allSatisfy { $0 as? Bool == true } && $0.count == 2 } == true, "\(answer)")
        }
    }
}
