/// The proxy's bootstrap file could not be written: where, and the system's reason.
public struct ProxyBootstrapError: Error, CustomStringConvertible, Sendable, Equatable {
    public var path: String
    public var reason: String

    public var description: String { "cannot write the proxy bootstrap \(path): \(reason)" }
}
