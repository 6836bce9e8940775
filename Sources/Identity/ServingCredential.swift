import X509

/// A server certificate chain and its key in PEM, as a Kubernetes TLS secret holds them (`tls.crt`,
/// `tls.key`, optional `ca.crt`), checked before anything serves them: the chain parses, the key is
/// the first certificate's, and the CA bundle (if any) parses. The PEM is kept as given.
public struct ServingCredential: Sendable, Equatable {
    public let chainPEM: String
    public let keyPEM: String
    /// The CA certificates client certificates are verified against; nil when there is no `ca.crt`.
    public let caPEM: String?

    /// Refuses material that does not fit together, naming `what` (the secret) and the part; the
    /// message never contains key material.
    public init(chainPEM: String, keyPEM: String, caPEM: String?, what: String) throws(ServingCredentialError) {
        let chain: [Certificate]
        do {
            chain = try CertificateChain.certificates(in: chainPEM, what: "\(what) tls.crt")
        } catch {
            throw ServingCredentialError(reason: error.reason)
        }
        guard let leaf = chain.first else { throw ServingCredentialError(reason: "\(what) tls.crt: holds no certificate") }
        let key: WorkloadKey
        do {
            key = try WorkloadKey(pemEncoded: keyPEM)
        } catch {
            throw ServingCredentialError(reason: "\(what) tls.key: \(error.description)")
        }
        guard key.publicKey == leaf.publicKey else {
            throw ServingCredentialError(reason: "\(what) tls.key: is not the key of the first certificate in tls.crt")
        }
        if let caPEM {
            do {
                _ = try CertificateChain.certificates(in: caPEM, what: "\(what) ca.crt")
            } catch {
                throw ServingCredentialError(reason: error.reason)
            }
        }
        self.chainPEM = chainPEM
        self.keyPEM = keyPEM
        self.caPEM = caPEM
    }
}

/// Why a TLS secret was refused.
public struct ServingCredentialError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public var description: String { reason }

    public init(reason: String) {
        self.reason = reason
    }
}
