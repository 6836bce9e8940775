import Foundation
import Supervisor
import Testing

/// SIGTERM's drain against a real loopback server standing in for the proxy admin API, and a real child.
@Suite struct DrainCoordinatorTests {
    static func sleeper() throws -> ProxyChild {
        let child = ProxyChild(command: ProxyChild.Command(executable: "/bin/sleep", arguments: ["30"]))
        try child.start()
        return child
    }

    static func coordinator(_ fake: FakeProxyAdmin, _ child: ProxyChild, minimum: Duration, termination: Duration,
                            log: @escaping @Sendable (String) -> Void = { _ in }) -> DrainCoordinator {
        DrainCoordinator(admin: ProxyAdminClient(port: fake.port, timeout: .milliseconds(500)), child: child,
                         timing: .init(minimum: minimum, termination: termination, pollInterval: .milliseconds(50),
                                       stopGrace: .seconds(2)),
                         log: log)
    }

    @Test func waitsAtLeastTheMinimumEvenWithNoConnections() async throws {
        let fake = try await FakeProxyAdmin()
        defer { Task { await fake.close() } }
        let child = try Self.sleeper()
        let drain = Self.coordinator(fake, child, minimum: .milliseconds(400), termination: .seconds(5))
        #expect(drain.isDraining == false)
        let report = await drain.drain()
        #expect(drain.isDraining)
        #expect(fake.drainCalls.all == ["graceful&inboundonly"])
        #expect(report.ending == .connectionsClosed)
        #expect(report.drainedFor >= .milliseconds(400))
        #expect(report.drainedFor < .seconds(3))
        #expect(report.proxy == .stopped(.killed(signal: SIGTERM)))
        #expect(child.isRunning == false)
    }

    @Test func endsWhenInboundConnectionsReachZero() async throws {
        let fake = try await FakeProxyAdmin()
        defer { Task { await fake.close() } }
        fake.inboundConnections.withLock { $0 = 2 }
        fake.dropsToZeroAfterDrain.withLock { $0 = .milliseconds(700) }
        let child = try Self.sleeper()
        let report = await Self.coordinator(fake, child, minimum: .milliseconds(100), termination: .seconds(10)).drain()
        #expect(report.ending == .connectionsClosed)
        #expect(report.drainedFor >= .milliseconds(700))
        #expect(report.drainedFor < .seconds(5))
        #expect(child.isRunning == false)
    }

    /// A gateway (`--type router`): no drain asked of the proxy (its listeners keep taking connections),
    /// not ready from the start, and no early end with zero connections: the full termination time.
    @Test func aGatewayKeepsServingUntilTheTerminationTime() async throws {
        let fake = try await FakeProxyAdmin()
        defer { Task { await fake.close() } }
        let child = try Self.sleeper()
        var timing = DrainCoordinator.Timing(minimum: .milliseconds(100), termination: .milliseconds(700), pollInterval: .milliseconds(50),
                                             stopGrace: .seconds(2))
        timing.keepsServing = true
        let drain = DrainCoordinator(admin: ProxyAdminClient(port: fake.port, timeout: .milliseconds(500)), child: child, timing: timing)
        let report = await drain.drain()
        #expect(drain.isDraining)
        #expect(fake.drainCalls.count == 0, "the listeners were not drained")
        #expect(report.ending == .deadline(activeConnections: nil))
        #expect(report.drainedFor >= .milliseconds(700))
        #expect(report.drainedFor < .seconds(3))
        #expect(report.proxy == .stopped(.killed(signal: SIGTERM)))
        #expect(child.isRunning == false)
    }

    @Test func stopsAtTheTerminationDeadlineWhenConnectionsStay() async throws {
        let fake = try await FakeProxyAdmin()
        defer { Task { await fake.close() } }
        fake.inboundConnections.withLock { $0 = 2 }
        let child = try Self.sleeper()
        let drain = Self.coordinator(fake, child, minimum: .milliseconds(100), termination: .milliseconds(600))
        // Asked twice (a second SIGTERM): one drain, one answer.
        async let first = drain.drain()
        async let second = drain.drain()
        let (report, again) = await (first, second)
        #expect(report == again)
        #expect(report.ending == .deadline(activeConnections: 2))
        #expect(report.drainedFor >= .milliseconds(600))
        #expect(report.drainedFor < .seconds(3))
        #expect(report.proxy == .stopped(.killed(signal: SIGTERM)))
        #expect(fake.drainCalls.count == 1)
    }

    @Test func quitCutsTheDrainShort() async throws {
        let fake = try await FakeProxyAdmin()
        defer { Task { await fake.close() } }
        fake.inboundConnections.withLock { $0 = 1 }
        let child = try Self.sleeper()
        let drain = Self.coordinator(fake, child, minimum: .seconds(5), termination: .seconds(20))
        let draining = Task { await drain.drain() }
        #expect(await eventually { fake.drainCalls.count == 1 })
        let clock = ContinuousClock()
        let began = clock.now
        #expect(await drain.quit() == .stopped(.killed(signal: SIGTERM)))
        let report = await draining.value
        #expect(report.ending == .quit)
        #expect(began.duration(to: clock.now) < .seconds(3))
    }

    @Test func drainInboundAloneStopsNothing() async throws {
        let fake = try await FakeProxyAdmin()
        defer { Task { await fake.close() } }
        fake.inboundConnections.withLock { $0 = 2 }
        let child = try Self.sleeper()
        // The child's state when a drain decides to stop it (logged just before the stop).
        let childAtDrainEnd = CallLog()
        let drain = Self.coordinator(fake, child, minimum: .milliseconds(100), termination: .milliseconds(200)) { line in
            if line.hasPrefix("drain over") { childAtDrainEnd.record(child.isRunning ? "running" : "stopped") }
        }
        await drain.drainInbound()
        await drain.drainInbound()
        #expect(fake.drainCalls.all == ["graceful&inboundonly"])
        #expect(drain.isDraining)
        // A SIGTERM drain afterwards asks the proxy nothing more and runs to its own deadline, a whole
        // termination time after drainInbound: the child is still running when that deadline stops it.
        let report = await drain.drain()
        #expect(report.ending == .deadline(activeConnections: 2))
        #expect(childAtDrainEnd.all == ["running"])
        #expect(report.proxy == .stopped(.killed(signal: SIGTERM)))
        #expect(fake.drainCalls.count == 1)
    }

    @Test func aProxyThatIsGoneHasNothingToDrain() async throws {
        let reserved = try ReservedPort()
        let unused = reserved.port
        let child = try Self.sleeper()
        await child.stop(grace: .seconds(2))
        let drain = DrainCoordinator(admin: ProxyAdminClient(port: unused, timeout: .milliseconds(200)), child: child,
                                     timing: .init(minimum: .milliseconds(100), termination: .seconds(10),
                                                   pollInterval: .milliseconds(50)))
        let report = await drain.drain()
        #expect(report.ending == .proxyNotRunning)
        #expect(report.drainedFor < .seconds(3))
    }
}
