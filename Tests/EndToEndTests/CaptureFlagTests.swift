import CapstanTestSupport
import Netfilter
import Testing

/// Each family of istio-iptables flags, checked with real connections.
@Suite struct CaptureFlagTests {
    let any = IPAddress("::")!

    func probe(_ sandbox: Sandbox, outbound: UInt16 = 15001, inbound: UInt16 = 15006) throws -> ConnectionProbe {
        let probe = ConnectionProbe()
        try probe.listenLikeTheProxy(in: sandbox.pod, outbound: outbound, inbound: inbound)
        for port: UInt16 in [80, 443, 9000] {
            try probe.listen("remote:\(port)", in: sandbox.peer, on: SocketAddress(any, port))
        }
        for port: UInt16 in [8080, 8081, 15020] {
            try probe.listen("app:\(port)", in: sandbox.pod, on: SocketAddress(any, port))
        }
        return probe
    }

    @Test func excludedAndIncludedCIDRs() throws {
        try withSandbox { sandbox in
            // -i limits capture to one remote; -x carves the other out of the v6 range.
            try sandbox.initialize(["-i", "198.51.100.10/32,2001:db8:100::/64", "-x", "2001:db8:100::10/128"])
            let probe = try probe(sandbox)
            #expect(probe.connect(to: SocketAddress(Sandbox.remoteV4, 80), from: sandbox.pod).listener == "outbound")
            #expect(probe.connect(to: SocketAddress(Sandbox.otherRemoteV4, 80), from: sandbox.pod).listener == "remote:80")
            #expect(probe.connect(to: SocketAddress(Sandbox.remoteV6, 80), from: sandbox.pod).listener == "remote:80")
        }
    }

    @Test func outboundPortsIncludedAndExcluded() throws {
        try withSandbox { sandbox in
            // Nothing captured by CIDR; port 9000 always (-q); 443 never (-o), even with -i '*' elsewhere.
            try sandbox.initialize(["-i", "", "-q", "9000"])
            let probe = try probe(sandbox)
            #expect(probe.connect(to: SocketAddress(Sandbox.remoteV4, 9000), from: sandbox.pod).listener == "outbound")
            #expect(probe.connect(to: SocketAddress(Sandbox.remoteV4, 80), from: sandbox.pod).listener == "remote:80")
            try sandbox.initialize(["-o", "443"])
            #expect(probe.connect(to: SocketAddress(Sandbox.remoteV4, 443), from: sandbox.pod).listener == "remote:443")
            #expect(probe.connect(to: SocketAddress(Sandbox.remoteV6, 443), from: sandbox.pod).listener == "remote:443")
            #expect(probe.connect(to: SocketAddress(Sandbox.remoteV4, 80), from: sandbox.pod).listener == "outbound")
        }
    }

    @Test func inboundPortListAndExclusions() throws {
        try withSandbox { sandbox in
            try sandbox.initialize(["-b", "8080"])
            let probe = try probe(sandbox)
            #expect(probe.connect(to: SocketAddress(Sandbox.podV4, 8080), from: sandbox.peer).listener == "inbound")
            #expect(probe.connect(to: SocketAddress(Sandbox.podV6, 8081), from: sandbox.peer).listener == "app:8081")
            try sandbox.initialize(["-b", "*", "-d", "8081"])
            #expect(probe.connect(to: SocketAddress(Sandbox.podV6, 8081), from: sandbox.peer).listener == "app:8081")
            // -d replaces the default exclusions, so 15020 is captured now.
            #expect(probe.connect(to: SocketAddress(Sandbox.podV4, 15020), from: sandbox.peer).listener == "inbound")
            try sandbox.initialize(["-b", ""])
            #expect(probe.connect(to: SocketAddress(Sandbox.podV4, 8080), from: sandbox.peer).listener == "app:8080")
        }
    }

    @Test func customPortsAndProxyIdentity() throws {
        try withSandbox { sandbox in
            try sandbox.initialize(["-p", "16001", "-z", "16006", "-u", "2000,2001", "-g", "3000"])
            let probe = try probe(sandbox, outbound: 16001, inbound: 16006)
            #expect(probe.connect(to: SocketAddress(Sandbox.remoteV4, 80), from: sandbox.pod, uid: 1337, gid: 1337).listener == "outbound")
            #expect(probe.connect(to: SocketAddress(Sandbox.remoteV4, 80), from: sandbox.pod, uid: 2001, gid: 0).listener == "remote:80")
            #expect(probe.connect(to: SocketAddress(Sandbox.remoteV4, 80), from: sandbox.pod, uid: 0, gid: 3000).listener == "remote:80")
            #expect(probe.connect(to: SocketAddress(Sandbox.podV4, 8080), from: sandbox.peer).listener == "inbound")
        }
    }

