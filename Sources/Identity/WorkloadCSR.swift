import X509

/// The certificate signing request a workload sends to the CA: signed by the workload's key, asking for
/// its SPIFFE ID as the only URI SAN. Like Istio's, the subject is empty, so the SAN extension is critical
/// (RFC 5280 §4.2.1.6). A CA does not have to honour what is asked: ours takes the identity from the caller.
public struct WorkloadCSR: Sendable {
    public let identity: WorkloadIdentity
    /// `-----BEGIN CERTIFICATE REQUEST-----`, what `CreateCertificateRequest.csr` carries.
    public let pemEncoded: String

    public init(for identity: WorkloadIdentity, key: WorkloadKey) throws(WorkloadCSRError) {
        self.identity = identity
        do {
            let extensions = try Certificate.Extensions {
                Critical(SubjectAlternativeNames([.uniformResourceIdentifier(identity.spiffeID)]))
            }
            let attributes = CertificateSigningRequest.Attributes(
                [try CertificateSigningRequest.Attribute(ExtensionRequest(extensions: extensions))])
            let request = try CertificateSigningRequest(version: .v1, subject: DistinguishedName(),
                                                        privateKey: key.certificateKey, attributes: attributes)
            pemEncoded = try request.serializeAsPEM().pemString + "\n"
        } catch {
            throw WorkloadCSRError(identity: identity, reason: "\(error)")
        }
    }
}

/// Building a CSR failed (an encoding or signing failure inside the crypto libraries).
public struct WorkloadCSRError: Error, Equatable, Sendable, CustomStringConvertible {
    public let identity: WorkloadIdentity
    public let reason: String
    public var description: String { "creating a CSR for \(identity) failed: \(reason)" }
}
