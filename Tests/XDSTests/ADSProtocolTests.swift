import Foundation
import Logging
import SwiftProtobuf
import Synchronization
import Testing
import XDS

/// Our ADS client against our ADS server, in process over a unix socket: versions, nonces, ACK and
/// NACK as the state-of-the-world protocol has them.
@Suite struct ADSProtocolTests {
    /// Serves one cluster and one listener; the listener's version is set by the test.
    final class Source: ADSSnapshotSource {
        let listenerVersion = Mutex("1")

        func snapshot(for node: Envoy_Config_Core_V3_Node) -> XDSSnapshot {
            var cluster = Envoy_Config_Cluster_V3_Cluster()
            cluster.name = "outbound|80||a.example"
            var listener = Envoy_Config_Listener_V3_Listener()
            listener.name = "virtualOutbound"
            let version = listenerVersion.withLock { $0 }
            return XDSSnapshot(types: [
                .cluster: VersionedResources(version: "1", resources: [(cluster.name, try! .packed(cluster, as: .cluster))]),
                .listener: VersionedResources(version: version, resources: [(listener.name, try! .packed(listener, as: .listener))]),
            ])
        }
    }

    /// Accepts clusters; refuses listener version 1, accepts later ones.
    final class Handler: ADSResponseHandler {
        let seen = Mutex<[String]>([])

        func apply(_ response: DiscoveryResponse, type: XDSResourceType, client: ADSClient) async -> ADSVerdict {
            seen.withLock { $0.append("\(type.service) \(response.versionInfo) \(response.resources.count)") }
            if type == .listener && response.versionInfo == "1" { return .reject("listener \"virtualOutbound\": no listeners today") }
            return .accept
        }

        func connectionChanged(connected: Bool) {}
    }

    func waitUntil(_ condition: () -> Bool) async -> Bool {
        for _ in 0..<250 {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }

    @Test func acksNacksAndPushesFollowTheProtocol() async throws {
        let path = "/tmp/capstan-ads-test-\(getpid()).sock"
        defer { unlink(path) }
        let source = Source()
        let server = ADSServer(source: source, logger: Logger(label: "test"))
        let serving = Task { try await server.serve(at: .unixSocket(path: path)) }
        defer { serving.cancel() }
        #expect(await waitUntil { FileManager.default.fileExists(atPath: path) })

        var node = Envoy_Config_Core_V3_Node()
        node.id = "sidecar~192.0.2.1~a.default~default.svc.cluster.local"
        let client = ADSClient(server: .unixSocket(path: path), node: node,
                               backoff: .init(initial: .milliseconds(50), maximum: .milliseconds(200)), logger: Logger(label: "test"))
        client.subscribe(.cluster, to: [])
        client.subscribe(.listener, to: [])
        let handler = Handler()
        let running = Task.detached { await client.run(handler: handler) }
        defer { running.cancel() }

        // The NACK names the version still in force (none yet) and carries the handler's reason.
        #expect(await waitUntil { server.stats.nacks.load(ordering: .relaxed) == 1 })
        #expect(server.stats.lastRejection == "listener \"virtualOutbound\": no listeners today")
        #expect(client.acceptedVersion(of: .cluster) == "1")
        #expect(client.acceptedVersion(of: .listener) == "")

        // A push sends only the type whose version changed.
        source.listenerVersion.withLock { $0 = "2" }
        server.push()
        #expect(await waitUntil { client.acceptedVersion(of: .listener) == "2" })
        #expect(handler.seen.withLock { $0 } == ["CDS 1 1", "LDS 1 1", "LDS 2 1"])
        #expect(await waitUntil { server.stats.acks.load(ordering: .relaxed) == 2 })
    }
}
