import NIOConcurrencyHelpers
import NIOSSL

/// The `NIOSSLContext` of one transport socket, built from its configuration and the secrets it names,
/// and built again once one of those secrets has changed in the ``SecretStore``. A connection takes the
/// context in force when it starts, so a rotated certificate is used from the next connection on while
/// open connections keep the one they began with.
final class TLSContextCache: Sendable {
    /// What a connection needs from its transport socket.
    struct Built: Sendable {
        let context: NIOSSLContext
        /// This side's SPIFFE ID (the certificate it presents), for Istio's principals.
        let localIdentity: String?
        /// The peer names accepted: the configuration's, plus those of an SDS validation context.
        let subjectAltNames: [SubjectAltNameMatcher]
        /// Whether the peer's certificate is verified against a trust bundle (only then does its identity count).
        let verifiesPeer: Bool
    }

    /// Why a connection cannot have TLS now: a secret has not arrived, or the material does not make a context.
    struct Unavailable: Error, CustomStringConvertible {
        let description: String
    }

    private struct Entry {
        /// The store's generation this entry was checked against.
        var generation: Int
        /// The serials of the SDS secrets used, -1 for one missing; empty for inline material.
        var serials: [Int]
        var result: Result<Built, Unavailable>
    }

    private let entry = NIOLockedValueBox<Entry?>(nil)

    init() {}

    /// The context for a new connection. Cheap while nothing changed: one atomic load and a lock.
    func context(for config: TransportSocketConfig, secrets: SecretStore) -> Result<Built, Unavailable> {
        let generation = secrets.generation
        return entry.withLockedValue { entry in
            if let current = entry, current.generation == generation { return current.result }
            var serials: [Int] = []
            var problems: [String] = []
            var credentials: TLSCredentials?
            var trust: TrustBundle?
            var secretNames: [SubjectAltNameMatcher] = []
            switch config.certificate {
            case .inline(let inline)?:
                credentials = inline
            case .secret(let reference)?:
                let secret = secrets[reference.name]
                serials.append(secret?.serial ?? -1)
                if case .certificate(let found)? = secret?.content {
                    credentials = found
                } else {
                    problems.append(secret == nil ? "secret \"\(reference.name)\" has not arrived"
                                                  : "secret \"\(reference.name)\" is a trust bundle, not a certificate")
                }
            case nil:
                break
            }
            switch config.trust {
            case .inline(let inline)?:
                trust = inline
            case .secret(let reference)?:
                let secret = secrets[reference.name]
                serials.append(secret?.serial ?? -1)
                if case .trust(let found)? = secret?.content {
                    trust = found
                    secretNames = found.subjectAltNames
                } else {
                    problems.append(secret == nil ? "secret \"\(reference.name)\" has not arrived"
                                                  : "secret \"\(reference.name)\" is a certificate, not a trust bundle")
                }
            case nil:
                break
            }
            if let current = entry, current.serials == serials {
                entry?.generation = generation
                return current.result
            }
            let result: Result<Built, Unavailable> = problems.isEmpty
                ? Self.build(config, credentials: credentials, trust: trust, subjectAltNames: config.subjectAltNames + secretNames)
                : .failure(Unavailable(description: problems.joined(separator: "; ")))
            entry = Entry(generation: generation, serials: serials, result: result)
            return result
        }
    }

    private static func build(_ config: TransportSocketConfig, credentials: TLSCredentials?, trust: TrustBundle?,
                              subjectAltNames: [SubjectAltNameMatcher]) -> Result<Built, Unavailable> {
        var tls: TLSConfiguration
        switch config.role {
        case .client:
            tls = .makeClientConfiguration()
            if let credentials {
                tls.certificateChain = credentials.chain.map { .certificate($0) }
                tls.privateKey = .privateKey(credentials.key)
            }
            // The peer is a workload, known by its SPIFFE ID (checked after the handshake), not by a host name.
            tls.certificateVerification = trust == nil ? .none : .noHostnameVerification
        case .server(let requireClientCertificate):
            guard let credentials else { return .failure(Unavailable(description: "a TLS server needs a certificate")) }
            tls = .makeServerConfiguration(certificateChain: credentials.chain.map { .certificate($0) },
                                           privateKey: .privateKey(credentials.key))
            if trust != nil {
                tls.certificateVerification = requireClientCertificate ? .noHostnameVerification : .optionalVerification
            }
        }
        // Only the configured roots, never the system's: a mesh trusts its own CA.
        tls.trustRoots = .certificates(trust?.roots ?? [])
        tls.applicationProtocols = config.applicationProtocols
        tls.minimumTLSVersion = config.minimumVersion
        tls.maximumTLSVersion = config.maximumVersion
        if let suites = config.cipherSuites { tls.cipherSuites = suites }
        if let curves = config.curves { tls.curves = curves }
        // A connection this side closes first (refused, idle, drained) waits this long for the peer's
        // close_notify before the socket goes; Envoy does not wait at all. (Half-closes in both
        // directions, the normal end of a relayed connection, finish at once.)
        tls.shutdownTimeout = .seconds(1)
        do {
            let context = try NIOSSLContext(configuration: tls)
            return .success(Built(context: context, localIdentity: credentials?.identity, subjectAltNames: subjectAltNames,
                                  verifiesPeer: trust != nil))
        } catch {
            return .failure(Unavailable(description: "cannot make a TLS context: \(error)"))
        }
    }
}
