import Foundation
import HTTPEndpoints
import NIOHTTP1
import NIOCore
import NIOPosix
import Synchronization
@testable import Supervisor
import Testing

/// The status server on loopback and ephemeral ports: readiness with reasons, localhost-only actions,
/// and merged Prometheus text.
@Suite struct StatusServerTests {
    /// What the fake agent reports; the test changes it.
    final class FakeAgent: Sendable {
        let readiness = Mutex(Readiness())
        let quits = CallLog()
        let drains = CallLog()
        let proxyMetricsPort = Mutex<Int?>(nil)
        static let now = Date(timeIntervalSince1970: 1_700_000_000)

        var sources: StatusServer.Sources {
            StatusServer.Sources(
                readiness: { self.readiness.withLock { $0 } },
                proxyRestarts: { 2 },
                proxyMetrics: {
                    guard let port = self.proxyMetricsPort.withLock({ $0 }) else { return nil }
                    return try? await ProxyAdminClient(port: port, timeout: .milliseconds(500)).prometheusText()
                },
                quit: { self.quits.record("quit") },
                drain: { self.drains.record("drain") },
                now: { Self.now })
        }
    }

    let client = OneShotHTTPClient(timeout: .seconds(10))  // a bound, not a measure: the unit tests all run at once

    func withServer(_ agent: FakeAgent, _ body: (StatusServer) async throws -> Void) async throws {
        let server = try await StatusServer.start(host: "127.0.0.1", statusPort: 0, readinessPort: 0, sources: agent.sources)
        do {
            try await body(server)
        } catch {
            await server.close()
            throw error
        }
        await server.close()
    }

    @Test func readinessSaysWhichConditionsAreNotMet() async throws {
        let agent = FakeAgent()
        try await withServer(agent) { server in
            for port in [server.statusPort, server.readinessPort] {
                let answer = try await client.request(.GET, host: "127.0.0.1", port: port, path: "/healthz/ready")
                #expect(answer == .init(status: 503, body: "not ready: proxy not LIVE (admin API not answering); LDS not accepted yet; CDS not accepted yet; no valid certificate\n"))
            }
            agent.readiness.withLock {
                $0 = Readiness(proxyState: "PRE_INITIALIZING", listenersAccepted: true, clustersAccepted: false,
                               certificateExpiry: FakeAgent.now - 30)
            }
            let partly = try await client.request(.GET, host: "127.0.0.1", port: server.readinessPort, path: "/healthz/ready")
            #expect(partly == .init(status: 503, body: "not ready: proxy not LIVE (PRE_INITIALIZING); CDS not accepted yet; no valid certificate (expired 30s ago)\n"))

            agent.readiness.withLock {
                $0 = Readiness(proxyState: "LIVE", listenersAccepted: true, clustersAccepted: true,
                               certificateExpiry: FakeAgent.now + 3600, upstreamConnected: true)
            }
            for port in [server.statusPort, server.readinessPort] {
                let answer = try await client.request(.GET, host: "127.0.0.1", port: port, path: "/healthz/ready")
                #expect(answer == .init(status: 200, body: "ready\n"))
            }
            agent.readiness.withLock { $0.draining = true }
            let draining = try await client.request(.GET, host: "127.0.0.1", port: server.readinessPort, path: "/healthz/ready")
            #expect(draining == .init(status: 503, body: "not ready: draining\n"))
        }
    }

    @Test func theReadinessPortServesReadinessAlone() async throws {
        let agent = FakeAgent()
        try await withServer(agent) { server in
            for (method, path) in [(HTTPMethod.POST, "/quitquitquit"), (.POST, "/drain"), (.GET, "/stats/prometheus")] {
                let answer = try await client.request(method, host: "127.0.0.1", port: server.readinessPort, path: path)
                #expect(answer.status == 404, "\(path)")
            }
            #expect(agent.quits.count == 0)
        }
    }

    @Test func quitAndDrainFromLoopbackAreAccepted() async throws {
        let agent = FakeAgent()
        try await withServer(agent) { server in
            let quit = try await client.request(.POST, host: "127.0.0.1", port: server.statusPort, path: "/quitquitquit")
            #expect(quit == .init(status: 200, body: "OK\n"))
            #expect(await eventually { agent.quits.count == 1 })
            let drain = try await client.request(.POST, host: "127.0.0.1", port: server.statusPort, path: "/drain")
            #expect(drain == .init(status: 200, body: "OK\n"))
            #expect(await eventually { agent.drains.count == 1 })
            // The router's own 405, answered without running the route's action, the only place a quit starts.
            let wrongMethod = try await client.request(.GET, host: "127.0.0.1", port: server.statusPort, path: "/quitquitquit")
            #expect(wrongMethod == .init(status: 405, body: "method not allowed: use POST\n"))
            #expect(agent.quits.count == 1)
        }
    }

