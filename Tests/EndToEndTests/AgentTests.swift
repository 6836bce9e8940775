import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// `capstan agent` in sidecar-injected pods of a small mesh (``MeshCluster``): the control plane with its CA
/// at 192.0.2.2, a client at 192.0.2.1, `payments` v1 at 192.0.2.10 and v2 at 192.0.2.11, each captured by
/// `capstan init` and running the agent, which runs the proxy. The service's VIP is 198.51.100.200:9080.
@Suite(.serialized) struct AgentTests {
    static let client = IPAddress("192.0.2.1")!
    static let paymentsV1 = IPAddress("192.0.2.10")!
    static let paymentsV2 = IPAddress("192.0.2.11")!
    static let service = SocketAddress(MeshSandbox.serviceVIP, MeshSandbox.servicePort)
    static let clientID = "spiffe://cluster.local/ns/shop/sa/client"
    static let paymentsID = "spiffe://cluster.local/ns/shop/sa/payments"
    /// The subset the client's proxy sends the service's traffic to (`canary.yaml`: all of it to v1).
    static let paymentsCluster = "outbound|9080|v1|payments.shop.svc.cluster.local"

    /// The `payments` documents with the workloads on this cluster's pods, STRICT mTLS in the mesh.
    static func meshFiles(v1: Int = 100, v2: Int = 0, mode: String = "STRICT") -> [String: String] {
        let workloads = MeshDocuments.sidecarWorkloads(destinationTLS: "ISTIO_MUTUAL")
            .replacingOccurrences(of: "198.51.100.10", with: "\(paymentsV1)")
            .replacingOccurrences(of: "198.51.100.99", with: "\(paymentsV2)")
        return ["workloads.yaml": workloads, "canary.yaml": MeshDocuments.canary(v1: v1, v2: v2),
                "mtls.yaml": MeshDocuments.peerAuthentication(mode: mode)]
    }

    @Test func theWorkloadCertificateNamesThePodsIdentityAndTheAgentBecomesReady() throws {
        try withMeshCluster { mesh in
            try mesh.startControlPlane(files: Self.meshFiles())
            let pod = try mesh.addWorkload("client", address: Self.client, serviceAccount: "client")
            let ready = try pod.http("GET", "/healthz/ready", port: 15021)
            #expect(ready.status == 200)
            // OUTPUT_CERTS: Istio's three files, the key private; the leaf names the pod's identity.
            let certificates = "\(mesh.directory)/client/certs"
            var info = stat()
            #expect(stat("\(certificates)/key.pem", &info) == 0 && info.st_mode & 0o777 == 0o600)
            let leaf = try ChildProcess.run("/usr/bin/openssl", ["x509", "-in", "\(certificates)/cert-chain.pem", "-noout", "-ext", "subjectAltName"])
            #expect(leaf.standardOutput.contains("URI:\(Self.clientID)"), "\(leaf)")
            let verify = try ChildProcess.run("/usr/bin/openssl", ["verify", "-CAfile", "\(certificates)/root-cert.pem", "\(certificates)/cert-chain.pem"])
            #expect(verify.status == 0, "\(verify)")
            #expect(try mesh.metric("capstan_agent_ready", in: pod) == "1")
            #expect(try mesh.metric("capstan_agent_proxy_restarts_total", in: pod) == "0")
            // The merged endpoint carries the proxy's metrics after the agent's.
            #expect(try mesh.metric("envoy_listener_manager_lds_update_success", in: pod) == "1")
        }
    }

    @Test func mutualTLSBetweenTwoPodsWithBothIdentitiesVerified() throws {
        try withMeshCluster { mesh in
            try mesh.startControlPlane(files: Self.meshFiles())
            let payments = try mesh.addWorkload("payments-v1", address: Self.paymentsV1, serviceAccount: "payments")
            let client = try mesh.addWorkload("client", address: Self.client, serviceAccount: "client", appPort: nil)
            for _ in 0..<5 {
                let exchange = try EchoExchange.run(to: Self.service, from: client.namespace, payload: EchoExchange.payload(3000))
                #expect(exchange.intact, "\(exchange)")
                #expect(exchange.serverAddress.hasPrefix("\(Self.paymentsV1)"), "\(exchange.serverAddress)")
            }
            // Each side's proxy verified the other's SPIFFE ID.
            let inbound = try payments.http("GET", "/stats/prometheus", port: 15020).body
            #expect(inbound.contains(#"source_principal="\#(Self.clientID)""#), "\(inbound)")
            #expect(inbound.contains(#"connection_security_policy="mutual_tls""#))
            let outbound = try client.http("GET", "/stats/prometheus", port: 15020).body
            #expect(outbound.contains(#"destination_principal="\#(Self.paymentsID)""#), "\(outbound)")
        }
    }

