import ArgumentParser
import Supervisor

/// `capstan wait`: pilot-agent's `wait`, for a postStart hook that holds the application until the sidecar is ready.
struct WaitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wait",
        abstract: "Wait until the sidecar is ready (polls :15021/healthz/ready), or fail after a timeout.")

    @Option(name: .customLong("timeoutSeconds"), help: "Give up after this many seconds.")
    var timeoutSeconds = 60
    @Option(name: .customLong("requestTimeoutMillis"), help: "Timeout of each request.")
    var requestTimeoutMillis = 500
    @Option(name: .customLong("periodMillis"), help: "Time between requests.")
    var periodMillis = 500
    @Option(name: .customLong("port"), help: "The readiness port.")
    var port = 15021

    func validate() throws {
        for (name, value) in [("--timeoutSeconds", timeoutSeconds), ("--requestTimeoutMillis", requestTimeoutMillis),
                              ("--periodMillis", periodMillis)] where value <= 0 {
            throw ValidationError("invalid value \"\(value)\" for \(name): must be positive")
        }
        guard (1...65535).contains(port) else { throw ValidationError("invalid value \"\(port)\" for --port: must be 1-65535") }
    }

    func run() async throws {
        let waiter = ReadinessWaiter(host: "127.0.0.1", port: port, timeout: .seconds(timeoutSeconds),
                                     requestTimeout: .milliseconds(requestTimeoutMillis), interval: .milliseconds(periodMillis))
        do {
            let attempts = try await waiter.wait()
            writeLine("capstan wait: \(waiter.url) ready after \(attempts) request(s)")
        } catch {
            printError("capstan wait: error: \(error)")
            throw ExitCode(1)
        }
    }
}
