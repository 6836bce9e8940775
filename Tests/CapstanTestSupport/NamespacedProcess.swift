import Foundation
import Netfilter

/// A long-running program inside a network namespace (`capstan proxy`, an agent, a control plane, a peer
/// written in Python), its output going to a log file that can be read while it runs. Stopped by its
/// own pid when the test is done.
///
/// Spawned and reaped with posix_spawn and waitpid, not Foundation's `Process`: that one reports an exit
/// through the run loop of the thread that started it, which a Swift Testing worker thread never runs,
/// so waiting on it from another thread can hang.
public final class NamespacedProcess: @unchecked Sendable {
    public let namespace: NetworkNamespace
    public let logPath: String
    /// `ip netns exec` execs the program, so this is its pid.
    public let pid: pid_t
    private let lock = NSLock()
    private var exitStatus: Int32?

    /// Runs `command` (a path and its arguments) in `namespace`.
    public init(_ command: [String], in namespace: NetworkNamespace, logPath: String) throws {
        self.namespace = namespace
        self.logPath = logPath
        let name = URL(fileURLWithPath: namespace.path!).lastPathComponent
        let arguments = ["/usr/sbin/ip", "netns", "exec", name] + command
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        let result = posix_spawn(&child, arguments[0], &actions, nil, &argv, environ)
        guard result == 0 else { throw SandboxError("cannot start \(command.joined(separator: " ")): errno \(result)") }
        pid = child
    }

    /// Runs `capstan ARGUMENTS` in `namespace`.
    public convenience init(capstan arguments: [String], in namespace: NetworkNamespace, logPath: String) throws {
        try self.init([Sandbox.capstanExecutable] + arguments, in: namespace, logPath: logPath)
    }

    deinit {
        stop()
    }

    /// The exit status once it exited (the signal number plus 128 if a signal ended it), reaping it.
    private func reap(blocking: Bool) -> Int32? {
        lock.lock()
        defer { lock.unlock() }
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        var reaped: pid_t
        repeat { reaped = waitpid(pid, &status, blocking ? 0 : WNOHANG) } while reaped < 0 && errno == EINTR
        guard reaped == pid else { return nil }
        // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import as functions.
        let signal = status & 0x7f
        exitStatus = signal == 0 ? (status >> 8) & 0xff : 128 + signal
        return exitStatus
    }

    public var isRunning: Bool { reap(blocking: false) == nil }

    /// Everything the process wrote so far.
    public var log: String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }

    public func signal(_ number: Int32) {
        if isRunning { kill(pid, number) }
    }

    /// Polls `condition` every 20 ms for up to `seconds`, while the process runs; whether it held.
    public func waitUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            guard isRunning else { return condition() }
            usleep(20_000)
        }
        return condition()
    }

    /// Waits up to `seconds` for the process to exit; its exit status, or nil if it still runs.
    public func waitForExit(seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let status = reap(blocking: false) { return status }
            usleep(20_000)
        }
        return reap(blocking: false)
    }

    /// SIGKILL and wait; safe to call twice.
    public func stop() {
        guard isRunning else { return }
        kill(pid, SIGKILL)
        _ = reap(blocking: true)
    }
}
