/// Why bytes are not a DNS message (or a message cannot be written): the field path and what is wrong,
/// e.g. `answer[1].rdata: A record data is 5 bytes, expected 4`.
public struct DNSWireError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Where in the message: `header`, `question[0].name`, `answer[2].rdata`, ...
    public let field: String
    /// What is wrong there.
    public let reason: String

    public init(field: String, reason: String) {
        self.field = field
        self.reason = reason
    }

    public var description: String { "\(field): \(reason)" }
}
