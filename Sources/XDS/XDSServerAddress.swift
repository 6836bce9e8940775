/// Where an ADS server listens, or where a client finds it: `unix:///var/run/capstan/xds.sock`, a
/// path starting with `/`, or `HOST:PORT` (`[::1]:15010` for IPv6).
public enum XDSServerAddress: Sendable, Hashable, CustomStringConvertible {
    case unixSocket(path: String)
    case tcp(host: String, port: Int)

    /// Parses the forms above; the error names what was wrong.
    public init(parsing text: String) throws(XDSAddressError) {
        if text.hasPrefix("unix://") || text.hasPrefix("/") {
            let path = text.hasPrefix("unix://") ? String(text.dropFirst("unix://".count)) : text
            guard path.hasPrefix("/"), path.utf8.count < 108 else {
                throw XDSAddressError(text: text, reason: "a unix socket needs an absolute path shorter than 108 bytes")
            }
            self = .unixSocket(path: path)
            return
        }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else {
            throw XDSAddressError(text: text, reason: "expected HOST:PORT with a port 1-65535, or unix:///PATH")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.contains(where: { $0 == " " || $0 == "/" }) else {
            throw XDSAddressError(text: text, reason: "\"\(host)\" is not a host name or address")
        }
        self = .tcp(host: host, port: port)
    }

    public var description: String {
        switch self {
        case .unixSocket(let path): "unix://\(path)"
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        }
    }
}

public struct XDSAddressError: Error, CustomStringConvertible, Sendable {
    public var text: String
    public var reason: String
    public var description: String { "invalid xDS address \"\(text)\": \(reason)" }
}
