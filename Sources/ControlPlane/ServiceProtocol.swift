/// What a service port speaks, chosen as Istio chooses it: the port's declared `protocol` (a
/// ServiceEntry's `ports[].protocol`) first, else the port name's prefix (`http-web`, `grpc`,
/// `tcp-db`: the name itself or what comes before its first `-`). Istio's names, case-insensitive.
///
/// A port neither declares nor names a protocol Istio knows is ``unknown``: Istio sniffs it
/// (`http_inspector`, an HTTP chain beside the TCP one). Capstan proxies it as TCP for now, so a
/// server-first protocol never waits on sniffing either.
public enum ServiceProtocol: String, Sendable, Equatable, CaseIterable {
    case http = "HTTP"
    case http2 = "HTTP2"
    case grpc = "GRPC"
    case grpcWeb = "GRPC-WEB"
    case https = "HTTPS"
    case tls = "TLS"
    case tcp = "TCP"
    case mongo = "MONGO"
    case mysql = "MYSQL"
    case redis = "REDIS"
    case unknown = "UNKNOWN"

    /// The protocol of a port that declares `declared` (nil: none) and is named `name`.
    public static func selected(declared: String?, name: String) -> ServiceProtocol {
        if let declared, let known = Self(istioName: declared) { return known }
        let lowered = name.lowercased()
        let prefix = lowered.hasPrefix("grpc-web") ? "grpc-web" : String(lowered.prefix { $0 != "-" })
        return Self(istioName: prefix) ?? .unknown
    }

    /// Istio's protocol names (`HTTP`, `http2`, `gRPC-Web`, …); nil for any other.
    public init?(istioName: String) {
        guard let known = Self(rawValue: istioName.uppercased()), known != .unknown else { return nil }
        self = known
    }

    /// Served by an HTTP connection manager: routes per request, VirtualService `http` routes apply.
    public var isHTTP: Bool { [.http, .http2, .grpc, .grpcWeb].contains(self) }

    /// The upstream speaks HTTP/2 (Istio: `http2` and `grpc` ports; gRPC-Web is HTTP/1.1 or HTTP/2 as the
    /// client chose).
    public var requiresHTTP2: Bool { self == .http2 || self == .grpc }
}
