import FoundationEssentials
import Logging
import SwiftProtobuf
import Synchronization
import XDS
#if canImport(Glibc)
import Glibc
#endif

/// An SDS server on a unix socket in /tmp, as the agent runs one: XDS's ADSServer behind the
/// SecretDiscoveryService, serving the secrets the test publishes (and pushing them when they change).
final class TestSDSServer: Sendable {
    let path: String
    let server: ADSServer
    private let secrets = PublishedSecrets()
    private let task = Mutex<Task<Void, any Error>?>(nil)

    init() {
        path = "/tmp/capstan-sds-\(getpid())-\(UInt32.random(in: .min ... .max)).sock"
        server = ADSServer(source: secrets, logger: Logger(label: "capstan.test.sds"))
    }

    /// Serves until ``stop()``; returns once the socket listens.
    func start() async throws {
        let listening = Shared(false)
        let endpoint = GRPCEndpoint(address: .unixSocket(path: path))
        let services = [server.secretDiscovery]
        task.withLock { $0 = Task { try await endpoint.serve(services) { _ in listening.value.withLock { $0 = true } } } }
        let deadline = ContinuousClock.now + .seconds(5)
        while !listening.value.withLock({ $0 }) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
    }

    /// Puts `secrets` in force as `version` and tells the open streams.
    func publish(version: String, _ secrets: [Envoy_Extensions_TransportSockets_Tls_V3_Secret]) throws {
        let resources = try secrets.map { (name: $0.name, resource: try Google_Protobuf_Any.packed($0, as: .secret)) }
        self.secrets.snapshot.withLock { $0 = XDSSnapshot(types: [.secret: VersionedResources(version: version, resources: resources)]) }
        server.push()
    }

    func stop() {
        task.withLock { $0?.cancel() }
        unlink(path)
    }

    static func certificate(_ name: String, _ credentials: TestCertificateAuthority.Credentials) -> Envoy_Extensions_TransportSockets_Tls_V3_Secret {
        var secret = Envoy_Extensions_TransportSockets_Tls_V3_Secret()
        secret.name = name
        secret.tlsCertificate.certificateChain.inlineBytes = Data(credentials.chainPEM.utf8)
        secret.tlsCertificate.privateKey.inlineBytes = Data(credentials.keyPEM.utf8)
        return secret
    }

    static func trust(_ name: String, rootPEM: String) -> Envoy_Extensions_TransportSockets_Tls_V3_Secret {
        var secret = Envoy_Extensions_TransportSockets_Tls_V3_Secret()
        secret.name = name
        secret.validationContext.trustedCa.inlineBytes = Data(rootPEM.utf8)
        return secret
    }
}

/// What the test SDS server serves, to every proxy alike.
private final class PublishedSecrets: ADSSnapshotSource {
    let snapshot = Mutex(XDSSnapshot(types: [:]))

    func snapshot(for node: Envoy_Config_Core_V3_Node) -> XDSSnapshot {
        snapshot.withLock { $0 }
    }
}
