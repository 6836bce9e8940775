import Atomics
import Configuration
import FoundationEssentials
import NIOConcurrencyHelpers
import SwiftProtobuf
import XDS

/// The secrets the proxy has from SDS, by name (Istio's `default` workload certificate and `ROOTCA`
/// trust bundle), each with the version it came in. Every update moves ``generation`` on: that is how
/// TLS contexts built from older secrets know to rebuild, so that new connections use a rotated
/// certificate while open ones keep theirs. Whoever waits for secrets (the proxy, before it is LIVE)
/// is told by the update that brings the last of them.
final class SecretStore: Sendable {
    enum Content: Sendable, Equatable {
        case certificate(TLSCredentials)
        case trust(TrustBundle)
    }

    struct Secret: Sendable {
        var name: String
        var version: String
        /// RFC 3339 UTC, as Envoy's `last_updated`.
        var lastUpdated: String
        var content: Content
        /// Which update put this secret in force (versions may repeat; this does not).
        var serial: Int
    }

    /// Someone waiting in ``waitForSecrets(_:until:)``.
    private struct Waiter {
        var names: Set<String>
        var continuation: CheckedContinuation<Bool, Never>
        /// Ends the wait at its deadline; cancelled when the secrets come first.
        var deadline: Task<Void, Never>?
    }

    private struct State {
        var secrets: [String: Secret] = [:]
        var waiters: [Int: Waiter] = [:]
        var nextWaiter = 0

        func hasAll(_ names: Set<String>) -> Bool { names.allSatisfy { secrets[$0] != nil } }
    }

    private let state = NIOLockedValueBox(State())
    private let updates = ManagedAtomic<Int>(0)

    init() {}

    /// Moves on with every update.
    var generation: Int { updates.load(ordering: .acquiring) }

    subscript(name: String) -> Secret? { state.withLockedValue { $0.secrets[name] } }

    /// All secrets, by name.
    var all: [Secret] { state.withLockedValue { $0.secrets.values.sorted { $0.name < $1.name } } }

    /// Puts `contents` in force under `version`. Secrets not named keep what they have: SDS servers
    /// (Istio's among them) send secrets one at a time. Then releases the waiters that have all their
    /// secrets now.
    func update(_ contents: [String: Content], version: String) {
        let now = Date.now.formatted(.iso8601)
        let released = state.withLockedValue { state -> [Waiter] in
            // The generation moves after the secrets are stored: whoever sees the new generation
            // also sees the new secrets.
            let serial = updates.load(ordering: .relaxed) + 1
            for (name, content) in contents {
                // A secret sent again unchanged (every SDS reconnect resends all) keeps its serial, so the
                // TLS contexts built from it are not rebuilt.
                let unchanged = state.secrets[name].flatMap { $0.content == content ? $0.serial : nil }
                state.secrets[name] = Secret(name: name, version: version, lastUpdated: now, content: content, serial: unchanged ?? serial)
            }
            updates.store(serial, ordering: .releasing)
            var released: [Waiter] = []
            for (id, waiter) in state.waiters where state.hasAll(waiter.names) {
                released.append(waiter)
                state.waiters.removeValue(forKey: id)
            }
            return released
        }
        for waiter in released {
            waiter.deadline?.cancel()
            waiter.continuation.resume(returning: true)
        }
    }

    /// Returns true once every secret in `names` is in the store (at once when they already are), or
    /// false when `deadline` comes first. Not cancellable: it returns by the deadline at the latest.
    func waitForSecrets(_ names: Set<String>, until deadline: ContinuousClock.Instant) async -> Bool {
        await withCheckedContinuation { continuation in
            let id = state.withLockedValue { state -> Int? in
                guard !state.hasAll(names) else { return nil }
                let id = state.nextWaiter
                state.nextWaiter += 1
                state.waiters[id] = Waiter(names: names, continuation: continuation)
                return id
            }
            guard let id else { return continuation.resume(returning: true) }
            let timer = Task { [state] in
                try? await Task.sleep(until: deadline, clock: .continuous)
                // Still waiting (not released by an update, which cancels this sleep): the deadline has passed.
                state.withLockedValue { $0.waiters.removeValue(forKey: id) }?.continuation.resume(returning: false)
            }
            let waiting = state.withLockedValue { state in
                state.waiters[id]?.deadline = timer
                return state.waiters[id] != nil
            }
            if !waiting { timer.cancel() }
        }
    }

    /// Reads SDS `Secret` resources: a certificate with its key, or a trust bundle, as PEM. Refuses the
    /// whole response when one does not parse, naming the secret and the field.
    static func decode(_ resources: [Google_Protobuf_Any]) throws(ConfigError) -> [String: Content] {
        var contents: [String: Content] = [:]
        for resource in resources {
            guard resource.typeURL == XDSResourceType.secret.typeURL else {
                throw ConfigError(path: "SDS", message: "resource of type \(resource.typeURL) in an SDS response")
            }
            let secret: Envoy_Extensions_TransportSockets_Tls_V3_Secret
            do {
                secret = try Envoy_Extensions_TransportSockets_Tls_V3_Secret(serializedBytes: [UInt8](resource.value))
            } catch {
                throw ConfigError(path: "SDS", message: "a resource does not decode as a Secret: \(error)")
            }
            guard !secret.name.isEmpty else { throw ConfigError(path: "secret", message: "needs a name") }
            let path = "secret \"\(secret.name)\""
            guard contents[secret.name] == nil else { throw ConfigError(path: path, message: "is sent twice") }
            switch secret.type {
            case .tlsCertificate(let certificate)?:
                contents[secret.name] = .certificate(try TLSCredentials(certificate, path: "\(path).tls_certificate"))
            case .validationContext(let context)?:
                contents[secret.name] = .trust(try TrustBundle(context, path: "\(path).validation_context"))
            case nil:
                throw ConfigError(path: path, message: "needs tls_certificate or validation_context")
            }
        }
        return contents
    }
}
