import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import SwiftProtobuf
import Synchronization

public typealias DiscoveryRequest = Envoy_Service_Discovery_V3_DiscoveryRequest
public typealias DiscoveryResponse = Envoy_Service_Discovery_V3_DiscoveryResponse

/// What a consumer of xDS says about one response: applied, or refused with a reason (a NACK).
public enum ADSVerdict: Sendable, Equatable {
    case accept
    case reject(String)
}

/// The side of an ADS client that applies configuration: the proxy.
public protocol ADSResponseHandler: AnyObject, Sendable {
    /// Applies or refuses one response. Calls come one at a time, in the order responses arrive.
    func apply(_ response: DiscoveryResponse, type: XDSResourceType, client: ADSClient) async -> ADSVerdict
    /// The stream to the server came up or went down.
    func connectionChanged(connected: Bool)
}

/// Which discovery service a client's stream speaks: the aggregated one (CDS, EDS, LDS to the control
/// plane) or SDS (certificates from the agent). Both carry the same messages.
public enum DiscoveryAPI: Sendable {
    case aggregated
    case secrets
}

/// A state-of-the-world ADS client: one gRPC stream carrying CDS, EDS and LDS, ACKing what the
/// handler accepts and NACKing what it refuses (with the last accepted version, so the server knows
/// what is still in force). A broken stream is reopened with exponential backoff and jitter, and the
/// subscriptions are sent again with their accepted versions; the handler keeps its last good config
/// in the meantime.
public final class ADSClient: Sendable {
    private struct Subscription {
        var names: [String]
        var acceptedVersion = ""
        var lastNonce = ""
    }

    private struct State {
        var subscriptions: [XDSResourceType: Subscription] = [:]
        /// Requests to the stream that is open now; nil between streams.
        var outbox: AsyncStream<DiscoveryRequest>.Continuation?
        var nodeSent = false
    }

    public let server: XDSServerAddress
    public let node: Envoy_Config_Core_V3_Node
    public let api: DiscoveryAPI
    /// Whether every request carries the node (Envoy's `set_node_on_first_message_only: false`), not
    /// only each stream's first.
    public let nodeOnEveryRequest: Bool
    private let backoff: RetryBackoff
    private let logger: Logger
    private let state = Mutex(State())

    /// The proxy's client: plaintext, to the agent's unix socket or a plaintext control plane.
    public init(server: XDSServerAddress, node: Envoy_Config_Core_V3_Node, api: DiscoveryAPI = .aggregated,
                nodeOnEveryRequest: Bool = false, backoff: RetryBackoff = RetryBackoff(), logger: Logger) {
        self.server = server
        self.node = node
        self.api = api
        self.nodeOnEveryRequest = nodeOnEveryRequest
        self.backoff = backoff
        self.logger = logger
    }

    /// Asks for `names` of `type` (empty: all of them, for LDS and CDS). Sent now if a stream is
    /// open, and again on every new stream.
    public func subscribe(_ type: XDSResourceType, to names: [String]) {
        state.withLock { state in
            var subscription = state.subscriptions[type] ?? Subscription(names: names)
            let changed = state.subscriptions[type] == nil || subscription.names != names
            subscription.names = names
            state.subscriptions[type] = subscription
            if changed, let outbox = state.outbox {
                outbox.yield(request(type, subscription, state: &state, errorDetail: nil))
            }
        }
    }

    /// The names subscribed to for `type` (empty: all of them), nil before any subscription.
    public func subscribedNames(of type: XDSResourceType) -> [String]? {
        state.withLock { $0.subscriptions[type]?.names }
    }

    /// The last version accepted for `type`, empty before any.
    public func acceptedVersion(of type: XDSResourceType) -> String {
        state.withLock { $0.subscriptions[type]?.acceptedVersion ?? "" }
    }

    /// Runs streams until the task is cancelled.
    public func run(handler: some ADSResponseHandler) async {
        let transport: HTTP2ClientTransport.Posix
        do {
            transport = try XDSTransportSecurity.plaintext.clientTransport(to: server, backoff: backoff)
        } catch {
            logger.error("cannot reach the xDS server", metadata: ["server": "\(server)", "error": "\(error)"])
            return
        }
        do {
            try await withGRPCClient(transport: transport) { grpc in
                let open = Self.streamOpener(api, grpc)
                // Ends (by cancellation, nothing else) between streams or during a wait.
                try? await backoff.retrying {
                    let receivedAny = await stream(open, handler: handler)
                    handler.connectionChanged(connected: false)
                    return receivedAny
                } waiting: { delay in
                    logger.info("xDS stream closed, reconnecting", metadata: ["server": "\(server)", "in": "\(delay)"])
                }
                grpc.beginGracefulShutdown()
            }
        } catch {
            logger.error("xDS client stopped", metadata: ["error": "\(error)"])
        }
    }

