import Foundation

/// Runs a program to completion and keeps what it printed.
public struct ChildProcess: Sendable {
    public struct Result: Sendable, CustomStringConvertible {
        public var status: Int32
        public var standardOutput: String
        public var standardError: String

        public var description: String {
            "exit \(status)\nstdout:\n\(standardOutput)\nstderr:\n\(standardError)"
        }
    }

    /// Runs `executable` with `arguments`; `environment` entries are added to this process's environment,
    /// `input` is written to its standard input.
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                           input: String? = nil) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var merged = ProcessInfo.processInfo.environment
        // The tests decide every capture setting themselves.
        for key in merged.keys where CaptureEnvironment.names.contains(key) { merged[key] = nil }
        merged.merge(environment) { $1 }
        process.environment = merged
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let stdin = Pipe()
        process.standardInput = stdin
        try process.run()
        if let input {
            // Small documents (CNI configurations): they fit in the pipe.
            stdin.fileHandleForWriting.write(Data(input.utf8))
        }
        try stdin.fileHandleForWriting.close()
        // Read before waiting so a chatty child cannot block on a full pipe.
        let output = out.fileHandleForReading.readDataToEndOfFile()
        let error = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus,
                      standardOutput: String(decoding: output, as: UTF8.self),
                      standardError: String(decoding: error, as: UTF8.self))
    }

    /// Runs a command that must succeed (topology set-up).
    public static func require(_ executable: String, _ arguments: [String]) throws {
        let result = try run(executable, arguments)
        guard result.status == 0 else {
            throw SandboxError("\(executable) \(arguments.joined(separator: " ")) failed: \(result)")
        }
    }
}

/// Environment variables that would change what `capstan init` does.
enum CaptureEnvironment {
    static let names: Set<String> = [
        "ENVOY_PORT", "INBOUND_CAPTURE_PORT", "INBOUND_TUNNEL_PORT", "PROXY_UID", "PROXY_GID",
        "ISTIO_INBOUND_INTERCEPTION_MODE", "ISTIO_INBOUND_TPROXY_MARK", "ISTIO_INBOUND_TPROXY_ROUTE_TABLE",
        "ISTIO_INBOUND_PORTS", "ISTIO_LOCAL_EXCLUDE_PORTS", "ISTIO_SERVICE_CIDR", "ISTIO_SERVICE_EXCLUDE_CIDR",
        "ISTIO_OUTBOUND_PORTS", "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE", "KUBE_VIRT_INTERFACES",
        "ISTIO_EXCLUDE_INTERFACES", "REDIRECT_DNS", "CAPTURE_ALL_DNS", "DNS_SERVERS", "DROP_INVALID",
        "ISTIO_META_DNS_CAPTURE", "INVALID_DROP", "DRY_RUN", "CLEANUP_ONLY", "RUN_VALIDATION", "SKIP_RULE_APPLY",
        "NETWORK_NAMESPACE", "IPTABLES_PROBE_PORT", "PROBE_TIMEOUT",
    ]
}

public struct SandboxError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
