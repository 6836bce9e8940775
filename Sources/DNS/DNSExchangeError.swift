/// Why one query to one nameserver got no usable answer.
public enum DNSExchangeError: Error, Sendable, Hashable, CustomStringConvertible {
    /// No answer within the timeout.
    case timedOut(nameserver: String, transport: String)
    /// The socket failed (refused, unreachable, closed before an answer).
    case transportFailed(nameserver: String, transport: String, reason: String)
    /// There was no nameserver to ask.
    case noNameservers

    public var description: String {
        switch self {
        case .timedOut(let nameserver, let transport): "no answer from \(nameserver) over \(transport) in time"
        case .transportFailed(let nameserver, let transport, let reason): "\(transport) to \(nameserver) failed: \(reason)"
        case .noNameservers: "no nameservers configured"
        }
    }
}
