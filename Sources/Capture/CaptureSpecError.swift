import Netfilter

/// Refused input: names the flag and the value, and says what is wrong with it.
public struct CaptureSpecError: Error, CustomStringConvertible, Sendable, Equatable {
    public let option: String
    public let value: String
    public let reason: String

    public init(option: String, value: String, reason: String) {
        self.option = option
        self.value = value
        self.reason = reason
    }

    public var description: String {
        "invalid value \"\(value)\" for \(option): \(reason)"
    }
}
