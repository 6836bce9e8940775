/// How long to wait before trying again after a failure: `initial` doubling with each attempt up to
/// `maximum`, each delay drawn from the upper half of that ceiling when ``Jitter/upperHalf`` (so that
/// many clients broken at once do not come back in step). Used for xDS and SDS reconnects, CA requests
/// and proxy restarts.
public struct RetryBackoff: Sendable, Equatable {
    /// Whether delays are randomized below their ceiling.
    public enum Jitter: Sendable, Equatable {
        /// Exactly the ceiling, for a delay someone reads or a test checks.
        case none
        /// Uniformly between half the ceiling and the ceiling.
        case upperHalf
    }

    public var initial: Duration
    public var maximum: Duration
    public var jitter: Jitter

    public init(initial: Duration = .milliseconds(500), maximum: Duration = .seconds(30), jitter: Jitter = .upperHalf) {
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
    }

    /// The longest wait before attempt `attempt` (0 for the first retry): `initial × 2^attempt`, at
    /// most `maximum`.
    public func ceiling(attempt: Int) -> Duration {
        // 2^20 times any sensible initial delay is past any sensible maximum, and far from overflowing.
        min(initial * (1 << min(max(attempt, 0), 20)), maximum)
    }

    /// The delay before attempt `attempt` (0 for the first retry).
    public func delay(attempt: Int) -> Duration {
        let ceiling = ceiling(attempt: attempt)
        switch jitter {
        case .none: return ceiling
        case .upperHalf: return ceiling * Double.random(in: 0.5...1.0)
        }
    }

    /// Runs `attempt` again and again until the task is cancelled, sleeping ``delay(attempt:)`` between
    /// runs. An attempt that made progress (returned true, e.g. a stream that delivered something
    /// before it broke) starts the delays over from `initial`. `waiting` hears each delay before it is
    /// slept (to log the reconnect).
    ///
    /// Returns when the task is cancelled between attempts; throws `CancellationError` when cancelled
    /// during a sleep, and whatever `attempt` throws (which ends the retrying).
    public func retrying(_ attempt: () async throws -> Bool,
                         waiting: (Duration) -> Void = { _ in }) async throws {
        var failures = 0
        while !Task.isCancelled {
            if try await attempt() { failures = 0 }
            if Task.isCancelled { return }
            let delay = delay(attempt: failures)
            failures += 1
            waiting(delay)
            try await Task.sleep(for: delay)
        }
    }
}
