import Configuration
import HTTPEndpoints
import NIOCore
import NIOPosix

/// `capstan wait` (pilot-agent's `wait`, for a postStart hook that holds the application back until the
/// sidecar is ready): asks the readiness endpoint every `interval` until it answers 200, or fails
/// after `timeout` saying what it last heard.
public struct ReadinessWaiter: Sendable {
    public var host: String
    public var port: Int
    public var path: String
    /// Istio's defaults: `--timeoutSeconds 60`, `--requestTimeoutMillis 500`, `--periodMillis 500`.
    public var timeout: Duration
    public var requestTimeout: Duration
    public var interval: Duration
    private let group: any EventLoopGroup

    public init(host: String = "localhost", port: Int = 15021, path: String = "/healthz/ready",
                timeout: Duration = .seconds(60), requestTimeout: Duration = .milliseconds(500),
                interval: Duration = .milliseconds(500),
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.host = host
        self.port = port
        self.path = path
        self.timeout = timeout
        self.requestTimeout = requestTimeout
        self.interval = interval
        self.group = group
    }

    public var url: String { "http://\(host.contains(":") ? "[\(host)]" : host):\(port)\(path)" }

    /// Returns once the endpoint answers 200; the number of requests it took.
    @discardableResult
    public func wait() async throws(ReadinessWaitError) -> Int {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        let client = OneShotHTTPClient(timeout: requestTimeout, group: group)
        var attempts = 0
        var lastAnswer = "no answer yet"
        while true {
            attempts += 1
            do {
                let response = try await client.request(.GET, host: host, port: port, path: path)
                if response.status == 200 { return attempts }
                let body = response.body.trimmingNewlines
                lastAnswer = "\(response.status)" + (body.isEmpty ? "" : " \(body)")
            } catch {
                lastAnswer = error.reason
            }
            let left = clock.now.duration(to: deadline)
            guard left > .zero else { break }
            do {
                try await Task.sleep(for: min(interval, left))
            } catch {
                throw ReadinessWaitError(url: url, timeout: timeout, attempts: attempts, lastAnswer: "cancelled; last: \(lastAnswer)")
            }
        }
        throw ReadinessWaitError(url: url, timeout: timeout, attempts: attempts, lastAnswer: lastAnswer)
    }
}
