import CapstanTestSupport
import Foundation
import Netfilter
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `capstan proxy` behind `capstan init`'s rules, with real connections: passthrough both ways in both
/// modes and IP versions, large transfers and half-close, loops, many connections, admin and drain.
@Suite struct ProxyTests {
    static let app: UInt16 = 8080

    /// A pod with capture rules, the proxy, an echo application on 8080 and an echo "remote" on the peer.
    struct Setup {
        let sandbox: Sandbox
        let proxy: ProxyProcess
        let application: EchoServer
        let remote: EchoServer
    }

    func withProxy<T>(mode: String = "REDIRECT", initFlags: [String] = [], proxyFlags: [String] = [],
                      _ body: (Setup) throws -> T) throws -> T {
        try withSandbox { sandbox in
            try sandbox.initialize(["-m", mode] + initFlags)
            let application = try EchoServer(in: sandbox.pod, port: Self.app)
            let remote = try EchoServer(in: sandbox.peer, port: 80)
            let proxy = try ProxyProcess(in: sandbox, arguments: ["--inbound-interception-mode", mode] + proxyFlags)
            defer { proxy.stop() }
            return try body(Setup(sandbox: sandbox, proxy: proxy, application: application, remote: remote))
        }
    }

    func stat(_ name: String, _ proxy: ProxyProcess) throws -> Int {
        let stats = try proxy.admin("GET", "/stats").body
        guard let line = stats.split(separator: "\n").first(where: { $0.hasPrefix(name + ": ") }),
              let value = Int(line.split(separator: " ").last ?? "") else { return -1 }
        return value
    }

    @Test(arguments: ["REDIRECT", "TPROXY"])
    func passthroughBothWaysCarriesLargeTransfersIntact(mode: String) throws {
        try withProxy(mode: mode) { setup in
            let payload = EchoExchange.payload(4 << 20)
            for (remote, pod) in [(Sandbox.remoteV4, Sandbox.podV4), (Sandbox.remoteV6, Sandbox.podV6)] {
                // Outbound: the application's connection leaves through the proxy, from the pod's address.
                let outbound = try EchoExchange.run(to: SocketAddress(remote, 80), from: setup.sandbox.pod, payload: payload)
                #expect(outbound.intact, "\(mode) outbound to \(remote): \(outbound.echoed.count) of \(payload.count) bytes")
                #expect(outbound.peerSeenByServer == "\(pod)")
            }
            for (pod, peer, passthrough) in [(Sandbox.podV4, Sandbox.peerV4, "127.0.0.6"), (Sandbox.podV6, Sandbox.peerV6, "::6")] {
                // Inbound: the application sees 127.0.0.6 (REDIRECT) or the real client (TPROXY).
                let inbound = try EchoExchange.run(to: SocketAddress(pod, Self.app), from: setup.sandbox.peer, payload: payload)
                #expect(inbound.intact, "\(mode) inbound to \(pod): \(inbound.echoed.count) of \(payload.count) bytes")
                #expect(inbound.peerSeenByServer == (mode == "TPROXY" ? "\(peer)" : passthrough))
            }
            #expect(try stat("listener.0.0.0.0_15001.downstream_cx_total", setup.proxy) == 2)
            #expect(try stat("listener.0.0.0.0_15006.downstream_cx_total", setup.proxy) == 2)
            #expect(try stat("cluster.PassthroughCluster.upstream_cx_tx_bytes_total", setup.proxy) == 2 * payload.count)
            #expect(try stat("cluster.InboundPassthroughCluster.upstream_cx_rx_bytes_total", setup.proxy) >= 2 * payload.count)
        }
    }

