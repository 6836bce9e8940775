import Foundation
import Netfilter

/// A long-running program inside a network namespace (`capstan proxy`, a control plane, a peer
/// written in Python), its output going to a log file that can be read while it runs. Stopped by its
/// own pid when the test is done.
public final class NamespacedProcess: @unchecked Sendable {
    public let namespace: NetworkNamespace
    public let logPath: String
    private let process = Process()

    /// Runs `command` (a path and its arguments) in `namespace`.
    public init(_ command: [String], in namespace: NetworkNamespace, logPath: String) throws {
        self.namespace = namespace
        self.logPath = logPath
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        let name = URL(fileURLWithPath: namespace.path!).lastPathComponent
        process.arguments = ["netns", "exec", name] + command
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    /// Runs `capstan ARGUMENTS` in `namespace`.
    public convenience init(capstan arguments: [String], in namespace: NetworkNamespace, logPath: String) throws {
        try self.init([Sandbox.capstanExecutable] + arguments, in: namespace, logPath: logPath)
    }

    deinit {
        stop()
    }

    public var isRunning: Bool { process.isRunning }
    /// `ip netns exec` execs the program, so this is its pid.
    public var pid: Int32 { process.processIdentifier }

    /// Everything the process wrote so far.
    public var log: String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }

    public func signal(_ number: Int32) {
        if process.isRunning { kill(process.processIdentifier, number) }
    }

    /// Polls `condition` every 20 ms for up to `seconds`, while the process runs; whether it held.
    public func waitUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            guard process.isRunning else { return condition() }
            usleep(20_000)
        }
        return condition()
    }

    /// Waits up to `seconds` for the process to exit; its exit status, or nil if it still runs.
    public func waitForExit(seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// SIGKILL and wait; safe to call twice.
    public func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}
