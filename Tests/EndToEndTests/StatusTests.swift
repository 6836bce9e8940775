import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// `capstan status`: drift found and repaired, JSON output, and `--trace` agreeing with real sockets.
@Suite struct StatusTests {
    let any = IPAddress("::")!

    func status(_ sandbox: Sandbox, _ extra: [String] = []) throws -> ChildProcess.Result {
        try sandbox.capstan(["status"] + extra + ["--network-namespace", sandbox.pod.path!])
    }

    @Test func driftIsFoundAndRepairedByRerunningInit() throws {
        try withSandbox { sandbox in
            try sandbox.initialize(["-m", "TPROXY"])
            #expect(try status(sandbox).status == 0)

            try sandbox.podNFTables("""
                flush chain inet capstan outbound_redirect
                add rule inet capstan output counter accept
                flush chain inet capstan inbound_redirect
                add rule inet capstan inbound_redirect meta l4proto tcp counter redirect to :16006 comment "to the inbound capture port (-z)"
                """)
            try sandbox.pod.run { try RoutingSocket().delete(FirewallMarkRule(family: .ipv6, mark: 1337, table: 133)) }

            let drifted = try status(sandbox)
            #expect(drifted.status == 1)
            let text = drifted.standardOutput
            #expect(text.contains("drifted (4 differences)"), "\(text)")
            #expect(text.contains("missing in outbound_redirect: meta l4proto tcp counter packets 0 bytes 0 redirect to :15001"))
            #expect(text.contains("extra in output: counter packets 0 bytes 0 accept"))
            #expect(text.contains("changed in inbound_redirect: meta l4proto tcp counter packets 0 bytes 0 redirect to :16006"))
            #expect(text.contains("missing ip rule: fwmark 1337 lookup 133 (ipv6)"))

            let json = try JSONSerialization.jsonObject(with: Data(try status(sandbox, ["-o", "json"]).standardOutput.utf8)) as? [String: Any]
            #expect(json?["intact"] as? Bool == false)
            #expect((json?["drift"] as? [String])?.count == 4)

            // The recorded spec is enough to repair: init with the same flags.
            try sandbox.initialize(["-m", "TPROXY"])
            let repaired = try status(sandbox)
            #expect(repaired.status == 0, "\(repaired)")
            #expect(repaired.standardOutput.contains("intact"))
        }
    }

    @Test func statusShowsTheRecoveredSpecAndCounters() throws {
        try withSandbox { sandbox in
            try sandbox.initialize(["-x", "198.51.100.99/32", "--redirect-dns", "--dns-servers", "198.51.100.53"])
            let probe = ConnectionProbe()
            try probe.listenLikeTheProxy(in: sandbox.pod)
            #expect(probe.connect(to: SocketAddress(Sandbox.remoteV4, 80), from: sandbox.pod).listener == "outbound")
            let result = try status(sandbox, ["-o", "json"])
            #expect(result.status == 0)
            let json = try #require(try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any])
            let spec = try #require(json["spec"] as? [String])
            #expect(spec.contains("--istio-service-exclude-cidr=198.51.100.99/32"))
            #expect(spec.contains("--dns-servers=198.51.100.53"))
            #expect((json["listening"] as? [Int])?.contains(15001) == true)
            let rules = try #require(json["rules"] as? [[String: Any]])
            let captured = rules.first { ($0["comment"] as? String) == "-i *: all other outbound TCP captured" }
            #expect((captured?["packets"] as? Int ?? 0) >= 1)

            let text = try status(sandbox).standardOutput
            #expect(text.contains("except 198.51.100.99/32 (-x)"))
            #expect(text.contains("port 53 to 198.51.100.53 → :15053"))
        }
    }

    /// A connection to try both ways: traced, then made for real.
    struct Case: CustomStringConvertible {
        var target: SocketAddress
        var uid: UInt32 = 1000
        var gid: UInt32 = 1000
        var inbound = false
        var description: String { "\(inbound ? "inbound" : "uid \(uid)") → \(target)" }
    }