    @Test func connectionsToTheProxysOwnListenersAreRefused() throws {
        try withProxy { setup in
            // Not captured (localhost), straight into the outbound listener: its original destination is
            // the listener itself.
            let direct = try setup.sandbox.pod.run { try ProbeSocket.tcp(.ipv4) }
            try direct.connect(to: SocketAddress(.loopbackV4, 15001), timeoutMilliseconds: 1000)
            #expect(try direct.receive(count: 1).isEmpty)
            // From outside to the outbound port: captured inbound, original destination pod:15001.
            let fromPeer = try setup.sandbox.peer.run { try ProbeSocket.tcp(.ipv4) }
            try fromPeer.connect(to: SocketAddress(Sandbox.podV4, 15001), timeoutMilliseconds: 1000)
            #expect(try fromPeer.receive(count: 1).isEmpty)
            #expect(try stat("listener.0.0.0.0_15001.downstream_cx_loop_refused", setup.proxy) == 1)
            #expect(try stat("listener.0.0.0.0_15006.downstream_cx_loop_refused", setup.proxy) == 1)
        }
    }

    @Test func aThousandConcurrentConnections() throws {
        try withProxy { setup in
            let target = SocketAddress(Sandbox.remoteV4, 80)
            var clients: [ProbeSocket] = []
            for _ in 0..<1000 {
                let client = try ProbeSocket.tcp(.ipv4, in: setup.sandbox.pod, uid: 1000, gid: 1000)
                try client.connect(to: target, timeoutMilliseconds: 5000)
                clients.append(client)
            }
            for (index, client) in clients.enumerated() {
                try client.sendAll(Array("connection \(index)\n".utf8))
            }
            var answered = 0
            for (index, client) in clients.enumerated() {
                let expected = Array("peer=\(Sandbox.podV4) local=\(Sandbox.remoteV4):80\nconnection \(index)\n".utf8)
                if try client.receive(count: expected.count) == expected { answered += 1 }
            }
            #expect(answered == 1000)
            #expect(try stat("listener.0.0.0.0_15001.downstream_cx_active", setup.proxy) == 1000)
            #expect(try stat("cluster.PassthroughCluster.upstream_cx_active", setup.proxy) == 1000)
            clients.removeAll()
            #expect(try stat("cluster.PassthroughCluster.upstream_cx_total", setup.proxy) == 1000)
            // Closed by the clients: the proxy closes both sides of every pair (within 10 s: beside the other
            // end-to-end suites, on two cores, closing 2,000 sockets has taken over 2 s).
            var active = -1
            for _ in 0..<500 where active != 0 {
                active = try stat("listener.0.0.0.0_15001.downstream_cx_active", setup.proxy)
                usleep(20_000)
            }
            #expect(active == 0)
            #expect(try stat("cluster.PassthroughCluster.upstream_cx_active", setup.proxy) == 0)
        }
    }

    @Test func adminAnswersOnLocalhostWithEnvoysPaths() throws {
        try withProxy { setup in
            let proxy = setup.proxy
            #expect(try proxy.admin("GET", "/ready") == (200, "LIVE\n"))
            #expect(try proxy.admin("POST", "/ready").status == 405)
            #expect(try proxy.admin("GET", "/drain_listeners").status == 405)
            #expect(try proxy.admin("GET", "/listeners").body == "virtualOutbound::[::]:15001\nvirtualInbound::[::]:15006\n")
            #expect(try proxy.admin("GET", "/clusters").body.contains("PassthroughCluster::upstream_cx_total::0"))
            #expect(try proxy.admin("GET", "/config_dump").body.contains("\"virtualInbound\""))
            #expect(try proxy.admin("GET", "/nothing-here").status == 404)
            #expect(try proxy.admin("POST", "/healthcheck/fail").status == 200)
            #expect(try proxy.admin("GET", "/stats").body.hasPrefix("server.state: 0\nserver.healthcheck_failed: 1\n"))
            #expect(try proxy.admin("POST", "/healthcheck/ok").status == 200)
            #expect(try proxy.admin("GET", "/stats").body.contains("server.healthcheck_failed: 0\n"))
            // Prometheus on :15090 from outside the pod; the admin port is not reachable from there.
            let metrics = try HTTPProbe.request("GET", "/stats/prometheus", to: SocketAddress(Sandbox.podV4, 15090), in: setup.sandbox.peer)
            #expect(metrics.status == 200)
            #expect(metrics.body.contains("envoy_listener_downstream_cx_total{envoy_listener_address=\"0.0.0.0_15001\"}"))
            // Captured inbound, and passed through to pod:15000, where nothing listens (the admin API is on
            // 127.0.0.1): the proxy's upstream connect is refused and it closes the client's connection unanswered.
            let admin = try setup.sandbox.peer.run { try ProbeSocket.tcp(.ipv4) }
            try admin.connect(to: SocketAddress(Sandbox.podV4, 15000), timeoutMilliseconds: 1000)
            #expect(try admin.receive(count: 1).isEmpty)
            #expect(try stat("cluster.InboundPassthroughCluster.upstream_cx_connect_fail", proxy) == 1)
            #expect(try stat("cluster.InboundPassthroughCluster.upstream_cx_connect_timeout", proxy) == 0)
        }
    }