    /// Opens one bidirectional discovery stream: writes what `requests` yields, hands responses to `onResponse`.
    typealias StreamOpener = @Sendable (
        _ options: CallOptions,
        _ requests: AsyncStream<DiscoveryRequest>,
        _ onResponse: @escaping @Sendable (StreamingClientResponse<DiscoveryResponse>) async throws -> Void
    ) async throws -> Void

    private static func streamOpener(_ api: DiscoveryAPI, _ grpc: GRPCClient<HTTP2ClientTransport.Posix>) -> StreamOpener {
        switch api {
        case .aggregated:
            let ads = Envoy_Service_Discovery_V3_AggregatedDiscoveryService.Client(wrapping: grpc)
            return { options, requests, onResponse in
                try await ads.streamAggregatedResources(options: options) { writer in
                    for await request in requests { try await writer.write(request) }
                } onResponse: { try await onResponse($0) }
            }
        case .secrets:
            let sds = Envoy_Service_Secret_V3_SecretDiscoveryService.Client(wrapping: grpc)
            return { options, requests, onResponse in
                try await sds.streamSecrets(options: options) { writer in
                    for await request in requests { try await writer.write(request) }
                } onResponse: { try await onResponse($0) }
            }
        }
    }

    /// One stream, until it breaks. Whether any response arrived (the backoff starts over if so).
    private func stream(_ open: StreamOpener, handler: some ADSResponseHandler) async -> Bool {
        let (requests, outbox) = AsyncStream.makeStream(of: DiscoveryRequest.self)
        state.withLock { state in
            state.outbox = outbox
            state.nodeSent = false
            // Initialization order: clusters, endpoints, listeners.
            for type in state.subscriptions.keys.sorted() {
                var subscription = state.subscriptions[type]!
                subscription.lastNonce = ""
                state.subscriptions[type] = subscription
                outbox.yield(request(type, subscription, state: &state, errorDetail: nil))
            }
        }
        var options = CallOptions.defaults
        options.waitForReady = false
        let received = Atomic(false)
        do {
            try await open(options, requests) { response in
                defer { outbox.finish() }
                for try await message in response.messages {
                    if !received.exchange(true, ordering: .relaxed) { handler.connectionChanged(connected: true) }
                    await self.handle(message, handler: handler)
                }
            }
        } catch {
            logger.debug("xDS stream failed", metadata: ["error": "\(error)"])
        }
        outbox.finish()
        state.withLock { $0.outbox = nil }
        return received.load(ordering: .relaxed)
    }

    private func handle(_ response: DiscoveryResponse, handler: some ADSResponseHandler) async {
        guard let type = XDSResourceType(rawValue: response.typeURL) else {
            logger.warning("xDS response of a type Capstan does not subscribe to", metadata: ["type_url": "\(response.typeURL)"])
            return
        }
        let verdict = await handler.apply(response, type: type, client: self)
        state.withLock { state in
            guard var subscription = state.subscriptions[type] else { return }
            subscription.lastNonce = response.nonce
            var detail: Google_Rpc_Status?
            switch verdict {
            case .accept:
                subscription.acceptedVersion = response.versionInfo
            case .reject(let message):
                var status = Google_Rpc_Status()
                status.code = 3  // INVALID_ARGUMENT, as Envoy sends
                status.message = message
                detail = status
            }
            state.subscriptions[type] = subscription
            state.outbox?.yield(request(type, subscription, state: &state, errorDetail: detail))
        }
        switch verdict {
        case .accept:
            logger.debug("xDS ACK", metadata: ["type": "\(type.service)", "version": "\(response.versionInfo)"])
        case .reject(let message):
            logger.warning("xDS NACK", metadata: ["type": "\(type.service)", "version": "\(response.versionInfo)", "error": "\(message)"])
        }
    }

    private func request(_ type: XDSResourceType, _ subscription: Subscription, state: inout State,
                         errorDetail: Google_Rpc_Status?) -> DiscoveryRequest {
        var request = DiscoveryRequest()
        request.typeURL = type.typeURL
        request.resourceNames = subscription.names
        request.versionInfo = subscription.acceptedVersion
        request.responseNonce = subscription.lastNonce
        if let errorDetail { request.errorDetail = errorDetail }
        // Istio reads the node from a stream's first request only, as Envoy sends it with
        // set_node_on_first_message_only; without it, Envoy sends it every time.
        if !state.nodeSent || nodeOnEveryRequest {
            request.node = node
            state.nodeSent = true
        }
        return request
    }
}

extension XDSServerAddress {
    var target: any ResolvableTarget {
        switch self {
        case .unixSocket(let path): ResolvableTargets.UnixDomainSocket.unixDomainSocket(path: path)
        case .tcp(let host, let port) where host.contains(":"):
            ResolvableTargets.IPv6.ipv6(address: host, port: port)
        case .tcp(let host, let port) where host.allSatisfy({ $0.isNumber || $0 == "." }):
            ResolvableTargets.IPv4.ipv4(address: host, port: port)
        case .tcp(let host, let port):
            ResolvableTargets.DNS.dns(host: host, port: port)
        }
    }
}