    @Test func environmentVariablesSetFlagsAndFlagsWin() throws {
        try withSandbox { sandbox in
            let result = try sandbox.capstan(["init", "--network-namespace", sandbox.pod.path!, "-z", "16006"],
                                             environment: ["ENVOY_PORT": "16001", "INBOUND_CAPTURE_PORT": "17006"])
            #expect(result.status == 0, "\(result)")
            let probe = try probe(sandbox, outbound: 16001, inbound: 16006)
            #expect(probe.connect(to: SocketAddress(Sandbox.remoteV4, 80), from: sandbox.pod).listener == "outbound")
            #expect(probe.connect(to: SocketAddress(Sandbox.podV4, 8080), from: sandbox.peer).listener == "inbound")
        }
    }

    @Test func excludedInterfaceIsNeverCaptured() throws {
        try withSandbox { sandbox in
            try sandbox.initialize(["-c", "eth0"])
            let probe = try probe(sandbox)
            #expect(probe.connect(to: SocketAddress(Sandbox.remoteV4, 80), from: sandbox.pod).listener == "remote:80")
            #expect(probe.connect(to: SocketAddress(Sandbox.podV4, 8080), from: sandbox.peer).listener == "app:8080")
        }
    }

    @Test func kubeVirtInterfaceTrafficIsCapturedAsOutbound() throws {
        try withSandbox(kubeVirt: true) { sandbox in
            let vm = try #require(sandbox.vm)
            try sandbox.initialize(["-k", "kv0"])
            let probe = try probe(sandbox)
            let arrival = probe.connect(to: SocketAddress(Sandbox.remoteV4, 80), from: vm)
            #expect(arrival.listener == "outbound", "\(arrival)")
            if case .accepted(_, _, let client, let original) = arrival {
                #expect(original == SocketAddress(Sandbox.remoteV4, 80))
                #expect(client.address == Sandbox.vmV4)
            }
            // Without -k the same connection is inbound traffic of the pod.
            try sandbox.initialize([])
            #expect(probe.connect(to: SocketAddress(Sandbox.remoteV4, 80), from: vm).listener == "inbound")
        }
    }

    @Test func dnsToTheNameserversIsCapturedExceptForTheProxy() throws {
        try withSandbox { sandbox in
            try sandbox.initialize(["--redirect-dns", "--dns-servers", "198.51.100.53"])
            let udp = DatagramProbe()
            try udp.listen("dns-proxy", in: sandbox.pod, on: SocketAddress(any, 15053))
            try udp.listen("nameserver", in: sandbox.peer, on: SocketAddress(any, 53))
            let dns = SocketAddress(Sandbox.remoteDNSV4, 53)
            #expect(try udp.send(to: dns, from: sandbox.pod, uid: 1000) == "dns-proxy")
            #expect(try udp.send(to: dns, from: sandbox.pod, uid: 1337, gid: 1337) == "nameserver")
            // Another server's DNS is not captured without --capture-all-dns.
            #expect(try udp.send(to: SocketAddress(Sandbox.otherRemoteV4, 53), from: sandbox.pod, uid: 1000) == "nameserver")

            let tcp = ConnectionProbe()
            try tcp.listen("dns-proxy", in: sandbox.pod, on: SocketAddress(any, 15053))
            try tcp.listen("nameserver", in: sandbox.peer, on: SocketAddress(any, 53))
            #expect(tcp.connect(to: dns, from: sandbox.pod, uid: 1000).listener == "dns-proxy")
            #expect(tcp.connect(to: dns, from: sandbox.pod, uid: 1337, gid: 1337).listener == "nameserver")

            try sandbox.initialize(["--redirect-dns", "--capture-all-dns"])
            #expect(try udp.send(to: SocketAddress(Sandbox.otherRemoteV4, 53), from: sandbox.pod, uid: 1000) == "dns-proxy")
            #expect(try udp.send(to: SocketAddress(Sandbox.remoteV6, 53), from: sandbox.pod, uid: 1000) == "dns-proxy")
        }
    }

    @Test func dropInvalidInstallsTheConntrackRule() throws {
        try withSandbox { sandbox in
            try sandbox.initialize(["--drop-invalid"])
            #expect(try sandbox.podRuleset().contains("ct state invalid counter packets 0 bytes 0 drop"))
            let status = try sandbox.capstan(["status", "--network-namespace", sandbox.pod.path!])
            #expect(status.status == 0)
            #expect(status.standardOutput.contains("conntrack-invalid packets dropped"))
        }
    }
}
