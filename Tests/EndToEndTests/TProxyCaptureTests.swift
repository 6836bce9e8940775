import CapstanTestSupport
import Netfilter
import Testing

/// `-m TPROXY`: inbound connections reach a transparent listener with their addresses untouched, keep
/// working once established, and the policy routing exists for both IP versions.
@Suite struct TProxyCaptureTests {
    @Test(arguments: [(Sandbox.podV4, Sandbox.peerV4), (Sandbox.podV6, Sandbox.peerV6)])
    func inboundKeepsTheRealClientAndDestination(pod: IPAddress, peer: IPAddress) throws {
        try withSandbox { sandbox in
            try sandbox.initialize(["-m", "TPROXY"])
            let probe = ConnectionProbe()
            try probe.listenLikeTheProxy(in: sandbox.pod, tproxy: true)
            try probe.listen("app:15021", in: sandbox.pod, on: SocketAddress(IPAddress("::")!, 15021))

            let arrival = probe.connect(to: SocketAddress(pod, 8080), from: sandbox.peer)
            guard case .accepted(let listener, let local, let client, _) = arrival else {
                Issue.record("not accepted: \(arrival)")
                return
            }
            #expect(listener == "inbound")
            // TPROXY leaves the destination alone: the accepted socket's local address is the original one.
            #expect(local == SocketAddress(pod, 8080))
            #expect(client.address == peer)
            #expect(probe.connect(to: SocketAddress(pod, 15021), from: sandbox.peer).listener == "app:15021")
        }
    }

    @Test func establishedConnectionsCarryDataBothWays() throws {
        try withSandbox { sandbox in
            try sandbox.initialize(["-m", "TPROXY"])
            let listener = try sandbox.pod.run {
                try ProbeSocket.listener(on: SocketAddress(IPAddress("::")!, 15006), transparent: true)
            }
            let client = try sandbox.peer.run { try ProbeSocket.tcp(.ipv4) }
            try client.connect(to: SocketAddress(Sandbox.podV4, 9000), timeoutMilliseconds: 2000)
            let server = try #require(try listener.accept(timeoutMilliseconds: 2000))
            let request = [UInt8](repeating: 7, count: 200_000)
            try client.sendAll(request)
            #expect(try server.receive(count: request.count) == request)
            let response = [UInt8](repeating: 9, count: 200_000)
            try server.sendAll(response)
            #expect(try client.receive(count: response.count) == response)
        }
    }

    @Test func policyRoutingForBothFamiliesAndRemovedWhenSwitchingToRedirect() throws {
        try withSandbox { sandbox in
            try sandbox.initialize(["-m", "TPROXY", "-t", "1400", "-r", "140"])
            let status = try sandbox.capstan(["status", "-o", "json", "--network-namespace", sandbox.pod.path!])
            #expect(status.status == 0, "\(status)")
            for line in ["ip rule add fwmark 1400 lookup 140", "ip -6 rule add fwmark 1400 lookup 140",
                         "ip route add local default dev lo table 140", "ip -6 route add local default dev lo table 140"] {
                #expect(status.standardOutput.contains("\"\(line)\""), "\(line) in \(status.standardOutput)")
            }
            try sandbox.initialize([])
            let after = try sandbox.capstan(["status", "-o", "json", "--network-namespace", sandbox.pod.path!])
            #expect(after.status == 0, "\(after)")
            // Still looked up with the recorded (REDIRECT, default) spec: nothing with our old mark remains.
            let routes = try sandbox.pod.run {
                try RoutingSocket().firewallMarkRules(family: .ipv4) + RoutingSocket().firewallMarkRules(family: .ipv6)
            }
            #expect(routes.filter { $0.mark == 1400 }.isEmpty)
        }
    }

    @Test func withoutIPv6OnlyIPv4RoutingIsProgrammed() throws {
        try withSandbox(ipv6: false) { sandbox in
            try sandbox.initialize(["-m", "TPROXY"])
            let rules = try sandbox.pod.run { try RoutingSocket().firewallMarkRules(family: .ipv4) }
            #expect(rules.contains { $0.mark == 1337 && $0.table == 133 })
            let ipv6Rules = try sandbox.pod.run { try RoutingSocket().firewallMarkRules(family: .ipv6) }
            #expect(!ipv6Rules.contains { $0.mark == 1337 })
            let status = try sandbox.capstan(["status", "--network-namespace", sandbox.pod.path!])
            #expect(status.status == 0, "\(status)")
            #expect(status.standardOutput.contains("IPv4 (the namespace has no IPv6)"))
        }
    }
}
