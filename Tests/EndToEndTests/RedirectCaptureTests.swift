import CapstanTestSupport
import Netfilter
import Testing

/// `capstan init` with the sidecar defaults (REDIRECT), checked with real connections in both IP versions.
@Suite struct RedirectCaptureTests {
    static let app: UInt16 = 8080

    /// The listeners of a pod with an application on 8080 and probe ports, and a remote service on the peer.
    func standardProbe(_ sandbox: Sandbox) throws -> ConnectionProbe {
        let probe = ConnectionProbe()
        try probe.listenLikeTheProxy(in: sandbox.pod)
        for port in [Self.app, 15008, 15021] {
            try probe.listen("app:\(port)", in: sandbox.pod, on: SocketAddress(IPAddress("::")!, port))
        }
        try probe.listen("remote", in: sandbox.peer, on: SocketAddress(IPAddress("::")!, 80))
        return probe
    }

    @Test(arguments: [Sandbox.remoteV4, Sandbox.remoteV6])
    func applicationOutboundGoesToTheOutboundPort(remote: IPAddress) throws {
        try withSandbox { sandbox in
            try sandbox.initialize()
            let probe = try standardProbe(sandbox)
            let arrival = probe.connect(to: SocketAddress(remote, 80), from: sandbox.pod, uid: 1000, gid: 1000)
            #expect(arrival.listener == "outbound", "\(arrival)")
            if case .accepted(_, _, _, let original) = arrival {
                #expect(original == SocketAddress(remote, 80))
            }
        }
    }

    @Test(arguments: [Sandbox.remoteV4, Sandbox.remoteV6])
    func proxyOutboundIsNotCaptured(remote: IPAddress) throws {
        try withSandbox { sandbox in
            try sandbox.initialize()
            let probe = try standardProbe(sandbox)
            #expect(probe.connect(to: SocketAddress(remote, 80), from: sandbox.pod, uid: 1337, gid: 1337).listener == "remote")
            // The gid alone is enough, as in Istio.
            #expect(probe.connect(to: SocketAddress(remote, 80), from: sandbox.pod, uid: 1000, gid: 1337).listener == "remote")
        }
    }

    @Test(arguments: [(Sandbox.podV4, Sandbox.peerV4), (Sandbox.podV6, Sandbox.peerV6)])
    func inboundGoesToTheInboundPortExceptExcludedPorts(pod: IPAddress, peer: IPAddress) throws {
        try withSandbox { sandbox in
            try sandbox.initialize()
            let probe = try standardProbe(sandbox)
            let arrival = probe.connect(to: SocketAddress(pod, Self.app), from: sandbox.peer)
            #expect(arrival.listener == "inbound", "\(arrival)")
            if case .accepted(_, _, let client, let original) = arrival {
                #expect(original == SocketAddress(pod, Self.app))
                #expect(client.address == peer)
            }
            // -d 15021 (default exclusion) and -e 15008 (tunnel) reach the application directly.
            #expect(probe.connect(to: SocketAddress(pod, 15021), from: sandbox.peer).listener == "app:15021")
            #expect(probe.connect(to: SocketAddress(pod, 15008), from: sandbox.peer).listener == "app:15008")
        }
    }

    @Test func loopbackAndSelfTraffic() throws {
        try withSandbox { sandbox in
            try sandbox.initialize()
            let probe = try standardProbe(sandbox)
            // Application to localhost and to its own pod address: not captured.
            #expect(probe.connect(to: SocketAddress(.loopbackV4, Self.app), from: sandbox.pod, uid: 1000).listener == "app:8080")
            #expect(probe.connect(to: SocketAddress(.loopbackV6, Self.app), from: sandbox.pod, uid: 1000).listener == "app:8080")
            #expect(probe.connect(to: SocketAddress(Sandbox.podV4, Self.app), from: sandbox.pod, uid: 1000).listener == "app:8080")
            // The proxy calling its own pod address goes through the inbound capture...
            let selfCall = probe.connect(to: SocketAddress(Sandbox.podV4, Self.app), from: sandbox.pod, uid: 1337, gid: 1337)
            #expect(selfCall.listener == "inbound", "\(selfCall)")
            #expect(probe.connect(to: SocketAddress(Sandbox.podV6, Self.app), from: sandbox.pod, uid: 1337, gid: 1337).listener == "inbound")
            // ...but its inbound passthrough from 127.0.0.6 reaches the application.
            #expect(probe.connect(to: SocketAddress(Sandbox.podV4, Self.app), from: sandbox.pod, uid: 1337, gid: 1337,
                                  source: .inboundPassthroughV4).listener == "app:8080")
            // The proxy to localhost: not captured.
            #expect(probe.connect(to: SocketAddress(.loopbackV4, Self.app), from: sandbox.pod, uid: 1337, gid: 1337).listener == "app:8080")
        }
    }
}
