/// A setting of `capstan agent` that was refused: the variable (or flag), the value as given, and why.
/// Reads as `SECRET_GRACE_PERIOD_RATIO "1.5": must be between 0 and 1`.
public struct AgentSettingsError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The environment variable or flag, e.g. `SECRET_TTL` or `PROXY_CONFIG.discoveryAddress`.
    public var variable: String
    /// The value as given; nil when the variable is required and missing.
    public var value: String?
    public var reason: String

    public init(variable: String, value: String?, reason: String) {
        self.variable = variable
        self.value = value
        self.reason = reason
    }

    public var description: String {
        if let value { return "\(variable) \"\(value)\": \(reason)" }
        return "\(variable) is not set: \(reason)"
    }
}
