import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import SwiftProtobuf
import Synchronization
import XDS

/// The agent's xDS proxy: the proxy child speaks ADS to a unix socket in the pod, and the relay carries
/// each of its streams to the control plane with the agent's credentials (TLS, bearer token).
///
/// An upstream stream that breaks is reopened with backoff while the proxy's stream stays up: the
/// relay replays the proxy's latest request of each type on the new stream, so the control plane sends
/// the current state again and the proxy never notices. The relay also watches the proxy's ACKs, which
/// is how the agent knows the first CDS and LDS were accepted.
public final class XDSRelay: Envoy_Service_Discovery_V3_AggregatedDiscoveryService.StreamingServiceProtocol {
    /// What the relay has seen, for readiness and metrics.
    public struct Status: Sendable, Equatable {
        /// Whether a stream to the control plane is open and has answered.
        public var upstreamConnected = false
        /// The version the proxy last ACKed, by type; a type is absent until its first ACK.
        public var accepted: [XDSResourceType: String] = [:]
    }

    public let upstream: XDSServerAddress
    private let credentials: @Sendable () throws -> Metadata
    private let backoff: RetryBackoff
    private let logger: Logger
    private let state = Mutex(Status())
    private let client: GRPCClient<HTTP2ClientTransport.Posix>
    private let nameTables: (@Sendable (Istio_Networking_Nds_V1_NameTable) -> Void)?

    /// Istio's NDS type: the name table for the agent's DNS proxy.
    public static let nameTableTypeURL = "type.googleapis.com/istio.networking.nds.v1.NameTable"

    /// `credentials` is asked afresh for every upstream stream (the token file may have been rotated).
    /// With `nameTables` (DNS capture on), the relay subscribes to NDS on each upstream stream, as
    /// pilot-agent does, and hands every name table to it (ACKed upstream, never forwarded to the proxy).
    public init(upstream: XDSServerAddress, security: XDSTransportSecurity,
                credentials: @escaping @Sendable () throws -> Metadata = { [:] },
                backoff: RetryBackoff = .init(), logger: Logger,
                nameTables: (@Sendable (Istio_Networking_Nds_V1_NameTable) -> Void)? = nil) throws {
        self.upstream = upstream
        self.nameTables = nameTables
        self.credentials = credentials
        self.backoff = backoff
        self.logger = logger
        client = GRPCClient(transport: try security.clientTransport(to: upstream, backoff: backoff))
    }

    public var status: Status { state.withLock { $0 } }

