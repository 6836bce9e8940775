import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// The seed's external service, `auth.external-service.com` (MESH_EXTERNAL, resolution DNS, HTTPS on
/// 443 and HTTP on 80 that a DestinationRule turns into TLS to 443), reached from a captured pod: the
/// pod's proxy looks the name up itself through the outside world's DNS (a dnsmasq in the peer
/// namespace, on 198.51.100.53, that knows only this name), and originates TLS to the server there
/// (198.51.100.99:443, a Python HTTPS server whose certificate a test CA signed, refusing any SNI
/// but the service's). Documentation addresses stand in for the internet, all inside the sandbox.
@Suite(.serialized) struct EgressTests {
    static let peers = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers")
    static let host = "auth.external-service.com"
    static let serverAddress = "198.51.100.99"
    static let dnsAddress = "198.51.100.53"

    /// The seed's documents; with `client` (certificate and key files), the rule's mode is MUTUAL.
    static func documents(caFile: String, client: (certificate: String, key: String)? = nil) -> String {
        let mode = client.map { "MUTUAL\n        clientCertificate: \($0.certificate)\n        privateKey: \($0.key)" } ?? "SIMPLE"
        return seedDocuments(caFile: caFile).replacingOccurrences(of: "mode: SIMPLE", with: "mode: \(mode)")
    }

