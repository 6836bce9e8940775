import Foundation
import Netfilter

/// `capstan proxy` running inside a sandbox namespace, stopped (by its pid) when the test is done.
public final class ProxyProcess: @unchecked Sendable {
    public let namespace: NetworkNamespace
    private let process: NamespacedProcess

    /// Starts the proxy in `namespace` and waits until its admin API says LIVE.
    public init(in namespace: NetworkNamespace, arguments: [String] = [], logPath: String? = nil, liveWithin seconds: Double = 10) throws {
        self.namespace = namespace
        let log = logPath ?? FileManager.default.temporaryDirectory.appendingPathComponent("capstan-proxy-\(getpid())-\(UUID().uuidString).log").path
        process = try NamespacedProcess(capstan: ["proxy"] + arguments, in: namespace, logPath: log)
        let admin = self.admin
        if process.waitUntil(seconds: seconds, { (try? admin("GET", "/ready", 15000, .loopbackV4))?.body == "LIVE\n" }) { return }
        process.stop()
        throw SandboxError("capstan proxy did not become LIVE: \(process.log)")
    }

    /// Starts the proxy in `sandbox`'s pod namespace.
    public convenience init(in sandbox: Sandbox, arguments: [String] = []) throws {
        try self.init(in: sandbox.pod, arguments: arguments)
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: process.logPath)
    }

    public var isRunning: Bool { process.isRunning }
    public var pid: Int32 { process.pid }

    /// What the proxy wrote to standard error so far.
    public var errorOutput: String { process.log }

    /// Sends a signal to the proxy.
    public func signal(_ number: Int32) { process.signal(number) }

    /// Waits up to `seconds` for the proxy to exit; its exit status, or nil if it is still running.
    public func waitForExit(seconds: Double) -> Int32? { process.waitForExit(seconds: seconds) }

    /// Polls `condition` for up to `seconds` while the proxy runs.
    public func waitUntil(seconds: Double, _ condition: () -> Bool) -> Bool { process.waitUntil(seconds: seconds, condition) }

    public func stop() { process.stop() }

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
