import GRPCCore
import Identity
import Logging
import XDS

/// The control plane's CA endpoint, Istio's `IstioCertificateService/CreateCertificate`: the caller is
/// authenticated by its bearer token, and the certificate names the identity that token maps to,
/// whatever the CSR asks for. It answers in istiod's form: `cert_chain` is [leaf, intermediates…, roots…],
/// one certificate an entry, and `root_cert` is left unset, as istiod leaves it (older pilot-agents read
/// the roots from the end of the chain only).
public final class CertificateService: Istio_V1_Auth_IstioCertificateService.ServiceProtocol {
    public let authority: CertificateAuthority
    public let trustDomain: String
    private let tokens: CallerTokens
    private let logger: Logger

    public init(authority: CertificateAuthority, tokens: CallerTokens, trustDomain: String, logger: Logger) {
        self.authority = authority
        self.tokens = tokens
        self.trustDomain = trustDomain
        self.logger = logger
    }

    public func createCertificate(
        request: ServerRequest<Istio_V1_Auth_IstioCertificateRequest>, context: ServerContext
    ) async throws -> ServerResponse<Istio_V1_Auth_IstioCertificateResponse> {
        guard let identity = caller(of: request.metadata) else {
            logger.warning("certificate request refused: no known bearer token", metadata: ["peer": "\(context.remotePeer)"])
            throw RPCError(code: .unauthenticated, message: "a bearer token this CA knows is required")
        }
        let lifetime = Duration.seconds(max(request.message.validityDuration, 0))
        do throws(CertificateAuthorityError) {
            var response = Istio_V1_Auth_IstioCertificateResponse()
            response.certChain = try authority.sign(csrPEM: request.message.csr, for: identity, requestedLifetime: lifetime)
            logger.info("certificate issued", metadata: ["identity": "\(identity)", "requested": "\(lifetime)"])
            return ServerResponse(message: response)
        } catch {
            logger.warning("certificate request refused", metadata: ["identity": "\(identity)", "error": "\(error)"])
            throw RPCError(code: .invalidArgument, message: error.description)
        }
    }

    /// The identity of the caller's `authorization: Bearer TOKEN`, if the token is known.
    private func caller(of metadata: Metadata) -> WorkloadIdentity? {
        for value in metadata[stringValues: "authorization"] {
            let parts = value.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "bearer" else { continue }
            if let identity = (try? tokens.identity(for: String(parts[1]), trustDomain: trustDomain)) ?? nil { return identity }
        }
        return nil
    }
}
