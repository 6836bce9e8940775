import CProcessSpawn
import Configuration
import Dispatch
import NIOConcurrencyHelpers
import XDS
#if canImport(Glibc)
import Glibc
#endif

/// The proxy as the agent's child process: started with `posix_spawn`, watched, restarted after a crash
/// with a doubling delay, given up on when it crashes more than ``RestartPolicy/crashLimit`` times
/// within ``RestartPolicy/crashWindow`` (the agent then exits non-zero), and stopped with SIGTERM, then
/// SIGKILL. An exit the agent asked for is not a crash.
///
/// Only this child's pid is ever waited for or signalled; its pid stays reserved (unreaped) until the
/// exit has been recorded, so a signal never reaches a recycled pid.
public final class ProxyChild: Sendable {
    /// What to run. Standard output and error are the agent's.
    public struct Command: Sendable, Equatable {
        /// A path, or a name looked up in `PATH`.
        public var executable: String
        public var arguments: [String]
        /// The child's whole environment; nil: the agent's.
        public var environment: [String: String]?

        public init(executable: String, arguments: [String], environment: [String: String]? = nil) {
            self.executable = executable
            self.arguments = arguments
            self.environment = environment
        }
    }

    /// When to restart and when to give up.
    public struct RestartPolicy: Sendable, Equatable {
        /// The delays between restarts, without jitter: the first after one crash in the window,
        /// doubling with each further crash still inside it.
        public var restartDelay: RetryBackoff
        /// More crashes than this within ``crashWindow`` and the child is given up on.
        public var crashLimit: Int
        public var crashWindow: Duration

        public init(initialBackoff: Duration = .milliseconds(100), maximumBackoff: Duration = .seconds(5),
                    crashLimit: Int = 5, crashWindow: Duration = .seconds(60)) {
            restartDelay = RetryBackoff(initial: initialBackoff, maximum: maximumBackoff, jitter: .none)
            self.crashLimit = crashLimit
            self.crashWindow = crashWindow
        }

        /// The delay after the first crash; it doubles with each crash still inside the window.
        public var initialBackoff: Duration {
            get { restartDelay.initial }
            set { restartDelay.initial = newValue }
        }

        public var maximumBackoff: Duration {
            get { restartDelay.maximum }
            set { restartDelay.maximum = newValue }
        }

        /// The wait before the next start, when `crashes` crashes are inside the window.
        public func backoff(crashes: Int) -> Duration {
            restartDelay.delay(attempt: crashes - 1)
        }
    }

    /// How a child process ended.
    public enum ExitStatus: Sendable, Equatable, CustomStringConvertible {
        case exited(code: Int32)
        case killed(signal: Int32)
        /// Reaped by someone else in this process: the status is lost.
        case unknown

        init(waitStatus status: Int32) {
            if status & 0x7F == 0 {
                self = .exited(code: (status >> 8) & 0xFF)
            } else {
                self = .killed(signal: status & 0x7F)
            }
        }

        public var description: String {
            switch self {
            case .exited(let code): "exit status \(code)"
            case .killed(let signal): "killed by signal \(signal)\(signal == SIGKILL ? " (SIGKILL)" : signal == SIGTERM ? " (SIGTERM)" : "")"
            case .unknown: "exit status unknown"
            }
        }
    }

    /// What happened to the child, in order.
    public enum Event: Sendable, Equatable {
        /// A process is running; `restart` is 0 for the first, then counts up.
        case started(pid: Int32, restart: Int)
        /// A process ended; `crashed` is false when the agent had asked it to stop.
        case exited(pid: Int32, status: ExitStatus, crashed: Bool)
        /// A restart could not spawn the process (counted as a crash).
        case failedToStart(reason: String)
        /// The next start, after a crash, is in `delay`.
        case restarting(after: Duration)
        /// Too many crashes: no more restarts.
        case gaveUp(crashes: Int, within: Duration)
    }

    /// How the child's life ended, for the agent's exit code.
    public enum Outcome: Sendable, Equatable, CustomStringConvertible {
        /// Stopped on request; the last process's status (nil if none was running at the time).
        case stopped(ExitStatus?)
        /// More than the crash limit within the window: the agent should exit non-zero.
        case gaveUp(crashes: Int, within: Duration, lastStatus: ExitStatus?)

        public var description: String {
            switch self {
            case .stopped(let status): "proxy stopped" + (status.map { " (\($0))" } ?? "")
            case .gaveUp(let crashes, let window, let status):
                "proxy crashed \(crashes) times within \(GoDuration.format(window))" + (status.map { ", last: \($0)" } ?? "") + "; giving up"
            }
        }
    }

    private enum Phase {
        case notStarted
        case running(pid_t)
        case waitingToRestart
        case finished(Outcome)
    }

