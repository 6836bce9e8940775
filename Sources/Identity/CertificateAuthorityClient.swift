import GRPCCore
import GRPCNIOTransportHTTP2Posix
import SwiftProtobuf
import XDS
#if canImport(Glibc)
import Glibc
#endif

/// Asks an Istio-compatible CA for a workload certificate: `IstioCertificateService/CreateCertificate`
/// with the CSR, authenticated by the pod's bearer token, which is read afresh from its file on every
/// request (kubelet rotates projected tokens).
public struct CertificateAuthorityClient: Sendable {
    public var address: XDSServerAddress
    public var security: XDSTransportSecurity
    /// The token file (Istio: /var/run/secrets/tokens/istio-token); nil sends no token.
    public var tokenPath: String?
    /// Sent as `ClusterID` metadata, as pilot-agent does, so a multi-cluster CA knows which token reviewer to ask.
    public var clusterID: String?
    public var timeout: Duration

    public init(address: XDSServerAddress, security: XDSTransportSecurity, tokenPath: String?,
                clusterID: String? = nil, timeout: Duration = .seconds(10)) {
        self.address = address
        self.security = security
        self.tokenPath = tokenPath
        self.clusterID = clusterID
        self.timeout = timeout
    }

    /// Sends `csrPEM` asking for `lifetime`; returns the CA's chain and trust bundle, in whichever of
    /// Istio's two response forms the CA answered.
    public func createCertificate(csrPEM: String, lifetime: Duration) async throws -> IssuedChain {
        let metadata = try Self.credentials(tokenPath: tokenPath, clusterID: clusterID)
        var request = Istio_V1_Auth_IstioCertificateRequest()
        request.csr = csrPEM
        request.validityDuration = lifetime.components.seconds
        var options = CallOptions.defaults
        options.timeout = timeout
        let transport = try security.clientTransport(to: address)
        let response = try await withGRPCClient(transport: transport) { grpc in
            try await Istio_V1_Auth_IstioCertificateService.Client(wrapping: grpc)
                .createCertificate(request, metadata: metadata, options: options)
        }
        do throws(WorkloadCertificateError) {
            return try IssuedChain(response)
        } catch {
            throw CertificateAuthorityClientError.unusableAnswer(address: "\(address)", reason: error)
        }
    }

    /// What pilot-agent sends the CA and the control plane: `authorization: Bearer TOKEN` (the token read
    /// now, from `tokenPath`) and `ClusterID`.
    public static func credentials(tokenPath: String?, clusterID: String?) throws(CertificateAuthorityClientError) -> Metadata {
        var metadata = Metadata()
        if let tokenPath { metadata.addString("Bearer \(try readToken(at: tokenPath))", forKey: "authorization") }
        if let clusterID { metadata.addString(clusterID, forKey: "ClusterID") }
        return metadata
    }

    /// The bearer token in `path`: one word, printable ASCII; its value never appears in an error.
    public static func readToken(at path: String) throws(CertificateAuthorityClientError) -> String {
        let text: String
        do {
            text = try CredentialFile.read(path)
        } catch {
            throw .token(path: path, reason: error.description)
        }
        let words = text.split(whereSeparator: \.isWhitespace)
        guard let token = words.first else { throw .token(path: path, reason: "empty") }
        guard words.count == 1, token.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw .token(path: path, reason: "not a bearer token (whitespace or control characters inside)")
        }
        return String(token)
    }
}

/// Why a certificate request could not even be answered; the token's value never appears.
public enum CertificateAuthorityClientError: Error, CustomStringConvertible {
    case token(path: String, reason: String)
    case unusableAnswer(address: String, reason: WorkloadCertificateError)

    public var description: String {
        switch self {
        case .token(let path, let reason): "cannot read the bearer token from \(path): \(reason)"
        case .unusableAnswer(let address, let reason): "the CA at \(address) answered with no usable certificate: \(reason)"
        }
    }
}