    static func seedDocuments(caFile: String) -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: external-auth
          namespace: default
        spec:
          hosts:
          - \(host)
          location: MESH_EXTERNAL
          ports:
          - number: 443
            name: https
            protocol: HTTPS
          - number: 80
            name: http
            protocol: HTTP
            targetPort: 443
          resolution: DNS
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: external-auth
          namespace: default
        spec:
          host: \(host)
          trafficPolicy:
            portLevelSettings:
            - port:
                number: 80
              tls:
                mode: SIMPLE
                sni: \(host)
                caCertificates: \(caFile)
        """
    }

    /// The sandbox with the outside world (dnsmasq, the HTTPS server) in its peer, the pod's
    /// resolv.conf pointing at that dnsmasq (`ip netns exec` mounts /etc/netns/POD/resolv.conf), the
    /// seed's documents served to the pod's proxy.
    /// `mutual`: the server requires a client certificate, which the rule's MUTUAL mode gives the proxy.
    func withExternalService<T>(files: [String: String] = [:], mutual: Bool = false,
                                _ body: (MeshSandbox, NamespacedProcess, NamespacedProcess) throws -> T) throws -> T {
        try withSandbox { sandbox in
            let caFile = "/tmp/\(sandbox.name)-external-ca.pem"
            let client = mutual ? (certificate: "/tmp/\(sandbox.name)-client.pem", key: "/tmp/\(sandbox.name)-client-key.pem") : nil
            defer {
                if let client {
                    try? FileManager.default.removeItem(atPath: client.certificate)
                    try? FileManager.default.removeItem(atPath: client.key)
                }
            }
            let resolvConfDirectory = "/etc/netns/\(sandbox.name)-pod"
            let hadNetnsDirectory = FileManager.default.fileExists(atPath: "/etc/netns")
            defer {
                try? FileManager.default.removeItem(atPath: caFile)
                try? FileManager.default.removeItem(atPath: "/tmp/\(sandbox.name)-dnsmasq.log")
                try? FileManager.default.removeItem(atPath: "/tmp/\(sandbox.name)-tls-origin.log")
                try? FileManager.default.removeItem(atPath: resolvConfDirectory)
                // /etc/netns as it was: removed if this test made it and nothing else is in it.
                if !hadNetnsDirectory { rmdir("/etc/netns") }
            }
            try FileManager.default.createDirectory(atPath: resolvConfDirectory, withIntermediateDirectories: true)
            try "nameserver \(Self.dnsAddress)\noptions timeout:1 attempts:2\n"
                .write(toFile: "\(resolvConfDirectory)/resolv.conf", atomically: true, encoding: .utf8)
            let dns = try NamespacedProcess(["/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                                             "--listen-address=\(Self.dnsAddress)", "--bind-interfaces", "--port=53", "--log-queries",
                                             "--log-facility=-", "--pid-file=", "--user=root", "--local-ttl=2",
                                             "--host-record=\(Self.host),\(Self.serverAddress)"],
                                            in: sandbox.peer, logPath: "/tmp/\(sandbox.name)-dnsmasq.log")
            defer { dns.stop() }
            let server = try NamespacedProcess(["python3", Self.peers.appendingPathComponent("tls_origin_server.py").path,
                                                "--listen", "\(Self.serverAddress):443", "--host", Self.host, "--ca-out", caFile]
                                                + (client.map { ["--client-cert-out", $0.certificate, "--client-key-out", $0.key] } ?? []),
                                               in: sandbox.peer, logPath: "/tmp/\(sandbox.name)-tls-origin.log")
            defer { server.stop() }
            guard server.waitUntil(seconds: 20, { server.log.contains("READY") }) else {
                throw SandboxError("the HTTPS server did not start: \(server.log)")
            }
            guard dns.waitUntil(seconds: 10, { dns.log.contains("started") }) else {
                throw SandboxError("dnsmasq did not start: \(dns.log)")
            }
            let mesh = try MeshSandbox(sandbox, files: files.merging(["external.yaml": Self.documents(caFile: caFile, client: client)]) { given, _ in given })
            try mesh.startControlPlane()
            try mesh.startProxy()
            return try body(mesh, dns, server)
        }
    }

    /// `curl` from the pod; the application is given the address (`--resolve`), so every DNS query
    /// dnsmasq sees is the proxy's.
    func curl(_ mesh: MeshSandbox, _ url: String) throws -> ChildProcess.Result {
        try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(mesh.sandbox.name)-pod", "curl", "-sS", "--max-time", "10",
                                              "--resolve", "\(Self.host):80:\(Self.serverAddress)", url])
    }

    @Test func aPodReachesTheSeedsExternalServiceThroughTLSTheSidecarOriginates() throws {
        try withExternalService { mesh, dns, server in
            let cluster = "cluster.outbound|80||\(Self.host)"
            var answer: ChildProcess.Result?
            let reached = mesh.proxy?.waitUntil(seconds: 15) {
                answer = try? curl(mesh, "http://\(Self.host)/token")
                return answer?.standardOutput.contains("\"path\": \"/token\"") == true
            } ?? false
            #expect(reached, "\(answer.map(String.init(describing:)) ?? "")\nproxy: \(mesh.proxy?.errorOutput ?? "")\nserver: \(server.log)\ndns: \(dns.log)")
            let body = try #require(answer?.standardOutput)
            let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
            // The server saw the SNI the DestinationRule names, over TLS it verified against the test CA.
            #expect(json?["sni"] as? String == Self.host, "\(body)")
            #expect(json?["host"] as? String == Self.host, "\(body)")
            // The proxy, not the application, looked the name up, through the sandbox's DNS.
            #expect(dns.log.contains("query[A] \(Self.host) from 192.0.2.1"), "\(dns.log)")
            #expect(Int(try mesh.stat("\(cluster).update_success") ?? "") ?? 0 >= 1)
            #expect(try mesh.stat("\(cluster).update_failure") == "0", "dnsmasq answered every lookup so far")
            #expect(Int(try mesh.stat("\(cluster).upstream_cx_total") ?? "") ?? 0 >= 1)
            // Envoy's /clusters lists the address the name resolved to as the cluster's host.
            let hosts = try #require(mesh.proxy).admin("GET", "/clusters").body
            #expect(hosts.contains("outbound|80||\(Self.host)::\(Self.serverAddress):443::health_flags::healthy"), "\(hosts)")
            // The answer's TTL (2 s), not istiod's 60 s refresh rate, paces the proxy's lookups.
            let query = "query[A] \(Self.host) from 192.0.2.1"
            let requeried = dns.waitUntil(seconds: 10) { dns.log.components(separatedBy: query).count - 1 >= 3 }
            #expect(requeried, "\(dns.log)")
            // Without its DNS, the cluster keeps the address it had: requests still reach the server.
            dns.stop()
            let failed = mesh.proxy?.waitUntil(seconds: 15) { (Int((try? mesh.stat("\(cluster).update_failure")) ?? nil ?? "") ?? 0) >= 1 } ?? false
            let statsAfterFailure = try mesh.proxy?.admin("GET", "/stats").body ?? ""
            #expect(failed, "\(statsAfterFailure)")
            let kept = try curl(mesh, "http://\(Self.host)/after")
            #expect(kept.standardOutput.contains("\"path\": \"/after\""), "\(kept)")
            // The server refuses a handshake without its name: the proxy's SNI is what got through.
            let direct = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(mesh.sandbox.name)-peer", "curl", "-sSk", "--max-time", "5",
                                                               "--resolve", "other.example.com:443:\(Self.serverAddress)", "https://other.example.com/"])
            #expect(direct.status != 0, "\(direct)")
            #expect(server.log.contains("refused SNI 'other.example.com'"), "\(direct)\n\(server.log)")
        }
    }

    /// Istio's mesh config with `outboundTrafficPolicy.mode: REGISTRY_ONLY`, as the istio ConfigMap holds it.
    static let registryOnly = """
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: istio
          namespace: istio-system
        data:
          mesh: |-
            outboundTrafficPolicy:
              mode: REGISTRY_ONLY
        """

    @Test func aRegistryOnlyMeshRefusesUnregisteredHosts() throws {
        try withExternalService(files: ["istio.yaml": Self.registryOnly]) { mesh, dns, server in
            // The registered service still answers…
            let reached = mesh.proxy?.waitUntil(seconds: 15) {
                (try? curl(mesh, "http://\(Self.host)/token"))?.standardOutput.contains("\"sni\"") == true
            } ?? false
            #expect(reached, "proxy: \(mesh.proxy?.errorOutput ?? "")\nserver: \(server.log)\ndns: \(dns.log)")
            // …an unregistered host on the same HTTP port gets istiod's block_all: 502 from the proxy…
            let blocked = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(mesh.sandbox.name)-pod", "curl", "-sS", "--max-time", "10",
                                                                "-o", "/dev/null", "-w", "%{http_code}", "http://198.51.100.10/"])
            #expect(blocked.standardOutput == "502", "\(blocked)")
            #expect(!server.log.contains("request: \"GET / "), "\(server.log)")
            // …the registered HTTPS port (no address: chosen by the SNI the client sends) goes out through its cluster…
            let caFile = "/tmp/\(mesh.sandbox.name)-external-ca.pem"
            let https = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(mesh.sandbox.name)-pod", "curl", "-sS", "--max-time", "10",
                                                              "--cacert", caFile, "--resolve", "\(Self.host):443:\(Self.serverAddress)",
                                                              "https://\(Self.host)/direct-tls"])
            #expect(https.standardOutput.contains("\"path\": \"/direct-tls\""), "\(https)")
            #expect(Int(try mesh.stat("cluster.outbound|443||\(Self.host).upstream_cx_total") ?? "") ?? 0 >= 1)
            // …and a connection to a port no service declares goes into BlackHoleCluster, not out.
            let tcp = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(mesh.sandbox.name)-pod", "curl", "-sS", "--max-time", "5",
                                                            "http://198.51.100.10:8081/"])
            #expect(tcp.status != 0, "\(tcp)")
            let stats = try mesh.proxy?.admin("GET", "/stats").body ?? ""
            #expect(Int(try mesh.stat("cluster.BlackHoleCluster.upstream_cx_none_healthy") ?? "") ?? 0 >= 1, "\(stats)")
        }
    }

    @Test func mutualTLSOriginationPresentsTheRulesClientCertificate() throws {
        try withExternalService(mutual: true) { mesh, dns, server in
            var answer: ChildProcess.Result?
            let reached = mesh.proxy?.waitUntil(seconds: 15) {
                answer = try? curl(mesh, "http://\(Self.host)/mutual")
                return answer?.standardOutput.contains("\"path\": \"/mutual\"") == true
            } ?? false
            #expect(reached, "\(answer.map(String.init(describing:)) ?? "")\nproxy: \(mesh.proxy?.errorOutput ?? "")\nserver: \(server.log)")
            let json = try answer.map { try JSONSerialization.jsonObject(with: Data($0.standardOutput.utf8)) as? [String: Any] } ?? nil
            // The server required a client certificate from its CA, and the proxy presented the rule's.
            #expect(json?["client"] as? String == "capstan-client", "\(answer?.standardOutput ?? "")")
            #expect(json?["sni"] as? String == Self.host)
        }
    }
}
