import Synchronization
import Testing
import XDS

/// The retry delay policy shared by xDS reconnects, CA requests and proxy restarts, and its retry loop.
@Suite struct RetryBackoffTests {
    struct Refused: Error, Equatable {}

    @Test func delaysDoubleUpToTheMaximumWithoutJitter() {
        let backoff = RetryBackoff(initial: .milliseconds(100), maximum: .seconds(5), jitter: .none)
        #expect((0..<8).map(backoff.delay(attempt:)) == [.milliseconds(100), .milliseconds(200), .milliseconds(400),
                                                          .milliseconds(800), .milliseconds(1600), .milliseconds(3200),
                                                          .seconds(5), .seconds(5)])
        #expect(backoff.delay(attempt: 10_000) == .seconds(5), "a long outage neither overflows nor passes the maximum")
        #expect(backoff.delay(attempt: -1) == .milliseconds(100))
    }

    @Test func jitterDrawsFromTheUpperHalfOfTheCeiling() {
        let backoff = RetryBackoff(initial: .milliseconds(500), maximum: .seconds(30))
        #expect(backoff.jitter == .upperHalf, "jitter is on unless asked otherwise")
        for attempt in 0..<12 {
            let ceiling = backoff.ceiling(attempt: attempt)
            let delays = (0..<50).map { _ in backoff.delay(attempt: attempt) }
            #expect(delays.allSatisfy { $0 >= ceiling / 2 && $0 <= ceiling }, "attempt \(attempt): \(delays)")
            #expect(Set(delays).count > 1, "attempt \(attempt) is randomized")
        }
        #expect(backoff.ceiling(attempt: 6) == .seconds(30))
    }

    @Test func retryingStartsOverAfterProgressAndStopsWhenCancelled() async throws {
        let backoff = RetryBackoff(initial: .milliseconds(1), maximum: .milliseconds(4), jitter: .none)
        // Attempts 1-4 fail, 5 makes progress, then failures again; cancelled during the 8th.
        let progress = [false, false, false, false, true, false, false]
        let waits = Mutex<[Duration]>([])
        let attempts = Mutex(0)
        let task = Task {
            try await backoff.retrying {
                let number = attempts.withLock { count -> Int in
                    count += 1
                    return count
                }
                if number > progress.count {
                    withUnsafeCurrentTask { $0?.cancel() }
                    return false
                }
                return progress[number - 1]
            } waiting: { delay in
                waits.withLock { $0.append(delay) }
            }
        }
        try await task.value
        #expect(attempts.withLock { $0 } == 8)
        #expect(waits.withLock { $0 } == [.milliseconds(1), .milliseconds(2), .milliseconds(4), .milliseconds(4),
                                          .milliseconds(1), .milliseconds(2), .milliseconds(4)],
                "no wait after the attempt during which the task was cancelled")
    }

    @Test func cancellationDuringAWaitEndsTheRetrying() async {
        let backoff = RetryBackoff(initial: .seconds(30), maximum: .seconds(30), jitter: .none)
        let attempts = Mutex(0)
        let task = Task {
            try await backoff.retrying {
                attempts.withLock { $0 += 1 }
                return false
            }
        }
        while attempts.withLock({ $0 }) == 0 { await Task.yield() }
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(attempts.withLock { $0 } == 1)
    }

    @Test func anErrorFromAnAttemptEndsTheRetrying() async {
        let backoff = RetryBackoff(initial: .milliseconds(1), maximum: .milliseconds(1), jitter: .none)
        let attempts = Mutex(0)
        await #expect(throws: Refused()) {
            try await backoff.retrying {
                let number = attempts.withLock { count -> Int in
                    count += 1
                    return count
                }
                if number == 3 { throw Refused() }
                return false
            }
        }
        #expect(attempts.withLock { $0 } == 3)
    }
}