    @Test func inboundDrainKeepsOpenConnectionsAndRefusesNewOnes() throws {
        try withProxy(proxyFlags: ["--drain-time-s", "30"]) { setup in
            let pod = SocketAddress(Sandbox.podV4, Self.app)
            let open = try setup.sandbox.peer.run { try ProbeSocket.tcp(.ipv4) }
            try open.connect(to: pod, timeoutMilliseconds: 1000)
            let greeting = Array("peer=127.0.0.6 local=\(Sandbox.podV4):\(Self.app)\n".utf8)
            #expect(try open.receive(count: greeting.count) == greeting)
            #expect(try setup.proxy.admin("POST", "/drain_listeners?inboundonly&graceful").status == 200)

            // The open inbound connection still works; new inbound ones are refused; outbound goes on.
            try open.sendAll(Array("still here".utf8))
            #expect(try open.receive(count: 10) == Array("still here".utf8))
            // The drained inbound listener's socket is closed: the kernel refuses, the client gets no timeout.
            let refused = try setup.sandbox.peer.run { try ProbeSocket.tcp(.ipv4) }
            let refusal = #expect(throws: SocketError.self) { try refused.connect(to: pod, timeoutMilliseconds: 1000) }
            #expect(refusal?.errno == ECONNREFUSED, "\(String(describing: refusal))")
            let outbound = try EchoExchange.run(to: SocketAddress(Sandbox.remoteV4, 80), from: setup.sandbox.pod, payload: [1, 2, 3])
            #expect(outbound.intact)
            #expect(try setup.proxy.admin("GET", "/ready").body == "LIVE\n")

            // SIGTERM drains the rest; the proxy exits 0 once the open connection is done.
            setup.proxy.signal(SIGTERM)
            #expect(setup.proxy.waitUntil(seconds: 5) { (try? setup.proxy.admin("GET", "/ready"))?.body == "DRAINING\n" })
            #expect(try setup.proxy.admin("GET", "/ready") == (503, "DRAINING\n"))
            // The drain waits while this count, the one it polls, is above zero; the connection still echoes.
            #expect(try stat("listener.0.0.0.0_15006.downstream_cx_active", setup.proxy) == 1)
            try open.sendAll(Array("draining".utf8))
            #expect(try open.receive(count: 8) == Array("draining".utf8))
            #expect(setup.proxy.isRunning)
            open.shutdownOutput()
            _ = try open.receive(count: 1)
            #expect(setup.proxy.waitForExit(seconds: 5) == 0)
        }
    }

