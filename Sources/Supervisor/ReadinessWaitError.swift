import Configuration

/// The readiness endpoint did not answer 200 in time.
public struct ReadinessWaitError: Error, CustomStringConvertible, Sendable, Equatable {
    public var url: String
    public var timeout: Duration
    public var attempts: Int
    /// The last status and body, or why there was none.
    public var lastAnswer: String

    public var description: String {
        "\(url) not ready within \(GoDuration.format(timeout)) (\(attempts) attempts); last answer: \(lastAnswer)"
    }
}
