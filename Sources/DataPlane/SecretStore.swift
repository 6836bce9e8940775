import Atomics
import Configuration
import FoundationEssentials
import NIOConcurrencyHelpers
import SwiftProtobuf
import XDS

/// The secrets the proxy has from SDS, by name (Istio's `default` workload certificate and `ROOTCA`
/// trust bundle), each with the version it came in. Every update moves ``generation`` on: that is how
/// TLS contexts built from older secrets know to rebuild, so that new connections use a rotated
/// certificate while open ones keep theirs.
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

    private let secrets = NIOLockedValueBox<[String: Secret]>([:])
    private let updates = ManagedAtomic<Int>(0)

    init() {}

    /// Moves on with every update.
    var generation: Int { updates.load(ordering: .acquiring) }

    subscript(name: String) -> Secret? { secrets.withLockedValue { $0[name] } }

    /// All secrets, by name.
    var all: [Secret] { secrets.withLockedValue { $0.values.sorted { $0.name < $1.name } } }

    /// Puts `contents` in force under `version`. Secrets not named keep what they have: SDS servers
    /// (Istio's among them) send secrets one at a time.
    func update(_ contents: [String: Content], version: String) {
        let now = Date.now.formatted(.iso8601)
        secrets.withLockedValue { secrets in
            // The generation moves after the secrets are stored: whoever sees the new generation
            // also sees the new secrets.
            let serial = updates.load(ordering: .relaxed) + 1
            for (name, content) in contents {
                // A secret sent again unchanged (every SDS reconnect resends all) keeps its serial, so the
                // TLS contexts built from it are not rebuilt.
                let unchanged = secrets[name].flatMap { $0.content == content ? $0.serial : nil }
                secrets[name] = Secret(name: name, version: version, lastUpdated: now, content: content, serial: unchanged ?? serial)
            }
            updates.store(serial, ordering: .releasing)
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
