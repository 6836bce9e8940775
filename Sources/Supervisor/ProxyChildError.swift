/// Why the proxy child could not be started.
public enum ProxyChildError: Error, CustomStringConvertible, Sendable, Equatable {
    case cannotStart(executable: String, reason: String)
    case alreadyStarted

    public var description: String {
        switch self {
        case .cannotStart(let executable, let reason): "cannot start \"\(executable)\": \(reason)"
        case .alreadyStarted: "the proxy child was started already"
        }
    }
}
