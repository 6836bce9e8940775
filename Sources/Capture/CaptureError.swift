import Netfilter

/// A failure to program or read the kernel; the message says which step failed and why.
public struct CaptureError: Error, CustomStringConvertible, Sendable {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    init(_ step: String, _ error: any Error) {
        message = "\(step): \(error)"
    }

    public var description: String { message }
}
