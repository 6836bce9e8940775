import Configuration

/// A failure reported to the container runtime in the CNI spec's error format, on standard output with
/// exit status 1: `{"cniVersion": …, "code": …, "msg": …, "details": …}`.
public struct CNIError: Error, Sendable, CustomStringConvertible {
    /// The spec's well-known codes (1–99), and Capstan's own (100 and up).
    public enum Code: Int, Sendable {
        case incompatibleVersion = 1
        case unsupportedField = 2
        case unknownContainer = 3
        case invalidEnvironment = 4
        case ioFailure = 5
        case decodeFailure = 6
        case invalidNetworkConfig = 7
        case tryAgainLater = 11
        /// The node agent did not confirm capture in time: the pod is not started uncaptured.
        case agentUnavailable = 100
        /// The node agent refused the pod (bad annotation, rules it could not program).
        case captureRefused = 101
    }

    public var code: Code
    public var message: String
    public var details: String

    public init(_ code: Code, _ message: String, details: String = "") {
        self.code = code
        self.message = message
        self.details = details
    }

    public var description: String { details.isEmpty ? message : "\(message): \(details)" }

    /// The error document for a runtime that asked in `cniVersion`.
    public func document(cniVersion: String) -> String {
        var fields: [String: ConfigValue] = [
            "cniVersion": .string(cniVersion),
            "code": .number(Double(code.rawValue)),
            "msg": .string(message),
        ]
        if !details.isEmpty { fields["details"] = .string(details) }
        return ConfigValue.object(fields).jsonText()
    }
}
