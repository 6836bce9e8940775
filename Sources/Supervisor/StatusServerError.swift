/// The status server could not listen: which address and port, and why.
public struct StatusServerError: Error, CustomStringConvertible, Sendable, Equatable {
    public var host: String
    public var port: Int
    public var reason: String

    public var description: String {
        "cannot listen on \(host.contains(":") ? "[\(host)]" : host):\(port): \(reason)"
    }
}
