import GRPCCore
import GRPCProtobuf
import Logging
import SwiftProtobuf
import Synchronization
import GRPCNIOTransportHTTP2Posix
#if canImport(Glibc)
import Glibc
#endif

/// One type's resources for a proxy, packed and encoded, with the version the server gives them.
public struct VersionedResources: Sendable {
    public var version: String
    /// Shared by the streams sent the same list: keep one per content and reuse it.
    public var list: XDSResourceList
    /// By resource name, in a stable order.
    public var resources: [(name: String, resource: Google_Protobuf_Any)] { list.resources }

    public init(version: String, list: XDSResourceList) {
        self.version = version
        self.list = list
    }

    /// A list of its own: for resources sent to one stream, or rarely.
    public init(version: String, resources: [(name: String, resource: Google_Protobuf_Any)]) {
        self.init(version: version, list: XDSResourceList(resources))
    }
}

/// Everything one proxy should have: clusters, endpoints and listeners.
public struct XDSSnapshot: Sendable {
    public var types: [XDSResourceType: VersionedResources]

    public init(types: [XDSResourceType: VersionedResources]) {
        self.types = types
    }
}

/// Where an ``ADSServer`` gets each proxy's configuration: the control plane.
public protocol ADSSnapshotSource: Sendable {
    /// The configuration for the proxy that identified itself as `node`.
    func snapshot(for node: Envoy_Config_Core_V3_Node) -> XDSSnapshot
}

/// Counts of what the server's streams did, for metrics, tests and benchmarks.
public final class ADSServerStats: Sendable {
    public let streamsActive = Atomic<Int>(0)
    public let responsesSent = Atomic<Int>(0)
    public let acks = Atomic<Int>(0)
    public let nacks = Atomic<Int>(0)
    private let lastNack = Mutex<String?>(nil)

    public var lastRejection: String? { lastNack.withLock { $0 } }
    func recordNack(_ message: String) {
        nacks.add(1, ordering: .relaxed)
        lastNack.withLock { $0 = message }
    }
}

/// A state-of-the-world ADS server: each stream gets its proxy's snapshot for the types it subscribes
/// to, and again whenever ``push()`` finds a type's version changed. ACKs and NACKs are matched to the
/// nonce last sent; stale ones are ignored, as the protocol says.
///
/// Responses are written from the shared, already encoded ``XDSResourceList``s, and equal subscriptions
/// are shared, so that what a stream costs does not grow with the size of the mesh.
public final class ADSServer: RegistrableRPCService {
    private enum StreamEvent: Sendable {
        case request(DiscoveryRequest)
        case configChanged
    }

    public let stats = ADSServerStats()
    private let source: any ADSSnapshotSource
    private let logger: Logger
    private let streams = Mutex<[Int: AsyncStream<StreamEvent>.Continuation]>([:])
    private let nextStreamID = Atomic<Int>(0)
    private let subscriptions = ResourceSubscriptions()

    public init(source: some ADSSnapshotSource, logger: Logger) {
        self.source = source
        self.logger = logger
    }

    /// Tells every stream to compare its proxy's snapshot with what it sent, and send what changed.
    public func push() {
        for stream in streams.withLock({ Array($0.values) }) { stream.yield(.configChanged) }
    }

