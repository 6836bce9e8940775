import GRPCCore
import GRPCNIOTransportHTTP2Posix
#if canImport(Glibc)
import Glibc
#endif

/// Where and how Capstan serves gRPC (ADS, SDS, the CA): a TCP or unix address, plaintext or TLS.
public struct GRPCEndpoint: Sendable {
    /// A server certificate chain (leaf first) and its key, PEM.
    public struct ServerCredentials: Sendable {
        public var certificateChainPEM: [String]
        public var privateKeyPEM: String

        public init(certificateChainPEM: [String], privateKeyPEM: String) {
            self.certificateChainPEM = certificateChainPEM
            self.privateKeyPEM = privateKeyPEM
        }
    }

    public var address: XDSServerAddress
    public var tls: ServerCredentials?

    public init(address: XDSServerAddress, tls: ServerCredentials? = nil) {
        self.address = address
        self.tls = tls
    }

    /// Serves `services` until the task is cancelled; `listening` gets the bound address once it is up
    /// (useful with port 0).
    public func serve(_ services: [any RegistrableRPCService], listening: @Sendable (String) -> Void = { _ in }) async throws {
        let bindAddress: GRPCNIOTransportCore.SocketAddress = switch address {
        case .unixSocket(let path): .unixDomainSocket(path: path)
        case .tcp(let host, let port): host.contains(":") ? .ipv6(host: host, port: port) : .ipv4(host: host, port: port)
        }
        if case .unixSocket(let path) = address {
            // A socket file left by an earlier run would make the bind fail.
            unlink(path)
        }
        let security: HTTP2ServerTransport.Posix.TransportSecurity = if let tls {
            .tls(certificateChain: tls.certificateChainPEM.map { .bytes(Array($0.utf8), format: .pem) },
                 privateKey: .bytes(Array(tls.privateKeyPEM.utf8), format: .pem))
        } else {
            .plaintext
        }
        let transport = HTTP2ServerTransport.Posix(address: bindAddress, transportSecurity: security)
        let server = GRPCServer(transport: transport, services: services)
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                try await withTaskCancellationHandler {
                    try await server.serve()
                } onCancel: {
                    server.beginGracefulShutdown()
                }
            }
            let bound = try await transport.listeningAddress
            listening("\(bound)")
        }
    }
}
