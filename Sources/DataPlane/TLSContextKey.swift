import NIOSSL

/// Everything a TLS context is built from, by which the proxy's ``TLSContextCache`` finds it: the side
/// (and, for a server, whether a client certificate is required), where the certificate and the trust
/// bundle come from (inline material or SDS secret names), the peer names accepted, ALPN, TLS versions,
/// cipher suites and curves. Not SNI, which each connection sends for itself, nor the configuration's
/// dump: clusters and filter chains that differ only there share one context, and so do the old and
/// the new value of a cluster that an xDS push sends again.
///
/// The hash is computed once, when the transport socket is decoded, so finding the context of a new
/// connection hashes one integer; equal keys are then compared field by field.
struct TLSContextKey: Hashable, Sendable {
    enum Role: Hashable, Sendable {
        case client
        case server(requireClientCertificate: Bool)
    }

    /// First, so that `==` of keys that differ stops at once.
    private let precomputedHash: Int
    let role: Role
    let certificate: TransportSocketConfig.Source<TLSCredentials>?
    let trust: TransportSocketConfig.Source<TrustBundle>?
    let subjectAltNames: [SubjectAltNameMatcher]
    let applicationProtocols: [String]
    let minimumVersion: TLSVersion
    let maximumVersion: TLSVersion?
    let cipherSuites: String?
    let curves: [NIOTLSCurve]?

    /// The same settings offering `applicationProtocols` by ALPN instead (Istio's `istio.alpn`).
    func offering(_ applicationProtocols: [String]) -> TLSContextKey {
        TLSContextKey(role: role, certificate: certificate, trust: trust, subjectAltNames: subjectAltNames,
                      applicationProtocols: applicationProtocols, minimumVersion: minimumVersion, maximumVersion: maximumVersion,
                      cipherSuites: cipherSuites, curves: curves)
    }

    init(role: Role, certificate: TransportSocketConfig.Source<TLSCredentials>?, trust: TransportSocketConfig.Source<TrustBundle>?,
         subjectAltNames: [SubjectAltNameMatcher], applicationProtocols: [String], minimumVersion: TLSVersion,
         maximumVersion: TLSVersion?, cipherSuites: String?, curves: [NIOTLSCurve]?) {
        self.role = role
        self.certificate = certificate
        self.trust = trust
        self.subjectAltNames = subjectAltNames
        self.applicationProtocols = applicationProtocols
        self.minimumVersion = minimumVersion
        self.maximumVersion = maximumVersion
        self.cipherSuites = cipherSuites
        self.curves = curves
        var hasher = Hasher()
        hasher.combine(role)
        // Inline material is hashed by its PEM: what equal credentials and equal bundles have in common.
        switch certificate {
        case .inline(let credentials)?: hasher.combine(0); hasher.combine(credentials.chainPEM)
        case .secret(let reference)?: hasher.combine(1); hasher.combine(reference)
        case nil: hasher.combine(2)
        }
        switch trust {
        case .inline(let bundle)?: hasher.combine(0); hasher.combine(bundle.pem)
        case .secret(let reference)?: hasher.combine(1); hasher.combine(reference)
        case nil: hasher.combine(2)
        }
        hasher.combine(subjectAltNames)
        hasher.combine(applicationProtocols)
        hasher.combine(minimumVersion)
        hasher.combine(maximumVersion)
        hasher.combine(cipherSuites)
        hasher.combine(curves)
        precomputedHash = hasher.finalize()
    }

    func hash(into hasher: inout Hasher) {
        hasher.combine(precomputedHash)
    }
}
