import Foundation
import GRPCCore
import Logging
import Supervisor
import Synchronization
import Testing
import XDS

/// The agent's xDS relay between a real ADS client (standing in for the proxy) and a control plane
/// that breaks its streams, all over unix sockets: upstream streams are reopened with backoff and
/// replayed while the proxy's stream stays up.
@Suite struct XDSRelayTests {
    /// Answers each stream's first request with version n (the stream's number), waits for the ACK,
    /// then breaks the stream, except the last one it is told to keep.
    final class BreakingControlPlane: Envoy_Service_Discovery_V3_AggregatedDiscoveryService.StreamingServiceProtocol, Sendable {
        let keptStream: Int
        /// Each stream's first request, in order.
        let firstRequests = Mutex<[DiscoveryRequest]>([])

        init(keptStream: Int) { self.keptStream = keptStream }

        func streamAggregatedResources(
            request: StreamingServerRequest<DiscoveryRequest>, context: ServerContext
        ) async throws -> StreamingServerResponse<DiscoveryResponse> {
            StreamingServerResponse { writer in
                var messages = request.messages.makeAsyncIterator()
                guard let first = try await messages.next() else { return [:] }
                let number = self.firstRequests.withLock { firsts in
                    firsts.append(first)
                    return firsts.count
                }
                var response = DiscoveryResponse()
                response.typeURL = first.typeURL
                response.versionInfo = String(number)
                response.nonce = "nonce-\(number)"
                try await writer.write(response)
                while let next = try await messages.next(), next.responseNonce != response.nonce {}
                if number < self.keptStream { throw RPCError(code: .unavailable, message: "control plane restarting") }
                while try await messages.next() != nil {}
                return [:]
            }
        }
    }

    /// Accepts everything; counts the times its stream to the relay went down.
    final class Proxy: ADSResponseHandler {
        let disconnects = Atomic(0)

        func apply(_ response: DiscoveryResponse, type: XDSResourceType, client: ADSClient) async -> ADSVerdict { .accept }

        func connectionChanged(connected: Bool) {
            if !connected { disconnects.add(1, ordering: .relaxed) }
        }
    }

    @Test func brokenUpstreamStreamsAreReopenedAndReplayedWhileTheProxysStreamStaysUp() async throws {
        let base = "/tmp/capstan-relay-\(getpid())-\(UUID().uuidString.prefix(8))"
        let upstreamPath = base + "-up.sock", proxyPath = base + "-proxy.sock"
        defer {
            unlink(upstreamPath)
            unlink(proxyPath)
        }
        let controlPlane = BreakingControlPlane(keptStream: 3)
        let serving = Task { try await GRPCEndpoint(address: .unixSocket(path: upstreamPath)).serve([controlPlane]) }
        defer { serving.cancel() }

        let fast = RetryBackoff(initial: .milliseconds(20), maximum: .milliseconds(100))
        let relay = try XDSRelay(upstream: .unixSocket(path: upstreamPath), security: .plaintext, backoff: fast,
                                 logger: Logger(label: "test"))
        let relaying = Task { try await relay.run(serving: GRPCEndpoint(address: .unixSocket(path: proxyPath))) }

        var node = Envoy_Config_Core_V3_Node()
        node.id = "sidecar~192.0.2.1~a.default~default.svc.cluster.local"
        let client = ADSClient(server: .unixSocket(path: proxyPath), node: node, backoff: fast, logger: Logger(label: "test"))
        client.subscribe(.cluster, to: [])
        let proxy = Proxy()
        let running = Task.detached { await client.run(handler: proxy) }

        #expect(await eventually(within: 10) { client.acceptedVersion(of: .cluster) == "3" })
        #expect(await eventually { relay.status.accepted[.cluster] == "3" && relay.status.upstreamConnected })
        #expect(proxy.disconnects.load(ordering: .relaxed) == 0, "the proxy's stream never noticed")

        // Every new upstream stream began with the proxy's latest request: the node, the version it
        // accepted last, no nonce from the old stream.
        let firsts = controlPlane.firstRequests.withLock { $0 }
        #expect(firsts.count == 3)
        #expect(firsts.map(\.versionInfo) == ["", "1", "2"])
        #expect(firsts.allSatisfy { $0.hasNode && $0.node.id == node.id && $0.responseNonce.isEmpty })
        #expect(firsts.allSatisfy { $0.typeURL == XDSResourceType.cluster.typeURL })

        running.cancel()
        await running.value
        relaying.cancel()
        _ = try? await relaying.value
    }
}
