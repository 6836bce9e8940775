import FoundationEssentials
import HTTPEndpoints
import NIOCore
import NIOPosix

/// The agent's status server, on Istio's ports. The status port (15020) serves `GET /healthz/ready`,
/// `GET /stats/prometheus` (the agent's metrics, then the proxy's), and, to loopback callers only,
/// `POST /quitquitquit` and `POST /drain`. The readiness port (15021) serves `GET /healthz/ready` alone,
/// for kubelet probes.
public final class StatusServer: Sendable {
    /// Where the answers come from; the agent supplies these.
    public struct Sources: Sendable {
        /// The facts readiness is decided from, gathered now.
        public var readiness: @Sendable () async -> Readiness
        /// Restarts of the proxy child so far.
        public var proxyRestarts: @Sendable () -> Int
        /// The proxy's Prometheus text; nil when the proxy does not answer.
        public var proxyMetrics: @Sendable () async -> String?
        /// `POST /quitquitquit`: stop the proxy now and exit (called after the answer is sent).
        public var quit: @Sendable () async -> Void
        /// `POST /drain`: drain inbound gracefully, without exiting.
        public var drain: @Sendable () async -> Void
        /// The wall clock, for certificate expiry.
        public var now: @Sendable () -> Date

        public init(readiness: @escaping @Sendable () async -> Readiness,
                    proxyRestarts: @escaping @Sendable () -> Int,
                    proxyMetrics: @escaping @Sendable () async -> String?,
                    quit: @escaping @Sendable () async -> Void,
                    drain: @escaping @Sendable () async -> Void,
                    now: @escaping @Sendable () -> Date = { Date() }) {
            self.readiness = readiness
            self.proxyRestarts = proxyRestarts
            self.proxyMetrics = proxyMetrics
            self.quit = quit
            self.drain = drain
            self.now = now
        }
    }

    private let channels: [any Channel]
    /// The ports actually bound (useful when 0 asked for an ephemeral one).
    public let statusPort: Int
    public let readinessPort: Int

    private init(channels: [any Channel], statusPort: Int, readinessPort: Int) {
        self.channels = channels
        self.statusPort = statusPort
        self.readinessPort = readinessPort
    }

    /// Binds both ports on `host` (Istio: all addresses, since kubelet probes come from the node).
    /// If either cannot be bound, nothing stays bound and the error says which port.
    public static func start(host: String = "0.0.0.0", statusPort: Int = 15020, readinessPort: Int = 15021,
                             sources: Sources,
                             group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws(StatusServerError) -> StatusServer {
        var bound: [any Channel] = []
        for (port, routes) in [(statusPort, statusRoutes(sources)), (readinessPort, readinessRoutes(sources))] {
            do {
                bound.append(try await EndpointServer.bind(host: host, port: port, group: group, routes: routes).get())
            } catch {
                for channel in bound { try? await channel.close() }
                throw StatusServerError(host: host, port: port, reason: "\(error)")
            }
        }
        return StatusServer(channels: bound, statusPort: bound[0].localAddress?.port ?? statusPort,
                            readinessPort: bound[1].localAddress?.port ?? readinessPort)
    }

    /// Stops listening on both ports.
    public func close() async {
        for channel in channels { try? await channel.close() }
    }

    // MARK: Routes

    static func statusRoutes(_ sources: Sources) -> EndpointRoutes {
        var routes = readinessRoutes(sources)
        routes.get("/stats/prometheus", async: { _ in
            let readiness = await sources.readiness()
            let agent = AgentMetrics(proxyRestarts: sources.proxyRestarts(), readiness: readiness).prometheusText(at: sources.now())
            let proxy = await sources.proxyMetrics() ?? ""
            return .prometheus(agent + proxy)
        })
        routes.post("/quitquitquit") { request in
            if let refusal = refusal(for: request) { return refusal }
            // Answer first; the agent may exit soon after.
            Task {
                try? await Task.sleep(for: .milliseconds(50))
                await sources.quit()
            }
            return EndpointResponse(.ok, "OK\n")
        }
        routes.post("/drain") { request in
            if let refusal = refusal(for: request) { return refusal }
            Task { await sources.drain() }
            return EndpointResponse(.ok, "OK\n")
        }
        return routes
    }

    static func readinessRoutes(_ sources: Sources) -> EndpointRoutes {
        var routes = EndpointRoutes()
        routes.get("/healthz/ready", async: { _ in
            let unmet = await sources.readiness().unmetConditions(at: sources.now())
            return unmet.isEmpty ? EndpointResponse(.ok, "ready\n")
                : EndpointResponse(.serviceUnavailable, "not ready: " + unmet.joined(separator: "; ") + "\n")
        })
        return routes
    }

    /// 403 for a caller that is not on this host; nil for one that is.
    static func refusal(for request: EndpointRequest) -> EndpointResponse? {
        if isLoopback(request.peer) { return nil }
        let caller = request.peer?.ipAddress ?? "an unknown address"
        return EndpointResponse(.forbidden, "forbidden: \(request.path) is only for callers on localhost, not \(caller)\n")
    }

    /// Whether `address` is this host: 127.0.0.0/8, ::1, an IPv4-mapped 127.x, or a unix socket.
    public static func isLoopback(_ address: SocketAddress?) -> Bool {
        switch address {
        case .v4(let v4)?:
            return UInt32(bigEndian: v4.address.sin_addr.s_addr) >> 24 == 127
        case .v6(let v6)?:
            return withUnsafeBytes(of: v6.address.sin6_addr) { bytes in
                let isOne = bytes[0..<15].allSatisfy { $0 == 0 } && bytes[15] == 1
                let isMappedLoopback = bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF && bytes[12] == 127
                return isOne || isMappedLoopback
            }
        case .unixDomainSocket?:
            return true
        case nil:
            return false
        }
    }
}