    private struct State {
        var phase = Phase.notStarted
        var stopRequested = false
        var crashTimes: [Duration] = []
        var restarts = 0
        var lastStatus: ExitStatus?
        var restartTask: Task<Void, Never>?
        var waiters: [CheckedContinuation<Outcome, Never>] = []
    }

    public let command: Command
    public let policy: RestartPolicy
    /// Events as they happen, for one reader (the agent's log and metrics). Holds the latest 256 if unread.
    public let events: AsyncStream<Event>
    private let eventSink: AsyncStream<Event>.Continuation
    private let state = NIOLockedValueBox(State())
    /// Time since this object was made, on the injected clock.
    private let now: @Sendable () -> Duration
    private let sleep: @Sendable (Duration) async throws -> Void

    /// A child not yet started; `clock` times the backoff, the crash window and the stop grace.
    public init<C: Clock>(command: Command, policy: RestartPolicy = RestartPolicy(),
                          clock: C = ContinuousClock()) where C.Duration == Duration {
        self.command = command
        self.policy = policy
        let origin = clock.now
        now = { origin.duration(to: clock.now) }
        sleep = { try await clock.sleep(for: $0, tolerance: nil) }
        (events, eventSink) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(256))
    }

    /// The running process's pid, if one runs.
    public var pid: Int32? {
        state.withLockedValue { if case .running(let pid) = $0.phase { pid } else { nil } }
    }

    public var isRunning: Bool { pid != nil }

    /// Restarts after crashes so far (the metric `capstan_agent_proxy_restarts_total`).
    public var restarts: Int { state.withLockedValue { $0.restarts } }

    /// The outcome once the child is done for good (stopped, or given up on); nil before.
    public var outcome: Outcome? {
        state.withLockedValue { if case .finished(let outcome) = $0.phase { outcome } else { nil } }
    }

    /// Starts the first process. Fails if it cannot be spawned (no such file, not executable), or if
    /// the child was started before.
    public func start() throws(ProxyChildError) {
        let spawned = state.withLockedValue { state -> Result<pid_t, ProxyChildError> in
            guard case .notStarted = state.phase, !state.stopRequested else { return .failure(.alreadyStarted) }
            do throws(ProxyChildError) {
                let pid = try Self.spawn(command)
                state.phase = .running(pid)
                return .success(pid)
            } catch {
                return .failure(error)
            }
        }
        let pid = try spawned.get()
        eventSink.yield(.started(pid: pid, restart: 0))
        watch(pid)
    }

    /// Resolves when the child is done for good: stopped on request, or given up on.
    public func finished() async -> Outcome {
        await withCheckedContinuation { continuation in
            let done = state.withLockedValue { state -> Outcome? in
                if case .finished(let outcome) = state.phase { return outcome }
                state.waiters.append(continuation)
                return nil
            }
            if let done { continuation.resume(returning: done) }
        }
    }

    /// Stops the child for good: SIGTERM, then SIGKILL if it is still running after `grace`. A pending
    /// restart is cancelled. Returns the outcome (which is the earlier one if the child was done already).
    @discardableResult
    public func stop(grace: Duration) async -> Outcome {
        var completion: Completion?
        let running = state.withLockedValue { state -> pid_t? in
            state.stopRequested = true
            switch state.phase {
            case .running(let pid):
                kill(pid, SIGTERM)
                return pid
            case .notStarted, .waitingToRestart:
                state.restartTask?.cancel()
                state.restartTask = nil
                completion = finish(.stopped(nil), in: &state)
                return nil
            case .finished:
                return nil
            }
        }
        complete(completion)
        var killer: Task<Void, Never>?
        if let running {
            killer = Task { [state, sleep] in
                do { try await sleep(grace) } catch { return }
                state.withLockedValue { state in
                    // Still unreaped, so the pid is still ours.
                    if case .running(let pid) = state.phase, pid == running { kill(pid, SIGKILL) }
                }
            }
        }
        let outcome = await finished()
        killer?.cancel()
        return outcome
    }

    // MARK: Watching and restarting

    /// Waits for `pid` to exit on a thread of its own, without reaping it; the exit is then recorded
    /// and the pid reaped under the lock.
    private func watch(_ pid: pid_t) {
        DispatchQueue(label: "capstan.proxy-child.\(pid)").async { [self] in
            var info = siginfo_t()
            while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
            exited(pid)
        }
    }

    private func exited(_ pid: pid_t) {
        var events: [Event] = []
        var completion: Completion?
        let restartDelay = state.withLockedValue { state -> Duration? in
            var raw: Int32 = 0
            var reaped: pid_t
            repeat { reaped = waitpid(pid, &raw, WNOHANG) } while reaped < 0 && errno == EINTR
            let status = reaped == pid ? ExitStatus(waitStatus: raw) : .unknown
            state.lastStatus = status
            events.append(.exited(pid: pid, status: status, crashed: !state.stopRequested))
            if state.stopRequested {
                completion = finish(.stopped(status), in: &state)
                return nil
            }
            return crashed(in: &state, events: &events, completion: &completion)
        }
        for event in events { eventSink.yield(event) }
        if let restartDelay { scheduleRestart(after: restartDelay) }
        complete(completion)
    }

    /// Counts a crash; the delay before the next start, or nil if the child is given up on.
    private func crashed(in state: inout State, events: inout [Event], completion: inout Completion?) -> Duration? {
        let time = now()
        state.crashTimes.append(time)
        state.crashTimes.removeAll { time - $0 > policy.crashWindow }
        if state.crashTimes.count > policy.crashLimit {
            events.append(.gaveUp(crashes: state.crashTimes.count, within: policy.crashWindow))
            completion = finish(.gaveUp(crashes: state.crashTimes.count, within: policy.crashWindow, lastStatus: state.lastStatus), in: &state)
            return nil
        }
        state.phase = .waitingToRestart
        let delay = policy.backoff(crashes: state.crashTimes.count)
        events.append(.restarting(after: delay))
        return delay
    }

    private func scheduleRestart(after delay: Duration) {
        let task = Task { [self] in
            do { try await sleep(delay) } catch { return }
            restart()
        }
        state.withLockedValue { state in
            if case .waitingToRestart = state.phase { state.restartTask = task } else { task.cancel() }
        }
    }

    private func restart() {
        var events: [Event] = []
        var completion: Completion?
        let (started, retryDelay) = state.withLockedValue { state -> (pid_t?, Duration?) in
            guard case .waitingToRestart = state.phase, !state.stopRequested else { return (nil, nil) }
            state.restartTask = nil
            do throws(ProxyChildError) {
                let pid = try Self.spawn(command)
                state.phase = .running(pid)
                state.restarts += 1
                events.append(.started(pid: pid, restart: state.restarts))
                return (pid, nil)
            } catch {
                events.append(.failedToStart(reason: error.description))
                return (nil, crashed(in: &state, events: &events, completion: &completion))
            }
        }
        for event in events { eventSink.yield(event) }
        if let started { watch(started) }
        if let retryDelay { scheduleRestart(after: retryDelay) }
        complete(completion)
    }

    /// The end of the child's story, to be told after its last events: the outcome and who waits for it.
    private struct Completion {
        var outcome: Outcome
        var waiters: [CheckedContinuation<Outcome, Never>]
    }

    /// Records that the child is done for good (under the lock); nil if it already was. The caller
    /// yields its last events, then calls `complete`, so no event is lost to a finished stream.
    private func finish(_ outcome: Outcome, in state: inout State) -> Completion? {
        if case .finished = state.phase { return nil }
        state.phase = .finished(outcome)
        defer { state.waiters = [] }
        return Completion(outcome: outcome, waiters: state.waiters)
    }

    /// Ends the event stream, then wakes those waiting in `finished()`.
    private func complete(_ completion: Completion?) {
        guard let completion else { return }
        eventSink.finish()
        for waiter in completion.waiters { waiter.resume(returning: completion.outcome) }
    }

    // MARK: Spawning

    /// `posix_spawn` with every signal at its default and none blocked: the agent's own handling
    /// (ignored SIGTERM, blocked signals) must not reach the child. Nor do its descriptors: only 0-2 are
    /// passed on. NIO accepts and connects without `SOCK_CLOEXEC`, so without this a probe connection the
    /// status server was answering at that moment stayed open in the proxy after the agent closed it (its
    /// client waited for the end of the answer for seconds), and the proxy held the agent's listeners
    /// and its connections to the CA.
    private static func spawn(_ command: Command) throws(ProxyChildError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let closing = capstan_spawn_close_from(&actions, 3)
        guard closing == 0 else {
            throw .cannotStart(executable: command.executable, reason: "closing descriptors: \(String(cString: strerror(closing)))")
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv = ([command.executable] + command.arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let envp: [UnsafeMutablePointer<CChar>?]? = command.environment.map { environment in
            environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        }
        defer { envp?.forEach { free($0) } }

        var pid = pid_t()
        let result: Int32
        if let envp {
            result = command.executable.contains("/")
                ? posix_spawn(&pid, command.executable, &actions, &attributes, argv, envp)
                : posix_spawnp(&pid, command.executable, &actions, &attributes, argv, envp)
        } else {
            result = command.executable.contains("/")
                ? posix_spawn(&pid, command.executable, &actions, &attributes, argv, environ)
                : posix_spawnp(&pid, command.executable, &actions, &attributes, argv, environ)
        }
        guard result == 0 else {
            throw .cannotStart(executable: command.executable, reason: String(cString: strerror(result)))
        }
        return pid
    }
}
