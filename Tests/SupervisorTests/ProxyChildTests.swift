import Foundation
import Supervisor
import Testing

/// The proxy child's lifecycle with real processes: restarts with backoff, giving up, stopping with
/// SIGTERM and SIGKILL.
@Suite struct ProxyChildTests {
    static func shell(_ script: String, environment: [String: String]? = nil) -> ProxyChild.Command {
        ProxyChild.Command(executable: "/bin/sh", arguments: ["-c", script], environment: environment)
    }

    /// Every event until the stream ends.
    static func collect(_ child: ProxyChild) -> Task<[ProxyChild.Event], Never> {
        Task {
            var seen: [ProxyChild.Event] = []
            for await event in child.events { seen.append(event) }
            return seen
        }
    }

    @Test func restartsWithDoublingBackoffThenGivesUp() async throws {
        let policy = ProxyChild.RestartPolicy(initialBackoff: .milliseconds(20), maximumBackoff: .milliseconds(80),
                                              crashLimit: 5, crashWindow: .seconds(60))
        let child = ProxyChild(command: Self.shell("exit 3"), policy: policy)
        let events = Self.collect(child)
        let clock = ContinuousClock()
        let began = clock.now
        try child.start()
        let outcome = await child.finished()
        let took = began.duration(to: clock.now)

        #expect(outcome == .gaveUp(crashes: 6, within: .seconds(60), lastStatus: .exited(code: 3)))
        #expect(child.restarts == 5)
        #expect(child.isRunning == false)
        let seen = await events.value
        #expect(seen.filter { if case .started = $0 { true } else { false } }.count == 6)
        #expect(seen.filter { if case .exited(_, .exited(code: 3), true) = $0 { true } else { false } }.count == 6)
        let delays = seen.compactMap { if case .restarting(let delay) = $0 { delay } else { nil } }
        #expect(delays == [.milliseconds(20), .milliseconds(40), .milliseconds(80), .milliseconds(80), .milliseconds(80)])
        #expect(seen.last == .gaveUp(crashes: 6, within: .seconds(60)))
        #expect(took >= .milliseconds(300), "the backoffs add up to 300 ms")
    }

