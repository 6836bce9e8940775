import NIOConcurrencyHelpers
import NIOSSL

/// The proxy's `NIOSSLContext`s, one per ``TLSContextKey`` in force: every cluster and filter chain
/// with the same TLS settings uses the same context, and an xDS push that sends them again keeps it.
/// A context is built on first use from its key and the secrets it names, and built again once one of
/// those secrets has changed in the ``SecretStore``. A connection takes the context in force when it
/// starts, so a rotated certificate is used from the next connection on while open connections keep
/// the one they began with.
///
/// Contexts are dropped when no cluster or filter chain in force has their key any more: the
/// proxy's runtime calls ``retain(_:)`` each time it replaces its clusters or listeners, so the cache
/// holds what the configuration in force uses and nothing else. (A bound would have to guess a size,
/// and could evict a context in use only to build it again on the next connection.) A connection
/// routed by the configuration just replaced may put its context back; the next replacement drops it.
final class TLSContextCache: Sendable {
    /// What a connection needs from its transport socket.
    struct Built: Sendable {
        let context: NIOSSLContext
        /// This side's SPIFFE ID (the certificate it presents), for Istio's principals.
        var localIdentity: String? { istio.local }
        /// The peer names accepted: the configuration's, plus those of an SDS validation context.
        let subjectAltNames: [SubjectAltNameMatcher]
        /// Whether the peer's certificate is verified against a trust bundle (only then does its identity count).
        let verifiesPeer: Bool
        /// Istio's series of the connections made with this context, by peer.
        let istio: IstioPeerSeries
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

    /// The certificate, the trust bundle and their peer names, as the secrets in force give them.
    private struct Material {
        var serials: [Int] = []
        var problems: [String] = []
        var credentials: TLSCredentials?
        var trust: TrustBundle?
        var secretNames: [SubjectAltNameMatcher] = []
    }

    private let entries = NIOLockedValueBox<[TLSContextKey: Entry]>([:])
    private let metrics: IstioTCPMetrics

    /// `metrics`: where the built contexts' Istio series are kept.
    init(metrics: IstioTCPMetrics) {
        self.metrics = metrics
    }

    /// The context for a new connection. Cheap while nothing changed: one atomic load, and a lock around
    /// a lookup whose hash is precomputed. A context is built outside the lock: two connections that
    /// need the same new context at once may both build it, and both use the one stored first.
    func context(for key: TLSContextKey, secrets: SecretStore) -> Result<Built, Unavailable> {
        let generation = secrets.generation
        let current = entries.withLockedValue { entries -> Result<Built, Unavailable>? in
            guard let entry = entries[key], entry.generation == generation else { return nil }
            return entry.result
        }
        if let current { return current }
        // The secrets are read after the generation: they are at least as new as it says.
        let material = Self.material(for: key, in: secrets)
        let unchanged = entries.withLockedValue { entries -> Result<Built, Unavailable>? in
            // Another secret changed, not one of these: the entry stands, checked against this generation.
            guard var entry = entries[key], entry.serials == material.serials else { return nil }
            entry.generation = max(entry.generation, generation)
            entries[key] = entry
            return entry.result
        }
        if let unchanged { return unchanged }
        let result: Result<Built, Unavailable> = material.problems.isEmpty
            ? build(key, material: material)
            : .failure(Unavailable(description: material.problems.joined(separator: "; ")))
        return entries.withLockedValue { entries in
            if let raced = entries[key], raced.serials == material.serials { return raced.result }
            entries[key] = Entry(generation: generation, serials: material.serials, result: result)
            return result
        }
    }

    /// Drops the contexts whose key is not in `keys` (those of the clusters and filter chains in force).
    func retain(_ keys: Set<TLSContextKey>) {
        entries.withLockedValue { entries in
            guard entries.keys.contains(where: { !keys.contains($0) }) else { return }
            entries = entries.filter { keys.contains($0.key) }
        }
    }

    /// How many keys have a context (or the reason they have none) now.
    var count: Int { entries.withLockedValue { $0.count } }

    private static func material(for key: TLSContextKey, in secrets: SecretStore) -> Material {
        var material = Material()
        switch key.certificate {
        case .inline(let inline)?:
            material.credentials = inline
        case .secret(let reference)?:
            let secret = secrets[reference.name]
            material.serials.append(secret?.serial ?? -1)
            if case .certificate(let found)? = secret?.content {
                material.credentials = found
            } else {
                material.problems.append(secret == nil ? "secret \"\(reference.name)\" has not arrived"
                                                       : "secret \"\(reference.name)\" is a trust bundle, not a certificate")
            }
        case nil:
            break
        }
        switch key.trust {
        case .inline(let inline)?:
            material.trust = inline
        case .secret(let reference)?:
            let secret = secrets[reference.name]
            material.serials.append(secret?.serial ?? -1)
            if case .trust(let found)? = secret?.content {
                material.trust = found
                material.secretNames = found.subjectAltNames
            } else {
                material.problems.append(secret == nil ? "secret \"\(reference.name)\" has not arrived"
                                                       : "secret \"\(reference.name)\" is a certificate, not a trust bundle")
            }
        case nil:
            break
        }
        return material
    }

    private func build(_ key: TLSContextKey, material: Material) -> Result<Built, Unavailable> {
        let credentials = material.credentials
        let trust = material.trust
        var tls: TLSConfiguration
        switch key.role {
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
        tls.applicationProtocols = key.applicationProtocols
        tls.minimumTLSVersion = key.minimumVersion
        tls.maximumTLSVersion = key.maximumVersion
        if let suites = key.cipherSuites { tls.cipherSuites = suites }
        if let curves = key.curves { tls.curves = curves }
        // A connection this side closes first (refused, idle, drained) waits this long for the peer's
        // close_notify before the socket goes; Envoy does not wait at all. (Half-closes in both
        // directions, the normal end of a relayed connection, finish at once.)
        tls.shutdownTimeout = .seconds(1)
        do {
            let context = try NIOSSLContext(configuration: tls)
            return .success(Built(context: context, subjectAltNames: key.subjectAltNames + material.secretNames,
                                  verifiesPeer: trust != nil,
                                  istio: IstioPeerSeries(local: credentials?.identity, metrics: metrics)))
        } catch {
            return .failure(Unavailable(description: "cannot make a TLS context: \(error)"))
        }
    }
}
