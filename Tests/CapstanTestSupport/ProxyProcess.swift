import Foundation
import Netfilter

/// `capstan proxy` running inside a sandbox namespace, stopped (by its pid) when the test is done.
public final class ProxyProcess: @unchecked Sendable {
    public let namespace: NetworkNamespace
    private let process: Process
    private let errors = Pipe()

    /// Starts the proxy in `sandbox`'s pod namespace and waits until its admin API says LIVE.
    public init(in sandbox: Sandbox, arguments: [String] = []) throws {
        namespace = sandbox.pod
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        let name = URL(fileURLWithPath: sandbox.pod.path!).lastPathComponent
        process.arguments = ["netns", "exec", name, Sandbox.capstanExecutable, "proxy"] + arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        try process.run()
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if let ready = try? admin("GET", "/ready"), ready.body == "LIVE\n" { return }
            guard process.isRunning else { break }
            usleep(50_000)
        }
        stop()
        throw SandboxError("capstan proxy did not become LIVE: \(errorOutput)")
    }

    deinit {
        stop()
    }

    public var isRunning: Bool { process.isRunning }
    public var pid: Int32 { process.processIdentifier }

    /// What the proxy wrote to standard error so far (only once it has exited).
    public var errorOutput: String {
        guard !process.isRunning else { return "(still running)" }
        return String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    /// Sends a signal to the proxy (the `ip netns exec` process execs it, so the pid is the proxy's).
    public func signal(_ number: Int32) {
        if process.isRunning { kill(process.processIdentifier, number) }
    }

    /// Waits up to `seconds` for the proxy to exit; its exit status, or nil if it is still running.
    public func waitForExit(seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    public func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// An HTTP request to the admin API at 127.0.0.1:`port` inside the pod; status and body.
    public func admin(_ method: String, _ path: String, port: UInt16 = 15000, host: IPAddress = .loopbackV4) throws -> (status: Int, body: String) {
        try HTTPProbe.request(method, path, to: SocketAddress(host, port), in: namespace)
    }
}

/// A one-shot HTTP/1.1 request over a probe socket (`Connection: close`).
public enum HTTPProbe {
    public static func request(_ method: String, _ path: String, to address: SocketAddress,
                               in namespace: NetworkNamespace) throws -> (status: Int, body: String) {
        let socket = try namespace.run { try ProbeSocket.tcp(address.address.family) }
        try socket.connect(to: address, timeoutMilliseconds: 1000)
        try socket.sendAll(Array("\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8))
        let response = String(decoding: try socket.receive(count: 1 << 20, timeoutMilliseconds: 2000), as: UTF8.self)
        guard let statusLine = response.split(separator: "\r\n").first,
              let status = Int(statusLine.split(separator: " ").dropFirst().first ?? ""),
              let bodyStart = response.range(of: "\r\n\r\n") else {
            throw SandboxError("not an HTTP response: \(response)")
        }
        return (status, String(response[bodyStart.upperBound...]))
    }
}