    /// Serves the proxy at `endpoint` (normally a unix socket owned by the proxy's uid) until cancelled.
    public func run(serving endpoint: GRPCEndpoint, listening: @Sendable (String) -> Void = { _ in }) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask {
                try await withTaskCancellationHandler {
                    try await self.client.runConnections()
                } onCancel: {
                    self.client.beginGracefulShutdown()
                }
            }
            try await endpoint.serve([self], listening: listening)
            group.cancelAll()
        }
    }

    public func streamAggregatedResources(
        request: StreamingServerRequest<DiscoveryRequest>, context: ServerContext
    ) async throws -> StreamingServerResponse<DiscoveryResponse> {
        StreamingServerResponse { writer in
            let session = RelaySession()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    var subscribed = false
                    for try await message in request.messages {
                        self.observe(message)
                        session.forward(message)
                        // After the proxy's first request (which carries the node), the agent's own NDS subscription.
                        if self.nameTables != nil, !subscribed {
                            subscribed = true
                            var nds = DiscoveryRequest()
                            nds.typeURL = Self.nameTableTypeURL
                            session.forward(nds)
                        }
                    }
                }
                group.addTask {
                    try await self.carryUpstream(session) { try await writer.write($0) }
                }
                // The proxy's side ending ends the relay of this stream.
                try await group.next()
                group.cancelAll()
            }
            return [:]
        }
    }

    /// Opens upstream streams for one proxy stream until it is cancelled, replaying on each.
    private func carryUpstream(_ session: RelaySession,
                               deliver: @escaping @Sendable (DiscoveryResponse) async throws -> Void) async throws {
        let ads = Envoy_Service_Discovery_V3_AggregatedDiscoveryService.Client(wrapping: client)
        try await backoff.retrying {
            let requests = session.openUpstream()
            let answered = Atomic(false)
            var options = CallOptions.defaults
            options.waitForReady = true
            do {
                try await ads.streamAggregatedResources(metadata: try credentials(), options: options) { writer in
                    for await request in requests { try await writer.write(request) }
                } onResponse: { response in
                    for try await message in response.messages {
                        if !answered.exchange(true, ordering: .relaxed) {
                            self.state.withLock { $0.upstreamConnected = true }
                            self.logger.info("xDS upstream connected", metadata: ["server": "\(self.upstream)"])
                        }
                        if message.typeURL == Self.nameTableTypeURL, let nameTables = self.nameTables {
                            session.forward(self.consumeNameTable(message, into: nameTables))
                            continue
                        }
                        try await deliver(message)
                    }
                }
            } catch let cancelled as CancellationError {
                // The proxy's stream is gone: no reconnect, nothing to report.
                throw cancelled
            } catch {
                logger.debug("xDS upstream stream failed", metadata: ["error": "\(error)"])
            }
            session.closeUpstream()
            state.withLock { $0.upstreamConnected = false }
            return answered.load(ordering: .relaxed)
        } waiting: { delay in
            logger.info("xDS upstream closed, reconnecting", metadata: ["server": "\(upstream)", "in": "\(delay)"])
        }
    }

    /// Decodes an NDS response for the DNS proxy and returns the ACK (or, for an undecodable table, the NACK
    /// naming why, keeping the table in force).
    private func consumeNameTable(_ response: DiscoveryResponse,
                                  into sink: @Sendable (Istio_Networking_Nds_V1_NameTable) -> Void) -> DiscoveryRequest {
        var reply = DiscoveryRequest()
        reply.typeURL = Self.nameTableTypeURL
        reply.responseNonce = response.nonce
        do {
            guard response.resources.count <= 1 else {
                throw XDSRelayNameTableError(reason: "\(response.resources.count) resources, expected one NameTable")
            }
            let table = try response.resources.first.map { try Istio_Networking_Nds_V1_NameTable(unpackingAny: $0) }
                ?? Istio_Networking_Nds_V1_NameTable()
            sink(table)
            reply.versionInfo = response.versionInfo
            logger.info("NDS name table", metadata: ["version": "\(response.versionInfo)", "hosts": "\(table.table.count)"])
        } catch {
            reply.errorDetail.code = 3
            reply.errorDetail.message = "NameTable: \(error)"
            logger.warning("NDS name table refused", metadata: ["error": "\(error)"])
        }
        return reply
    }

    /// Notes ACKs on their way up (a NACK leaves the accepted version as it was).
    private func observe(_ request: DiscoveryRequest) {
        guard let type = XDSResourceType(rawValue: request.typeURL), !request.responseNonce.isEmpty,
              !request.hasErrorDetail else { return }
        state.withLock { $0.accepted[type] = request.versionInfo }
    }
}

/// Why an NDS response was NACKed.
struct XDSRelayNameTableError: Error, CustomStringConvertible {
    let reason: String
    var description: String { reason }
}

/// One proxy stream's side of the relay: its latest request per type (what a new upstream stream must
/// hear again) and the upstream stream open now, if any.
private final class RelaySession: Sendable {
    private struct State {
        var latest: [String: DiscoveryRequest] = [:]
        var order: [String] = []
        var node: Envoy_Config_Core_V3_Node?
        var outbox: AsyncStream<DiscoveryRequest>.Continuation?
    }

    private let state = Mutex(State())

    /// A request from the proxy: remembered, and sent up if a stream is open.
    func forward(_ request: DiscoveryRequest) {
        state.withLock { state in
            if request.hasNode { state.node = request.node }
            if state.latest[request.typeURL] == nil { state.order.append(request.typeURL) }
            state.latest[request.typeURL] = request
            state.outbox?.yield(request)
        }
    }

    /// Starts a new upstream stream's requests: the latest of each type, first with the node and all
    /// without a nonce (the nonces belonged to the old stream), then whatever the proxy sends next.
    func openUpstream() -> AsyncStream<DiscoveryRequest> {
        let (requests, outbox) = AsyncStream.makeStream(of: DiscoveryRequest.self)
        state.withLock { state in
            state.outbox?.finish()
            state.outbox = outbox
            for (index, type) in state.order.enumerated() {
                var replay = state.latest[type]!
                replay.responseNonce = ""
                replay.clearErrorDetail()
                if index == 0, let node = state.node { replay.node = node } else { replay.clearNode() }
                outbox.yield(replay)
            }
        }
        return requests
    }

    func closeUpstream() {
        state.withLock { state in
            state.outbox?.finish()
            state.outbox = nil
        }
    }
}