    @Test func aPlaintextClientIsRefusedUnderStrictAndServedUnderPermissive() throws {
        try withMeshCluster { mesh in
            try mesh.startControlPlane(files: Self.meshFiles())
            let payments = try mesh.addWorkload("payments-v1", address: Self.paymentsV1, serviceAccount: "payments")
            // A pod without a sidecar talks straight to the workload's address.
            let outsider = try mesh.addPod("outsider", address: IPAddress("192.0.2.50")!)
            let target = SocketAddress(Self.paymentsV1, 80)
            #expect(throws: (any Error).self) { try EchoExchange.run(to: target, from: outsider.namespace, payload: [1, 2, 3]) }
            // Refused by the proxy's inbound listener for want of a plaintext filter chain, not lost on the way.
            #expect(try mesh.metric(#"envoy_listener_no_filter_chain_match{envoy_listener_address="0.0.0.0_15006"}"#, in: payments) == "1")

            try mesh.write("mesh/mtls.yaml", MeshDocuments.peerAuthentication(mode: "PERMISSIVE"))
            let served = mesh.pods["payments-v1"]!.processes.last!.waitUntil(seconds: 5) {
                (try? EchoExchange.run(to: target, from: outsider.namespace, payload: [1, 2, 3]))?.intact == true
            }
            #expect(served)
        }
    }

    @Test func aKilledProxyIsRestartedAndReadinessRecovers() throws {
        try withMeshCluster { mesh in
            try mesh.startControlPlane(files: Self.meshFiles())
            let pod = try mesh.addWorkload("client", address: Self.client, serviceAccount: "client", appPort: nil)
            let agent = pod.processes.last!
            let proxyPID = try #require(Self.proxyPID(of: agent))
            kill(proxyPID, SIGKILL)
            #expect(agent.waitUntil(seconds: 5) { (try? mesh.metric("capstan_agent_proxy_restarts_total", in: pod)) == "1" })
            try mesh.waitReady(pod, agent: agent)
            #expect(Self.proxyPID(of: agent) != proxyPID)
            #expect(agent.isRunning)
        }
    }