    public func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        register(Envoy_Service_Discovery_V3_AggregatedDiscoveryService.Method.StreamAggregatedResources.descriptor, with: &router)
    }

    /// Serves `method` (ADS's, or SDS's: the same messages on another name) with this server's streams.
    fileprivate func register<Transport: ServerTransport>(_ method: MethodDescriptor, with router: inout RPCRouter<Transport>) {
        router.registerHandler(forMethod: method, deserializer: ProtobufDeserializer<DiscoveryRequest>(),
                               serializer: EncodedDiscoveryResponse.Serializer()) { request, _ in self.stream(request) }
    }

    private func stream(_ request: StreamingServerRequest<DiscoveryRequest>) -> StreamingServerResponse<EncodedDiscoveryResponse> {
        StreamingServerResponse { writer in
            let (events, continuation) = AsyncStream.makeStream(of: StreamEvent.self)
            let id = self.nextStreamID.add(1, ordering: .relaxed).newValue
            self.streams.withLock { $0[id] = continuation }
            self.stats.streamsActive.add(1, ordering: .relaxed)
            defer {
                self.streams.withLock { _ = $0.removeValue(forKey: id) }
                self.stats.streamsActive.subtract(1, ordering: .relaxed)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    defer { continuation.finish() }
                    for try await message in request.messages { continuation.yield(.request(message)) }
                }
                var session = ADSStreamSession()
                for await event in events {
                    for response in try self.respond(to: event, session: &session) {
                        try await writer.write(response)
                        self.stats.responsesSent.add(1, ordering: .relaxed)
                    }
                }
                try await group.waitForAll()
            }
            return [:]
        }
    }

    private func respond(to event: StreamEvent, session: inout ADSStreamSession) throws -> [EncodedDiscoveryResponse] {
        switch event {
        case .configChanged:
            guard let node = session.node else { return [] }
            let snapshot = source.snapshot(for: node)
            return session.subscribed.keys.sorted().compactMap { type in
                guard let current = snapshot.types[type], current.version != session.sent[type]?.version else { return nil }
                return session.response(type, from: current)
            }
        case .request(let request):
            if session.node == nil {
                guard request.hasNode else {
                    throw RPCError(code: .invalidArgument, message: "the first request of a stream must carry the node")
                }
                session.node = request.node
            }
            guard let type = XDSResourceType(rawValue: request.typeURL) else {
                logger.debug("request for a type this server does not serve", metadata: ["type_url": "\(request.typeURL)"])
                return []
            }
            let sent = session.sent[type]
            if !request.responseNonce.isEmpty {
                // A reply to an older response: the newer one is on its way and will be answered.
                guard request.responseNonce == sent?.nonce else { return [] }
                if request.hasErrorDetail {
                    stats.recordNack(request.errorDetail.message)
                    logger.warning("proxy rejected configuration", metadata: [
                        "node": "\(session.node?.id ?? "")", "type": "\(type.service)",
                        "version": "\(sent?.version ?? "")", "error": "\(request.errorDetail.message)",
                    ])
                } else {
                    stats.acks.add(1, ordering: .relaxed)
                }
            }
            let subscription = request.resourceNames.isEmpty ? nil : subscriptions.subscription(to: request.resourceNames)
            let unchanged = sent != nil && session.subscribed[type].map { $0 === subscription } == true
            session.subscribed[type] = .some(subscription)
            if unchanged { return [] }
            guard let current = source.snapshot(for: session.node!).types[type] else { return [] }
            return [session.response(type, from: current)]
        }
    }
}

/// What one stream has asked for and been sent.
private struct ADSStreamSession {
    var node: Envoy_Config_Core_V3_Node?
    /// By type; nil (asked with no names): all of them, for the wildcard types, else none.
    var subscribed: [XDSResourceType: ResourceSubscription?] = [:]
    var sent: [XDSResourceType: (version: String, nonce: String)] = [:]
    private var nonces = 0

    mutating func response(_ type: XDSResourceType, from current: VersionedResources) -> EncodedDiscoveryResponse {
        nonces += 1
        let selection: [Int]?
        switch subscribed[type] {
        case .some(.some(let subscription)): selection = subscription.selection(in: current.list)
        case .some(.none), .none: selection = type.isWildcardByDefault ? nil : []
        }
        let response = EncodedDiscoveryResponse(versionInfo: current.version, typeURL: type.typeURL, nonce: String(nonces),
                                                list: current.list, selection: selection)
        sent[type] = (current.version, response.nonce)
        return response
    }
}

extension ADSServer {
    /// Serves ADS at `address` until the task is cancelled; `listening` gets the bound address
    /// (useful with port 0).
    public func serve(at address: XDSServerAddress, listening: @Sendable (String) -> Void = { _ in }) async throws {
        try await GRPCEndpoint(address: address).serve([self], listening: listening)
    }

    /// The same server as SDS (`SecretDiscoveryService/StreamSecrets`), for the agent's secrets.
    public var secretDiscovery: some RegistrableRPCService { SecretDiscoveryService(server: self) }
}

/// SDS speaks ADS's messages on another service name; the stream logic is the same.
private struct SecretDiscoveryService: RegistrableRPCService {
    let server: ADSServer

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        server.register(Envoy_Service_Secret_V3_SecretDiscoveryService.Method.StreamSecrets.descriptor, with: &router)
    }
}
