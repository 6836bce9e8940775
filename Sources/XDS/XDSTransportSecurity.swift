import GRPCCore
import GRPCNIOTransportHTTP2Posix

/// How a gRPC client of Capstan's (xDS, SDS, CA) secures its connection. Plaintext is for unix sockets
/// inside the pod and for tests; anything crossing the network uses TLS verified against a root the
/// operator gave, as pilot-agent does with istiod's root certificate.
public enum XDSTransportSecurity: Sendable, Equatable {
    case plaintext
    /// TLS, the server's certificate verified against `trustRootsPEM` and its name against `serverName`
    /// (which also goes out as SNI and `:authority`); nil checks the name the address gives.
    case tls(trustRootsPEM: String, serverName: String?)

    /// A client transport to `server` secured this way, reconnecting with `backoff`.
    public func clientTransport(to server: XDSServerAddress, backoff: RetryBackoff = .init()) throws -> HTTP2ClientTransport.Posix {
        let security: HTTP2ClientTransport.Posix.TransportSecurity
        var serverName: String?
        switch self {
        case .plaintext:
            security = .plaintext
        case .tls(let roots, let name):
            serverName = name
            security = .tls { tls in
                tls.trustRoots = .certificates([.bytes(Array(roots.utf8), format: .pem)])
                tls.serverCertificateVerification = .fullVerification
            }
        }
        return try .http2NIOPosix(
            target: server.target, transportSecurity: security,
            config: .defaults { config in
                config.backoff = .init(initial: backoff.initial, max: backoff.maximum, multiplier: 2, jitter: 0.2)
                if let serverName { config.http2.authority = serverName }
            })
    }
}
