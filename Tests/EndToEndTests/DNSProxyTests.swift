import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// The agent's DNS proxy (`ISTIO_META_DNS_CAPTURE=true`) in a sidecar-injected pod of a small mesh, with
/// `capstan init --redirect-dns`: the pod's resolv.conf names a `dnsmasq` in another namespace of the
/// sandbox (the outside world's DNS, which knows only `outside.example`). `dig` in the pod asks that
/// nameserver; the capture sends the query to the agent on :15053, which answers mesh names from the
/// control plane's NDS name table and forwards the rest to dnsmasq (its own queries, as uid 1337, are not
/// captured again).
@Suite(.serialized) struct DNSProxyTests {
    static let client = IPAddress("192.0.2.1")!
    static let nameserver = IPAddress("192.0.2.53")!

    static let external = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: auth, namespace: shop}
        spec:
          hosts: [auth.external-service.com]
          addresses: [198.51.100.77]
          ports: [{number: 443, name: tls, protocol: TLS}]
          location: MESH_EXTERNAL
          resolution: STATIC
          endpoints: [{address: 198.51.100.78}]
        """

    /// `dig ARGUMENTS` in the namespace named `namespace` (resolv.conf from /etc/netns/NAMESPACE/).
    static func dig(_ namespace: String, _ arguments: [String]) throws -> String {
        let result = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", namespace, "/usr/bin/dig", "+tries=1", "+time=3"] + arguments)
        return result.standardOutput + result.standardError
    }

    /// The answer section's records, as `NAME TTL CLASS TYPE DATA` with single spaces.
    static func answers(_ output: String) -> [String] {
        let lines = output.split(separator: "\n")
        guard let start = lines.firstIndex(where: { $0.hasPrefix(";; ANSWER SECTION:") }) else { return [] }
        return lines[(start + 1)...].prefix { !$0.isEmpty && !$0.hasPrefix(";;") }
            .map { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ") }
    }

    @Test func meshNamesAreAnsweredByTheAgentAndOthersForwardedToTheUpstream() throws {
        try withMeshCluster { mesh in
            var files = AgentTests.meshFiles()
            files["external.yaml"] = Self.external
            try mesh.startControlPlane(files: files)

            // The outside world's nameserver.
            let dnsPod = try mesh.addPod("dns", address: Self.nameserver)
            let dnsmasq = try NamespacedProcess([
                "/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--user=root", "--pid-file", "--bind-interfaces", "--listen-address=\(Self.nameserver)",
                "--address=/outside.example/192.0.2.80", "--log-queries", "--log-facility=-",
            ], in: dnsPod.namespace, logPath: "\(mesh.directory)/dnsmasq.log")
            dnsPod.processes.append(dnsmasq)

            // The pod: resolv.conf (bind-mounted by `ip netns exec`) names the nameserver, as kubelet would.
            let pod = try mesh.addPod("client", address: Self.client)
            let namespaceName = "\(mesh.name)-client"
            let etc = "/etc/netns/\(namespaceName)"
            try FileManager.default.createDirectory(atPath: etc, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: etc) }
            try "nameserver \(Self.nameserver)\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
                .write(toFile: "\(etc)/resolv.conf", atomically: true, encoding: .utf8)
            try mesh.capture(pod, extraFlags: ["--redirect-dns", "--dns-servers", "\(Self.nameserver)"])
            let agent = try mesh.startAgent(in: pod, serviceAccount: "client", environment: ["ISTIO_META_DNS_CAPTURE": "true"])
            try mesh.waitReady(pod, agent: agent)
            #expect(agent.waitUntil(seconds: 5) { agent.log.contains("NDS name table") }, "\(agent.log)")

            // The short name of a service in the pod's namespace: answered by the agent (TTL 30, authoritative);
            // dnsmasq alone would refuse it.
            let short = try Self.dig(namespaceName, ["@\(Self.nameserver)", "payments", "A"])
            #expect(Self.answers(short) == ["payments. 30 IN A 198.51.100.200"], "\(short)\n\(agent.log)")
            #expect(short.contains("flags: qr aa rd ra"), "\(short)")
            // The same over TCP (the capture redirects TCP/53 too).
            let tcp = try Self.dig(namespaceName, ["+tcp", "@\(Self.nameserver)", "payments.shop.svc.cluster.local", "A"])
            #expect(Self.answers(tcp) == ["payments.shop.svc.cluster.local. 30 IN A 198.51.100.200"], "\(tcp)")
            // The resolver's search list, as an application with ndots:5 asks: the first search domain appended
            // to a ServiceEntry host answers with a CNAME to the host, and its address.
            let searched = try Self.dig(namespaceName, ["+search", "auth.external-service.com", "A"])
            #expect(Self.answers(searched) == [
                "auth.external-service.com.shop.svc.cluster.local. 30 IN CNAME auth.external-service.com.",
                "auth.external-service.com. 30 IN A 198.51.100.77",
            ], "\(searched)")
            // A ServiceEntry host by its own name; no AAAA for it: NODATA, not NXDOMAIN.
            let external = try Self.dig(namespaceName, ["@\(Self.nameserver)", "auth.external-service.com", "A"])
            #expect(Self.answers(external) == ["auth.external-service.com. 30 IN A 198.51.100.77"], "\(external)")
            let noAAAA = try Self.dig(namespaceName, ["@\(Self.nameserver)", "auth.external-service.com", "AAAA"])
            #expect(noAAAA.contains("status: NOERROR") && Self.answers(noAAAA).isEmpty, "\(noAAAA)")

            // A name outside the mesh: forwarded by the agent to dnsmasq, whose answer (TTL 0) comes back.
            let outside = try Self.dig(namespaceName, ["@\(Self.nameserver)", "www.outside.example", "A"])
            #expect(Self.answers(outside) == ["www.outside.example. 0 IN A 192.0.2.80"], "\(outside)\n\(agent.log)")
            #expect(outside.contains("udp: "), "EDNS comes back from the upstream: \(outside)")
            #expect(dnsmasq.log.contains("query[A] www.outside.example from \(Self.client)"), "\(dnsmasq.log)")
            // dnsmasq never saw the mesh names: the agent answered them.
            #expect(!dnsmasq.log.contains("query[A] payments"), "\(dnsmasq.log)")
            // Unknown outside the mesh and to dnsmasq: its REFUSED is passed through.
            let unknown = try Self.dig(namespaceName, ["@\(Self.nameserver)", "nowhere.invalid", "A"])
            #expect(unknown.contains("status: REFUSED"), "\(unknown)")
        }
    }

    /// `ISTIO_META_DNS_AUTO_ALLOCATE`: a TCP ServiceEntry without addresses gets a VIP from 240.240.0.0/16 in
    /// the agent's answers, and the pod's sidecar has a chain for it, so an application that resolved the
    /// name and connects to the VIP reaches the service's endpoint (a plain TCP echo outside the mesh).
    @Test func autoAllocatedAddressesReachTCPServicesWithoutAddresses() throws {
        try withMeshCluster { mesh in
            var files = AgentTests.meshFiles()
            files["legacy.yaml"] = """
                apiVersion: networking.istio.io/v1
                kind: ServiceEntry
                metadata: {name: legacy, namespace: shop}
                spec:
                  hosts: [legacy.example.org]
                  ports: [{number: 7000, name: tcp-legacy, protocol: TCP}]
                  location: MESH_EXTERNAL
                  resolution: STATIC
                  endpoints: [{address: 192.0.2.70}]
                """
            try mesh.startControlPlane(files: files)
            let legacy = try mesh.addPod("legacy", address: IPAddress("192.0.2.70")!)
            legacy.servers.append(try EchoServer(in: legacy.namespace, port: 7000))
            let pod = try mesh.addPod("client", address: Self.client)
            let namespaceName = "\(mesh.name)-client"
            let etc = "/etc/netns/\(namespaceName)"
            try FileManager.default.createDirectory(atPath: etc, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: etc) }
            try "nameserver \(Self.nameserver)\n".write(toFile: "\(etc)/resolv.conf", atomically: true, encoding: .utf8)
            // A pod's default route would take 240.240.0.0/16; this one leads to the cluster's hub, which
            // routes it nowhere: only the sidecar's capture can carry the connection on.
            try ChildProcess.require("/usr/sbin/ip", ["netns", "exec", namespaceName, "ip", "route", "add", "240.240.0.0/16", "via", "\(MeshCluster.hubV4)"])
            try mesh.capture(pod, extraFlags: ["--redirect-dns", "--dns-servers", "\(Self.nameserver)"])
            let agent = try mesh.startAgent(in: pod, serviceAccount: "client",
                                            environment: ["ISTIO_META_DNS_CAPTURE": "true", "ISTIO_META_DNS_AUTO_ALLOCATE": "true"])
            try mesh.waitReady(pod, agent: agent)
            #expect(agent.waitUntil(seconds: 5) { agent.log.contains("NDS name table") }, "\(agent.log)")
            let answer = try Self.dig(namespaceName, ["@\(Self.nameserver)", "legacy.example.org", "A"])
            #expect(Self.answers(answer) == ["legacy.example.org. 30 IN A 240.240.0.1"], "\(answer)\n\(agent.log)")
            var exchange: EchoExchange?
            let reached = agent.waitUntil(seconds: 10) {
                exchange = try? EchoExchange.run(to: SocketAddress(IPAddress("240.240.0.1")!, 7000), from: pod.namespace,
                                                 payload: EchoExchange.payload(2048))
                return exchange?.intact == true
            }
            #expect(reached, "\(exchange.map(String.init(describing:)) ?? "no exchange")\n\(agent.log.suffix(3000))")
            // Through the service's own cluster, not the passthrough.
            let connections = try mesh.metric("envoy_cluster_upstream_cx_total{envoy_cluster_name=\"outbound|7000||legacy.example.org\"}", in: pod)
            #expect(Int(connections ?? "") ?? 0 >= 1, "\(connections ?? "no such metric")")
        }
    }
}