    static let cases: [Case] = [
        Case(target: SocketAddress(Sandbox.remoteV4, 80)),
        Case(target: SocketAddress(Sandbox.remoteV6, 80)),
        Case(target: SocketAddress(Sandbox.remoteV4, 443)),
        Case(target: SocketAddress(Sandbox.otherRemoteV4, 80)),
        Case(target: SocketAddress(Sandbox.remoteV4, 80), uid: 1337, gid: 1337),
        Case(target: SocketAddress(.loopbackV4, 8080)),
        Case(target: SocketAddress(Sandbox.podV4, 8080)),
        Case(target: SocketAddress(Sandbox.podV6, 8080), uid: 1337, gid: 1337),
        Case(target: SocketAddress(Sandbox.podV4, 8080), inbound: true),
        Case(target: SocketAddress(Sandbox.podV6, 8080), inbound: true),
        Case(target: SocketAddress(Sandbox.podV4, 15021), inbound: true),
        Case(target: SocketAddress(Sandbox.podV4, 15008), inbound: true),
    ]

    @Test(arguments: ["REDIRECT", "TPROXY"])
    func traceAgreesWithRealSockets(mode: String) throws {
        try withSandbox { sandbox in
            try sandbox.initialize(["-m", mode, "-x", "198.51.100.99/32", "-o", "443"])
            let probe = ConnectionProbe()
            try probe.listenLikeTheProxy(in: sandbox.pod, tproxy: mode == "TPROXY")
            for port: UInt16 in [80, 443] { try probe.listen("direct", in: sandbox.peer, on: SocketAddress(any, port)) }
            for port: UInt16 in [8080, 15021, 15008] { try probe.listen("direct", in: sandbox.pod, on: SocketAddress(any, port)) }

            for connection in Self.cases {
                let address = connection.target.address
                var arguments = ["--trace", "tcp:\(connection.target)", "-o", "json"]
                if connection.inbound {
                    arguments += ["--inbound", "--source", address.family == .ipv4 ? "\(Sandbox.peerV4)" : "\(Sandbox.peerV6)"]
                } else {
                    arguments += ["--uid", "\(connection.uid)", "--gid", "\(connection.gid)"]
                }
                let traced = try status(sandbox, arguments)
                #expect(traced.status == 0, "\(connection): \(traced)")
                let json = try #require(try JSONSerialization.jsonObject(with: Data(traced.standardOutput.utf8)) as? [String: Any])
                let predicted: String = switch (json["verdict"] as? String, json["port"] as? Int) {
                case ("captured", 15001): "outbound"
                case ("captured", 15006): "inbound"
                case ("passes", _): "direct"
                default: "unexpected \(json)"
                }
                let actual = probe.connect(to: connection.target, from: connection.inbound ? sandbox.peer : sandbox.pod,
                                           uid: connection.uid, gid: connection.gid)
                #expect(actual.listener == predicted, "\(mode) \(connection): trace says \(predicted), sockets say \(actual)")
            }
        }
    }

    @Test func traceExplainsWhichRuleDecided() throws {
        try withSandbox { sandbox in
            try sandbox.initialize(["-x", "198.51.100.99/32"])
            let excluded = try status(sandbox, ["--trace", "tcp:198.51.100.99:80"])
            #expect(excluded.standardOutput.contains("Not captured: let through by outbound: -x 198.51.100.99/32: excluded from capture"),
                    "\(excluded)")
            let captured = try status(sandbox, ["--trace", "tcp:[2001:db8:100::10]:80"])
            #expect(captured.standardOutput.contains("Captured → :15001"), "\(captured)")
            let unroutable = try status(sandbox, ["--trace", "tcp:203.0.113.50:80"])
            #expect(unroutable.standardOutput.contains("No route"), "\(unroutable)")
            let bad = try status(sandbox, ["--trace", "tcp:nowhere:80"])
            #expect(bad.status == 2)
            #expect(bad.standardError.contains("tcp:nowhere:80"))
        }
    }
}