    @Test func quitAndDrainFromElsewhereAreRefused() async throws {
        let agent = FakeAgent()
        let routes = StatusServer.statusRoutes(agent.sources)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        for path in ["/quitquitquit", "/drain"] {
            let request = EndpointRequest(method: .POST, uri: path, peer: try SocketAddress(ipAddress: "192.0.2.7", port: 40000))
            let answer = try await routes.respond(to: request, on: loop).get()
            #expect(answer.status == .forbidden)
            #expect(answer.body == "forbidden: \(path) is only for callers on localhost, not 192.0.2.7\n")
            let local = EndpointRequest(method: .POST, uri: path, peer: try SocketAddress(ipAddress: "127.0.0.1", port: 40000))
            #expect(try await routes.respond(to: local, on: loop).get().status == .ok)
        }
        #expect(await eventually { agent.quits.count == 1 && agent.drains.count == 1 })
        let noPeer = EndpointRequest(method: .POST, uri: "/quitquitquit")
        #expect(try await routes.respond(to: noPeer, on: loop).get().status == .forbidden)
    }

    @Test(arguments: [("127.0.0.1", true), ("127.9.8.7", true), ("::1", true), ("::ffff:127.0.0.1", true),
                      ("10.0.0.1", false), ("::ffff:10.0.0.1", false), ("fd00::1", false), ("::", false), ("0.0.0.0", false)])
    func loopbackIsThisHostOnly(address: String, loopback: Bool) throws {
        #expect(StatusServer.isLoopback(try SocketAddress(ipAddress: address, port: 1)) == loopback)
    }

    @Test func prometheusMergesTheAgentsMetricsWithTheProxys() async throws {
        let agent = FakeAgent()
        agent.readiness.withLock {
            $0 = Readiness(proxyState: "LIVE", listenersAccepted: true, clustersAccepted: true,
                           certificateExpiry: FakeAgent.now + 7200, upstreamConnected: true)
        }
        let proxyText = "# TYPE envoy_server_state gauge\nenvoy_server_state 0\n"
        var proxyRoutes = EndpointRoutes()
        proxyRoutes.get("/stats/prometheus") { _ in .prometheus(proxyText) }
        let proxy = try await LoopbackServer(proxyRoutes)
        defer { Task { await proxy.close() } }

        try await withServer(agent) { server in
            let agentText = """
                # HELP capstan_agent_proxy_restarts_total Restarts of the proxy child after it crashed.
                # TYPE capstan_agent_proxy_restarts_total counter
                capstan_agent_proxy_restarts_total 2
                # HELP capstan_agent_certificate_expiry_seconds Seconds until the workload certificate expires.
                # TYPE capstan_agent_certificate_expiry_seconds gauge
                capstan_agent_certificate_expiry_seconds 7200
                # HELP capstan_agent_ready 1 when /healthz/ready answers 200.
                # TYPE capstan_agent_ready gauge
                capstan_agent_ready 1
                # HELP capstan_agent_xds_upstream_connected 1 while the xDS relay's stream to the control plane is up.
                # TYPE capstan_agent_xds_upstream_connected gauge
                capstan_agent_xds_upstream_connected 1

                """
            // Proxy down: the agent's part alone.
            agent.proxyMetricsPort.withLock { $0 = nil }
            let alone = try await client.request(.GET, host: "127.0.0.1", port: server.statusPort, path: "/stats/prometheus")
            #expect(alone == .init(status: 200, body: agentText))

            agent.proxyMetricsPort.withLock { $0 = proxy.port }
            let merged = try await client.request(.GET, host: "127.0.0.1", port: server.statusPort, path: "/stats/prometheus")
            #expect(merged == .init(status: 200, body: agentText + proxyText))

            // A proxy port with nobody listening counts as down.
            let reserved = try ReservedPort()
            let unused = reserved.port
            agent.proxyMetricsPort.withLock { $0 = unused }
            let down = try await client.request(.GET, host: "127.0.0.1", port: server.statusPort, path: "/stats/prometheus")
            #expect(down == .init(status: 200, body: agentText))
        }
    }

    @Test func aPortInUseIsReportedAndNothingStaysBound() async throws {
        let host = "127.0.0.2"
        let taken = try await LoopbackServer(EndpointRoutes(), host: host)
        defer { Task { await taken.close() } }
        var statusPort = 0
        var refusedTheTakenPort = false
        for _ in 1...10 {
            // A just-released port is sometimes refused while parallel tests bind and connect: then try another.
            statusPort = try await LoopbackServer.releasedPort(host: host)
            do {
                let server = try await StatusServer.start(host: host, statusPort: statusPort, readinessPort: taken.port,
                                                          sources: FakeAgent().sources)
                await server.close()
                Issue.record("bound a port in use")
                return
            } catch where error.port == statusPort {
                continue
            } catch {
                #expect(error.port == taken.port)
                #expect(error.description.hasPrefix("cannot listen on \(host):\(taken.port): "))
                refusedTheTakenPort = true
                break
            }
        }
        #expect(refusedTheTakenPort)
        // The status port, bound first, was closed again: nobody answers there (a connection the closing
        // socket had already queued is reset, which is not an answer either).
        if let answer = try? await client.request(.GET, host: host, port: statusPort, path: "/healthz/ready") {
            Issue.record("the status port still answers: \(answer)")
        }
    }
}