    @Test func drainDeadlineClosesWhatIsLeft() throws {
        try withProxy(proxyFlags: ["--drain-time-s", "1"]) { setup in
            let open = try setup.sandbox.peer.run { try ProbeSocket.tcp(.ipv4) }
            try open.connect(to: SocketAddress(Sandbox.podV4, Self.app), timeoutMilliseconds: 1000)
            _ = try open.receive(count: "peer=127.0.0.6 local=\(Sandbox.podV4):\(Self.app)\n".utf8.count)
            #expect(try setup.proxy.admin("POST", "/drain_listeners?graceful").status == 200)
            #expect(setup.proxy.waitForExit(seconds: 5) == 0)
            // The proxy closed the connection at the deadline.
            #expect(try open.receive(count: 1).isEmpty)
        }
    }

    @Test func idleConnectionsAreClosedAndBusyOnesAreNot() throws {
        try withProxy(proxyFlags: ["--idle-timeout-s", "1"]) { setup in
            let busy = try ProbeSocket.tcp(.ipv4, in: setup.sandbox.pod, uid: 1000, gid: 1000)
            try busy.connect(to: SocketAddress(Sandbox.remoteV4, 80), timeoutMilliseconds: 1000)
            // Before the idle one's connect, so no later than its last activity (the greeting).
            let opened = ContinuousClock.now
            let idle = try ProbeSocket.tcp(.ipv4, in: setup.sandbox.pod, uid: 1000, gid: 1000)
            try idle.connect(to: SocketAddress(Sandbox.remoteV4, 80), timeoutMilliseconds: 1000)
            let greeting = "peer=\(Sandbox.podV4) local=\(Sandbox.remoteV4):80\n".utf8.count
            _ = try busy.receive(count: greeting)
            _ = try idle.receive(count: greeting)
            // The idle one's close is the event waited for; while it stays open, the busy one sends a byte
            // every 400 ms, well within the 1 s timeout.
            var round: UInt8 = 0
            while try !idle.wait(for: Int16(POLLIN), timeoutMilliseconds: 400) {
                try busy.sendAll([round])
                #expect(try busy.receive(count: 1) == [round])
                round += 1
                guard round < 15 else { Issue.record("the idle connection is still open after 6 s"); return }
            }
            #expect(try idle.receive(count: 1, timeoutMilliseconds: 100).isEmpty, "closed by the proxy, nothing written")
            #expect(opened.duration(to: .now) >= .seconds(1), "not before the idle timeout")
            // The busy one, through as many idle checks, still echoes.
            try busy.sendAll([round])
            #expect(try busy.receive(count: 1) == [round])
        }
    }

    @Test func sigintExitsAtOnceEvenWithOpenConnections() throws {
        try withProxy(proxyFlags: ["--drain-time-s", "60"]) { setup in
            let open = try ProbeSocket.tcp(.ipv4, in: setup.sandbox.pod, uid: 1000, gid: 1000)
            try open.connect(to: SocketAddress(Sandbox.remoteV4, 80), timeoutMilliseconds: 1000)
            _ = try open.receive(count: 5)
            setup.proxy.signal(SIGINT)
            #expect(setup.proxy.waitForExit(seconds: 2) != nil)
        }
    }

    @Test func aSecondProxyCannotTakeTheSamePorts() throws {
        try withProxy { setup in
            let name = URL(fileURLWithPath: setup.sandbox.pod.path!).lastPathComponent
            let second = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", name, Sandbox.capstanExecutable, "proxy",
                                                               "--admin-port", "15100", "--stats-port", "15190"])
            #expect(second.status == 1, "\(second)")
            #expect(second.standardError.contains("cannot start"))
            #expect(try setup.proxy.admin("GET", "/ready").body == "LIVE\n")
        }
    }

    @Test func badFlagsAreRefused() throws {
        for arguments in [["--concurrency", "0"], ["--inbound-interception-mode", "BRIDGE"], ["--outbound-port", "70000"]] {
            let result = try ChildProcess.run(Sandbox.capstanExecutable, ["proxy"] + arguments)
            #expect(result.status == 2, "\(arguments): \(result)")
            #expect(result.standardError.contains(arguments[1]))
        }
    }
}