    @Test func crashesSpreadBeyondTheWindowDoNotGiveUp() async throws {
        // Restarts 400 ms apart put one crash in any 150 ms, two when a loaded machine notices one exit late
        // (by up to 400 ms: the whole suite beside a build has taken more than 150): never the three that give up.
        let policy = ProxyChild.RestartPolicy(initialBackoff: .milliseconds(400), maximumBackoff: .milliseconds(400),
                                              crashLimit: 2, crashWindow: .milliseconds(150))
        let starts = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-starts-\(getpid())-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: starts) }
        // Crashes at its first four starts, then runs: the stop below finds a process running, no restart pending.
        let child = ProxyChild(command: Self.shell(#"echo >> "$STARTS"; [ "$(wc -l < "$STARTS")" -gt 4 ] && exec sleep 30; exit 1"#,
                                                   environment: ["STARTS": starts, "PATH": "/usr/bin:/bin"]),
                               policy: policy)
        try child.start()
        // A bound, not a measure: four restarts take 1.6 s, longer when every suite runs at once.
        #expect(await eventually(within: 30) { child.restarts == 4 })
        #expect(child.outcome == nil)
        let pid = try #require(child.pid)
        // stop() returns once the running process's exit is recorded (a status, so no restart was pending)
        // and reaped; an exit asked for schedules no restart, so the count is final now.
        #expect(await child.stop(grace: .seconds(2)) == .stopped(.killed(signal: SIGTERM)))
        #expect(kill(pid, 0) == -1, "the pid was reaped")
        #expect(child.restarts == 4, "no restart after a stop")
    }

    @Test func stopSendsSIGTERMAndIsNotACrash() async throws {
        let child = ProxyChild(command: ProxyChild.Command(executable: "/bin/sleep", arguments: ["30"]))
        let events = Self.collect(child)
        try child.start()
        let pid = try #require(child.pid)
        #expect(kill(pid, 0) == 0)
        let clock = ContinuousClock()
        let began = clock.now
        let outcome = await child.stop(grace: .seconds(10))
        #expect(began.duration(to: clock.now) < .seconds(5))
        #expect(outcome == .stopped(.killed(signal: SIGTERM)))
        #expect(child.pid == nil)
        #expect(child.restarts == 0)
        #expect(await events.value == [.started(pid: pid, restart: 0), .exited(pid: pid, status: .killed(signal: SIGTERM), crashed: false)])
        #expect(kill(pid, 0) == -1, "the pid was reaped")
        // Stopping again answers the same.
        #expect(await child.stop(grace: .seconds(1)) == outcome)
    }

    @Test func stopKillsAChildThatIgnoresSIGTERM() async throws {
        let marker = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-trap-\(getpid())-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: marker) }
        // The loop's sleeps are short, so none outlives the shell by more than 100 ms.
        let child = ProxyChild(command: Self.shell(#"trap "" TERM; touch "$MARKER"; while :; do sleep 0.1; done"#,
                                                   environment: ["MARKER": marker, "PATH": "/usr/bin:/bin"]))
        try child.start()
        #expect(await eventually { FileManager.default.fileExists(atPath: marker) })
        let clock = ContinuousClock()
        let began = clock.now
        let outcome = await child.stop(grace: .milliseconds(400))
        let took = began.duration(to: clock.now)
        #expect(outcome == .stopped(.killed(signal: SIGKILL)))
        #expect(took >= .milliseconds(400))
        #expect(took < .seconds(5))
    }

    @Test func passesArgumentsAndEnvironment() async throws {
        let child = ProxyChild(command: Self.shell(#"exit "$CODE""#, environment: ["CODE": "7"]),
                               policy: .init(initialBackoff: .milliseconds(10), crashLimit: 0))
        try child.start()
        #expect(await child.finished() == .gaveUp(crashes: 1, within: .seconds(60), lastStatus: .exited(code: 7)))
    }

    /// A descriptor the agent has open when the proxy starts (a probe connection, a listener) must not
    /// live on in the proxy: NIO opens its sockets without close-on-exec.
    @Test func passesOnNoDescriptorBeyondTheStandardThree() async throws {
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        let child = ProxyChild(command: Self.shell(#"[ -e "/proc/$$/fd/$FD" ] && exit 9; [ -e /proc/$$/fd/2 ] || exit 8; exit 0"#,
                                                   environment: ["FD": "\(ends[1])"]),
                               policy: .init(initialBackoff: .milliseconds(10), crashLimit: 0))
        try child.start()
        #expect(await child.finished() == .gaveUp(crashes: 1, within: .seconds(60), lastStatus: .exited(code: 0)))
    }

    @Test func aChildThatCannotStartIsRefused() throws {
        let child = ProxyChild(command: ProxyChild.Command(executable: "/nonexistent/capstan", arguments: ["proxy"]))
        #expect(throws: ProxyChildError.cannotStart(executable: "/nonexistent/capstan", reason: "No such file or directory")) {
            try child.start()
        }
        #expect(child.isRunning == false)
    }

    @Test func startsOnlyOnce() async throws {
        let child = ProxyChild(command: ProxyChild.Command(executable: "/bin/sleep", arguments: ["30"]))
        try child.start()
        #expect(throws: ProxyChildError.alreadyStarted) { try child.start() }
        await child.stop(grace: .seconds(5))
    }

    @Test func backoffDoublesUpToTheMaximum() {
        let policy = ProxyChild.RestartPolicy()
        #expect((1...8).map(policy.backoff(crashes:)) == [.milliseconds(100), .milliseconds(200), .milliseconds(400),
                                                          .milliseconds(800), .milliseconds(1600), .milliseconds(3200),
                                                          .seconds(5), .seconds(5)])
    }
}