    @Test func sigtermLetsALongInboundRequestFinishRefusesNewInboundAndKeepsOutbound() throws {
        try withMeshCluster { mesh in
            try mesh.startControlPlane(files: Self.meshFiles())
            let payments = try mesh.addWorkload("payments-v1", address: Self.paymentsV1, serviceAccount: "payments",
                                                environment: ["MINIMUM_DRAIN_DURATION": "1s", "TERMINATION_DRAIN_DURATION_SECONDS": "20"])
            let client = try mesh.addWorkload("client", address: Self.client, serviceAccount: "client", appPort: nil)
            // Something outside the mesh that payments' application calls while it shuts down.
            let istiod = try #require(mesh.pods["istiod"])
            istiod.servers.append(try EchoServer(in: istiod.namespace, port: 80))
            let long = try ProbeSocket.tcp(.ipv4, in: client.namespace, uid: 1000, gid: 1000)
            try long.connect(to: Self.service, timeoutMilliseconds: 2000)
            try Self.readGreeting(long)

            let agent = payments.processes.last!
            agent.signal(SIGTERM)
            // New inbound connections are refused while the long one is open: payments' drained inbound
            // listener is closed, so the client's proxy has its upstream connect refused, not timed out.
            // (One caught in the closing listener's backlog is reset instead: then the next is refused.)
            let refusals = #"envoy_cluster_upstream_cx_connect_fail{envoy_cluster_name="\#(Self.paymentsCluster)"}"#
            #expect(agent.waitUntil(seconds: 5) {
                (try? EchoExchange.run(to: Self.service, from: client.namespace, payload: [1])) == nil
                    && (try? mesh.metric(refusals, in: client)) == "1"
            })
            #expect(try mesh.metric(#"envoy_cluster_upstream_cx_connect_timeout{envoy_cluster_name="\#(Self.paymentsCluster)"}"#, in: client) == "0")
            // ...outbound from the draining pod still works...
            let outbound = try EchoExchange.run(to: SocketAddress(MeshCluster.controlPlaneV4, 80), from: payments.namespace, payload: [7, 7, 7])
            #expect(outbound.intact)
            // ...and the long request completes.
            try long.sendAll(Array("finishing".utf8))
            #expect(try long.receive(count: 9, timeoutMilliseconds: 2000) == Array("finishing".utf8))
            #expect(agent.isRunning, "the agent waits while an inbound connection is open")
            long.shutdownOutput()
            #expect(agent.waitForExit(seconds: 10) == 0, "\(agent.log)")
        }
    }

    @Test func quitquitquitExitsAtOnce() throws {
        try withMeshCluster { mesh in
            try mesh.startControlPlane(files: Self.meshFiles())
            let pod = try mesh.addWorkload("client", address: Self.client, serviceAccount: "client", appPort: nil,
                                           environment: ["TERMINATION_DRAIN_DURATION_SECONDS": "30"])
            let agent = pod.processes.last!
            let started = Date()
            #expect(try pod.http("POST", "/quitquitquit", port: 15020).status == 200)
            #expect(agent.waitForExit(seconds: 5) == 0, "\(agent.log)")
            #expect(Date().timeIntervalSince(started) < 5)
        }
    }

    @Test func theCertificateRotatesBeforeExpiryWithTrafficUninterrupted() throws {
        try withMeshCluster { mesh in
            try mesh.startControlPlane(files: Self.meshFiles())
            // Four-second certificates: rotated after about two.
            let shortLived = ["SECRET_TTL": "4s"]
            try mesh.addWorkload("payments-v1", address: Self.paymentsV1, serviceAccount: "payments", environment: shortLived)
            let client = try mesh.addWorkload("client", address: Self.client, serviceAccount: "client", appPort: nil,
                                              environment: shortLived)
            let chains = ["\(mesh.directory)/client/certs/cert-chain.pem", "\(mesh.directory)/payments-v1/certs/cert-chain.pem"]
            let first = try chains.map { try String(contentsOfFile: $0, encoding: .utf8) }
            let long = try ProbeSocket.tcp(.ipv4, in: client.namespace, uid: 1000, gid: 1000)
            try long.connect(to: Self.service, timeoutMilliseconds: 2000)
            try Self.readGreeting(long)
            // After each of the client's rotations: the long connection still echoes and a new one is served.
            let agent = client.processes.last!
            for issued in 2...4 {
                #expect(agent.waitUntil(seconds: 10) { agent.log.components(separatedBy: "workload certificate issued").count - 1 >= issued },
                        "\(agent.log)")
                try long.sendAll(Array("tick \(issued)".utf8))
                #expect(try long.receive(count: 6, timeoutMilliseconds: 2000) == Array("tick \(issued)".utf8))
                #expect(try EchoExchange.run(to: Self.service, from: client.namespace, payload: [UInt8(issued)]).intact)
            }
            // Both sides rotated; by the client's fourth certificate (about six seconds in) both first
            // certificates have expired, so the traffic above outlived them.
            let rotated = chains.indices.map { (try? String(contentsOfFile: chains[$0], encoding: .utf8)) != first[$0] }
            #expect(rotated == [true, true], "client, payments")
            for (index, chain) in first.enumerated() {
                let path = "\(mesh.directory)/first-chain-\(index).pem"
                try chain.write(toFile: path, atomically: true, encoding: .utf8)
                let expired = try ChildProcess.run("/usr/bin/openssl", ["x509", "-checkend", "0", "-noout", "-in", path])
                #expect(expired.status == 1, "\(chains[index]): \(expired)")
            }
            #expect(!agent.log.contains("expired before a new one was issued"), "\(agent.log)")
        }
    }

    /// Reads an echo server's greeting line, up to its newline.
    static func readGreeting(_ socket: ProbeSocket) throws {
        while true {
            let byte = try socket.receive(count: 1, timeoutMilliseconds: 2000)
            guard !byte.isEmpty else { throw SandboxError("closed before the greeting ended") }
            if byte == [UInt8(ascii: "\n")] { return }
        }
    }

    /// The pid of the proxy child the agent started last, from its log ("proxy: started(pid: N, restart: R)").
    static func proxyPID(of agent: NamespacedProcess) -> Int32? {
        agent.log.split(separator: "\n").last { $0.contains("started(pid: ") }
            .flatMap { $0.split(separator: "started(pid: ").last?.split(separator: ",").first }
            .flatMap { Int32($0) }
    }
}
