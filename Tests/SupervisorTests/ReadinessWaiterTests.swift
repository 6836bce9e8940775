import HTTPEndpoints
import NIOHTTP1
import Supervisor
import Synchronization
import Testing

/// `capstan wait`: polling the readiness port until it answers 200, or failing after the timeout.
@Suite struct ReadinessWaiterTests {
    /// Answers 503 to the first `failures` requests, then 200.
    static func readyAfter(_ failures: Int) async throws -> (LoopbackServer, CallLog) {
        let calls = CallLog()
        var routes = EndpointRoutes()
        routes.get("/healthz/ready") { _ in
            calls.record("ready?")
            return calls.count > failures ? EndpointResponse(.ok, "ready\n")
                : EndpointResponse(.serviceUnavailable, "not ready: proxy not LIVE (PRE_INITIALIZING)\n")
        }
        return (try await LoopbackServer(routes), calls)
    }

    @Test func returnsOnceReady() async throws {
        let (server, calls) = try await Self.readyAfter(3)
        defer { Task { await server.close() } }
        let waiter = ReadinessWaiter(host: "127.0.0.1", port: server.port, timeout: .seconds(10), interval: .milliseconds(20))
        #expect(try await waiter.wait() == 4)
        #expect(calls.count == 4)
    }

    @Test func failsAfterTheTimeoutWithTheLastAnswer() async throws {
        let (server, _) = try await Self.readyAfter(Int.max)
        defer { Task { await server.close() } }
        // Generous against a busy machine (the whole suite at once has delayed a first attempt by 4 s):
        // more than one attempt must fit however slow the first is.
        let waiter = ReadinessWaiter(host: "127.0.0.1", port: server.port, timeout: .seconds(6), interval: .milliseconds(20))
        let clock = ContinuousClock()
        let began = clock.now
        do {
            try await waiter.wait()
            Issue.record("ready although never 200")
        } catch {
            #expect(error.url == "http://127.0.0.1:\(server.port)/healthz/ready")
            #expect(error.lastAnswer == "503 not ready: proxy not LIVE (PRE_INITIALIZING)")
            #expect(error.attempts >= 2)
            #expect(error.description.hasPrefix("http://127.0.0.1:\(server.port)/healthz/ready not ready within 6s ("))
        }
        let took = began.duration(to: clock.now)
        #expect(took >= .seconds(6))
        #expect(took < .seconds(20))
    }

    @Test func nobodyListeningIsReportedAsSuch() async throws {
        let reserved = try ReservedPort()
        let unused = reserved.port
        let waiter = ReadinessWaiter(host: "127.0.0.1", port: unused, timeout: .milliseconds(200), interval: .milliseconds(50))
        await #expect(throws: ReadinessWaitError.self) { try await waiter.wait() }
        do {
            try await waiter.wait()
        } catch {
            #expect(error.lastAnswer.hasPrefix("cannot connect"))
        }
    }

    @Test func defaultsAreIstios() {
        let waiter = ReadinessWaiter()
        #expect(waiter.url == "http://localhost:15021/healthz/ready")
        #expect(waiter.timeout == .seconds(60))
        #expect(waiter.requestTimeout == .milliseconds(500))
        #expect(waiter.interval == .milliseconds(500))
    }
}
