import Configuration
import NIOConcurrencyHelpers

/// Ends the pod's traffic in Istio's order. On SIGTERM (``drain()``): the proxy's inbound listeners
/// drain gracefully (new inbound connections are refused, open ones run on, outbound keeps working
/// while the application shuts down); once `minimum` has passed and no inbound connection is left, or
/// at `termination` at the latest, the proxy child is stopped (SIGTERM, then SIGKILL after
/// `stopGrace`). `POST /drain` (``drainInbound()``) starts the same inbound drain without ending
/// anything; `POST /quitquitquit` (``quit()``) stops the proxy at once, cutting a drain short.
public final class DrainCoordinator: Sendable {
    public struct Timing: Sendable, Equatable {
        /// `MINIMUM_DRAIN_DURATION`: the least time inbound drains before zero connections may end it.
        public var minimum: Duration
        /// `TERMINATION_DRAIN_DURATION_SECONDS`: the longest inbound drains.
        public var termination: Duration
        /// How often open inbound connections are counted.
        public var pollInterval: Duration
        /// How long the proxy gets between SIGTERM and SIGKILL.
        public var stopGrace: Duration
        /// A gateway's drain (`--type router`): readiness fails at once so the load balancer takes the
        /// pod out, but the listeners stay open and keep taking connections until `termination`, since
        /// clients keep arriving until the load balancer has noticed; no early end on zero connections.
        public var keepsServing = false

        public init(minimum: Duration = .seconds(5), termination: Duration = .seconds(5),
                    pollInterval: Duration = .seconds(1), stopGrace: Duration = .seconds(5)) {
            self.minimum = minimum
            self.termination = termination
            self.pollInterval = pollInterval
            self.stopGrace = stopGrace
        }

        /// The agent's settings' durations, with the given poll interval and stop grace.
        public init(settings: AgentSettings, pollInterval: Duration = .seconds(1), stopGrace: Duration = .seconds(5)) {
            self.init(minimum: settings.minimumDrainDuration, termination: settings.terminationDrainDuration,
                      pollInterval: pollInterval, stopGrace: stopGrace)
            keepsServing = settings.proxyType == .router
        }
    }

    /// Why the wait for inbound connections ended.
    public enum Ending: Sendable, Equatable {
        /// No inbound connection was left after the minimum drain time.
        case connectionsClosed
        /// The termination drain time passed; the last count (nil if it could not be read).
        case deadline(activeConnections: Int?)
        /// The proxy child was not running, so there was nothing to drain.
        case proxyNotRunning
        /// `/quitquitquit` cut the drain short.
        case quit
    }

    /// What a drain did.
    public struct Report: Sendable, Equatable {
        public var ending: Ending
        /// From the start of the drain to the child's stop being asked.
        public var drainedFor: Duration
        public var proxy: ProxyChild.Outcome
    }

    private struct State {
        var inboundDrainAsked = false
        var drain: Task<Report, Never>?
        var quitting = false
    }

    public let timing: Timing
    private let admin: ProxyAdminClient
    private let child: ProxyChild
    private let log: @Sendable (String) -> Void
    private let state = NIOLockedValueBox(State())
    private let now: @Sendable () -> Duration
    private let sleep: @Sendable (Duration) async throws -> Void

    /// `log` receives one line per step (drain asked, counts, ending), for the agent's log.
    public init<C: Clock>(admin: ProxyAdminClient, child: ProxyChild, timing: Timing, clock: C = ContinuousClock(),
                          log: @escaping @Sendable (String) -> Void = { _ in }) where C.Duration == Duration {
        self.admin = admin
        self.child = child
        self.timing = timing
        self.log = log
        let origin = clock.now
        now = { origin.duration(to: clock.now) }
        sleep = { try await clock.sleep(for: $0, tolerance: nil) }
    }

    /// Whether an inbound drain was started (readiness then reports `draining`).
    public var isDraining: Bool { state.withLockedValue { $0.inboundDrainAsked } }

