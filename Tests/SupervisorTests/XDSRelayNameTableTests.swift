import Foundation
import GRPCCore
import Logging
import Supervisor
import SwiftProtobuf
import Synchronization
import Testing
import XDS

/// With DNS capture on, the relay subscribes to Istio's NDS on the upstream stream itself, hands each
/// NameTable to the agent, ACKs it (or NACKs an undecodable one, naming the version in force), and never
/// passes NDS to the proxy.
@Suite struct XDSRelayNameTableTests {
    /// Answers CDS once, and NDS twice: a good table, then one whose bytes are not a NameTable.
    final class ControlPlane: Envoy_Service_Discovery_V3_AggregatedDiscoveryService.StreamingServiceProtocol, Sendable {
        let requests = Mutex<[DiscoveryRequest]>([])

        func streamAggregatedResources(
            request: StreamingServerRequest<DiscoveryRequest>, context: ServerContext
        ) async throws -> StreamingServerResponse<DiscoveryResponse> {
            StreamingServerResponse { writer in
                var ndsSent = 0
                for try await message in request.messages {
                    self.requests.withLock { $0.append(message) }
                    guard message.responseNonce.isEmpty || message.typeURL == XDSRelay.nameTableTypeURL else { continue }
                    var response = DiscoveryResponse()
                    response.typeURL = message.typeURL
                    if message.typeURL == XDSResourceType.cluster.typeURL, message.responseNonce.isEmpty {
                        response.versionInfo = "c1"
                        response.nonce = "c1"
                        try await writer.write(response)
                    } else if message.typeURL == XDSRelay.nameTableTypeURL, ndsSent < 2 {
                        ndsSent += 1
                        var resource = Google_Protobuf_Any()
                        resource.typeURL = XDSRelay.nameTableTypeURL
                        if ndsSent == 1 {
                            var table = Istio_Networking_Nds_V1_NameTable()
                            var info = Istio_Networking_Nds_V1_NameTable.NameInfo()
                            info.ips = ["198.51.100.200"]
                            info.registry = "Kubernetes"
                            table.table["payments.shop.svc.cluster.local"] = info
                            resource.value = try table.serializedBytes()
                        } else {
                            resource.value = Data([0x0A, 0xFF, 0xFF])
                        }
                        response.resources = [resource]
                        response.versionInfo = "n\(ndsSent)"
                        response.nonce = "n\(ndsSent)"
                        try await writer.write(response)
                    }
                }
                return [:]
            }
        }
    }

    final class Proxy: ADSResponseHandler {
        let types = Mutex<[String]>([])
        func apply(_ response: DiscoveryResponse, type: XDSResourceType, client: ADSClient) async -> ADSVerdict {
            types.withLock { $0.append(response.typeURL) }
            return .accept
        }
        func connectionChanged(connected: Bool) {}
    }

    @Test func nameTablesGoToTheAgentAndAreACKedUpstream() async throws {
        let base = "/tmp/capstan-nds-\(getpid())-\(UUID().uuidString.prefix(8))"
        let upstreamPath = base + "-up.sock", proxyPath = base + "-proxy.sock"
        defer {
            unlink(upstreamPath)
            unlink(proxyPath)
        }
        let controlPlane = ControlPlane()
        let serving = Task { try await GRPCEndpoint(address: .unixSocket(path: upstreamPath)).serve([controlPlane]) }
        defer { serving.cancel() }

        let tables = Mutex<[Istio_Networking_Nds_V1_NameTable]>([])
        let fast = RetryBackoff(initial: .milliseconds(20), maximum: .milliseconds(100))
        let relay = try XDSRelay(upstream: .unixSocket(path: upstreamPath), security: .plaintext, backoff: fast,
                                 logger: Logger(label: "test"), nameTables: { table in tables.withLock { $0.append(table) } })
        let relaying = Task { try await relay.run(serving: GRPCEndpoint(address: .unixSocket(path: proxyPath))) }

        var node = Envoy_Config_Core_V3_Node()
        node.id = "sidecar~192.0.2.1~a.shop~shop.svc.cluster.local"
        let client = ADSClient(server: .unixSocket(path: proxyPath), node: node, backoff: fast, logger: Logger(label: "test"))
        client.subscribe(.cluster, to: [])
        let proxy = Proxy()
        let running = Task.detached { await client.run(handler: proxy) }

        #expect(await eventually(within: 10) {
            controlPlane.requests.withLock { requests in requests.contains { $0.responseNonce == "n2" } }
        })
        let requests = controlPlane.requests.withLock { $0 }
        // The proxy's request (with the node) first, then the relay's own NDS subscription.
        #expect(requests.first?.typeURL == XDSResourceType.cluster.typeURL && requests.first?.hasNode == true)
        let nds = requests.filter { $0.typeURL == XDSRelay.nameTableTypeURL }
        #expect(nds.map(\.responseNonce) == ["", "n1", "n2"])
        #expect(nds.map(\.versionInfo) == ["", "n1", "n1"], "the NACK names the version in force")
        #expect(!nds[1].hasErrorDetail && nds[2].hasErrorDetail)
        #expect(tables.withLock { $0.map { Array($0.table.keys) } } == [["payments.shop.svc.cluster.local"]])
        #expect(await eventually { client.acceptedVersion(of: .cluster) == "c1" })
        #expect(proxy.types.withLock { $0 } == [XDSResourceType.cluster.typeURL], "NDS never reaches the proxy")

        running.cancel()
        await running.value
        relaying.cancel()
        _ = try? await relaying.value
    }
}
