import Atomics

/// Envoy's `ssl.*` statistics of a listener or a cluster: `listener.0.0.0.0_15006.ssl.handshake`,
/// `cluster.NAME.ssl.fail_verify_san`. Shown once the owner has been configured with TLS.
final class TLSStats: Sendable {
    /// Handshakes completed and accepted (peer certificate and names verified).
    let handshakes = Counter()
    /// Connections that failed TLS: a handshake error, an untrusted or missing peer certificate, a
    /// refused peer name, a handshake that took too long, or no TLS context (secrets not there yet).
    let connectionErrors = Counter()
    /// Peers whose certificate verified but whose names matched none of the accepted subject alt names.
    let failedSubjectAltNames = Counter()
    private let configured = ManagedAtomic(false)

    init() {}

    /// The owner has a TLS transport socket: its `ssl.*` statistics are shown from now on.
    func markConfigured() {
        if !configured.load(ordering: .relaxed) { configured.store(true, ordering: .relaxed) }
    }

    var entries: [(String, Double)] {
        guard configured.load(ordering: .relaxed) else { return [] }
        return [("ssl.handshake", Double(handshakes.value)),
                ("ssl.connection_error", Double(connectionErrors.value)),
                ("ssl.fail_verify_san", Double(failedSubjectAltNames.value))]
    }
}
