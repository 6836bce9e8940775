import HTTPEndpoints
import NIOHTTP1
import Supervisor
import Testing

/// The agent's admin client against a real loopback server answering as the proxy does.
@Suite struct ProxyAdminClientTests {
    @Test func readsStateCountsInboundAndDrains() async throws {
        let fake = try await FakeProxyAdmin()
        defer { Task { await fake.close() } }
        let admin = ProxyAdminClient(port: fake.port)

        #expect(try await admin.state() == "LIVE")
        fake.state.withLock { $0 = "PRE_INITIALIZING" }
        #expect(try await admin.state() == "PRE_INITIALIZING", "a 503 with the state is an answer")

        fake.inboundConnections.withLock { $0 = 3 }
        #expect(try await admin.activeInboundConnections() == 3, "the outbound listener's 4 are not counted")
        fake.inboundConnections.withLock { $0 = 0 }
        #expect(try await admin.activeInboundConnections() == 0)

        try await admin.drainInbound()
        #expect(fake.drainCalls.all == ["graceful&inboundonly"])
        #expect(try await admin.prometheusText() == "envoy_server_state 0\n")
    }

    @Test func failuresNameTheURL() async throws {
        let reserved = try ReservedPort()
        let unused = reserved.port
        let admin = ProxyAdminClient(port: unused)
        await #expect(throws: OneShotHTTPClient.Failure.self) { try await admin.state() }
        do {
            _ = try await admin.state()
        } catch {
            #expect(error.url == "http://127.0.0.1:\(unused)/ready")
            #expect(error.reason.hasPrefix("cannot connect"))
        }

        var routes = EndpointRoutes()
        routes.post("/drain_listeners") { _ in EndpointResponse(.internalServerError, "no\n") }
        let refusing = try await LoopbackServer(routes)
        defer { Task { await refusing.close() } }
        do {
            try await ProxyAdminClient(port: refusing.port).drainInbound()
            Issue.record("a 500 was taken for success")
        } catch {
            #expect(error.description == "http://127.0.0.1:\(refusing.port)/drain_listeners?inboundonly&graceful: answered 500: no")
        }
    }

    @Test func everyCallHasADeadline() async throws {
        var routes = EndpointRoutes()
        routes.get("/ready", async: { _ in
            try? await Task.sleep(for: .seconds(5))
            return EndpointResponse(.ok, "LIVE\n")
        })
        let slow = try await LoopbackServer(routes)
        defer { Task { await slow.close() } }
        let clock = ContinuousClock()
        let began = clock.now
        do {
            _ = try await ProxyAdminClient(port: slow.port, timeout: .milliseconds(200)).state()
            Issue.record("answered despite the deadline")
        } catch {
            #expect(error.reason == "no answer within 200ms")
        }
        // Before the server's answer at 5 s: the deadline ended the call (a loaded machine may take a while
        // to run the timer, so the bound is the answer's time, not the deadline's).
        #expect(began.duration(to: clock.now) < .seconds(5))
    }
}