    /// `POST /drain`: asks the proxy to drain its inbound listeners gracefully, once; nothing exits.
    public func drainInbound() async {
        let first = state.withLockedValue { state in
            defer { state.inboundDrainAsked = true }
            return !state.inboundDrainAsked
        }
        guard first else { return }
        do {
            try await admin.drainInbound()
            log("inbound listeners draining")
        } catch {
            log("cannot ask the proxy to drain inbound: \(error)")
        }
    }

    /// SIGTERM: drains inbound, waits for inbound connections as described above, then stops the proxy
    /// child. Calling it again (or concurrently) waits for the same drain.
    public func drain() async -> Report {
        let task = state.withLockedValue { state in
            if let running = state.drain { return running }
            let task = Task { await self.run() }
            state.drain = task
            return task
        }
        return await task.value
    }

    /// `POST /quitquitquit`: stops the proxy child now (SIGTERM, then SIGKILL after the grace), and
    /// ends a drain in progress.
    @discardableResult
    public func quit() async -> ProxyChild.Outcome {
        let drain = state.withLockedValue { state in
            state.quitting = true
            return state.drain
        }
        drain?.cancel()
        log("quitting: stopping the proxy")
        return await child.stop(grace: timing.stopGrace)
    }

    /// The gateway's drain: not ready from now on, listeners open until the termination drain time.
    private func serveThroughDrain() async -> Report {
        let start = now()
        state.withLockedValue { $0.inboundDrainAsked = true }
        log("draining a gateway: not ready, listeners keep serving for \(GoDuration.format(timing.termination))")
        var ending = Ending.deadline(activeConnections: nil)
        while true {
            if state.withLockedValue({ $0.quitting }) || Task.isCancelled {
                ending = .quit
                break
            }
            let left = timing.termination - (now() - start)
            if left <= .zero { break }
            if !child.isRunning {
                ending = .proxyNotRunning
                break
            }
            do { try await sleep(min(timing.pollInterval, left)) } catch {}
        }
        let drainedFor = now() - start
        log("drain over after \(GoDuration.format(drainedFor)) (\(ending)): stopping the proxy")
        let outcome = await child.stop(grace: timing.stopGrace)
        return Report(ending: ending, drainedFor: drainedFor, proxy: outcome)
    }

    private func run() async -> Report {
        if timing.keepsServing { return await serveThroughDrain() }
        let start = now()
        log("draining: inbound for at least \(GoDuration.format(timing.minimum)), at most \(GoDuration.format(timing.termination))")
        await drainInbound()
        var ending: Ending
        var last: Int?
        // The inbound listeners do not change during a drain: their ports are read once.
        var inboundPorts: Set<Int>?
        while true {
            if state.withLockedValue({ $0.quitting }) || Task.isCancelled {
                ending = .quit
                break
            }
            let elapsed = now() - start
            if elapsed >= timing.termination {
                ending = .deadline(activeConnections: last)
                break
            }
            if elapsed >= timing.minimum {
                do {
                    if inboundPorts == nil { inboundPorts = try await admin.inboundPorts() }
                    last = try await admin.activeConnections(onPorts: inboundPorts!)
                    if last == 0 {
                        ending = .connectionsClosed
                        break
                    }
                    log("\(last ?? 0) inbound connections still open")
                } catch {
                    // The last count read stays the report's: one unanswered poll does not erase it.
                    if !child.isRunning {
                        ending = .proxyNotRunning
                        break
                    }
                    log("cannot count inbound connections: \(error)")
                }
            }
            // Wake at the next poll, but never after the minimum or the deadline.
            let sinceStart = now() - start
            var wait = timing.pollInterval
            if sinceStart < timing.minimum { wait = min(wait, timing.minimum - sinceStart) }
            wait = min(wait, timing.termination - sinceStart)
            if wait > .zero {
                do { try await sleep(wait) } catch {}
            }
        }
        let drainedFor = now() - start
        log("drain over after \(GoDuration.format(drainedFor)) (\(ending)): stopping the proxy")
        let outcome = await child.stop(grace: timing.stopGrace)
        return Report(ending: ending, drainedFor: drainedFor, proxy: outcome)
    }
}
