import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Where one captured connection goes.
struct UpstreamRoute: Sendable {
    var cluster: ClusterRuntime
    var endpoint: SocketAddress
    /// The local address to connect from; nil: the kernel picks.
    var source: SocketAddress?
    /// Bind `source` with `IP_TRANSPARENT` and the TPROXY mark: the client's own address.
    var transparent = false
    var idleTimeout: TimeAmount
}

/// What connection handlers share: options, configuration, statistics, the open connections.
final class ProxyRuntime: Sendable {
    let options: ProxyOptions
    let listeners: [BootstrapConfig.Listener]
    let clusters: [String: ClusterRuntime]
    let stats: ProxyStats
    let connections = ConnectionRegistry()

    init(options: ProxyOptions, config: BootstrapConfig) {
        self.options = options
        self.listeners = config.listeners
        let clusters = config.clusters.map(ClusterRuntime.init)
        self.clusters = Dictionary(uniqueKeysWithValues: clusters.map { ($0.name, $0) })
        self.stats = ProxyStats(listeners: config.listeners.map { ListenerStats(name: $0.statName) },
                                clusters: clusters.map(\.stats))
    }

    /// The route for a connection to `destination` accepted on `listener`, or why there is none.
    func route(for listener: BootstrapConfig.Listener, destination: SocketAddress, client: SocketAddress?) -> Result<UpstreamRoute, RouteFailure> {
        guard let chain = listener.chain(for: destination) else { return .failure(.noFilterChain) }
        let name: String
        switch chain.route {
        case .cluster(let cluster): name = cluster
        case .weighted(let clusters): name = Self.pick(clusters)
        }
        guard let cluster = clusters[name] else { return .failure(.noFilterChain) }
        guard let endpoint = cluster.endpoint(originalDestination: destination) else { return .failure(.overflow) }
        // Forwarding to one of our own listeners would come straight back.
        if case .originalDestination = cluster.config.discovery, isOwnListener(endpoint) { return .failure(.loop) }
        var route = UpstreamRoute(cluster: cluster, endpoint: endpoint,
                                  idleTimeout: chain.idleTimeout.map { TimeAmount($0) } ?? options.idleTimeout)
        if listener.direction == .inbound {
            // Istio's inbound passthrough: the application sees 127.0.0.6 / ::6, or with TPROXY the client.
            if listener.transparent {
                route.source = client.map { $0.withPort(0) }
                route.transparent = true
            } else {
                route.source = try? SocketAddress(ipAddress: endpoint.protocol == .inet6 ? "::6" : "127.0.0.6", port: 0)
            }
        }
        return .success(route)
    }

    enum RouteFailure: Error {
        case noFilterChain
        case overflow
        case loop
    }

    /// A weighted choice, as `tcp_proxy`'s `weighted_clusters`.
    static func pick(_ clusters: [(name: String, weight: Int)]) -> String {
        let total = clusters.reduce(0) { $0 + $1.weight }
        var ticket = Int.random(in: 0..<total)
        for cluster in clusters {
            if ticket < cluster.weight { return cluster.name }
            ticket -= cluster.weight
        }
        return clusters.last!.name
    }

    /// Whether `destination` is one of this proxy's own listeners: forwarding there would loop.
    func isOwnListener(_ destination: SocketAddress) -> Bool {
        guard let port = destination.port, listeners.contains(where: { $0.port == port }) else { return false }
        let address = destination.unmapped
        if address.isLoopback { return true }
        // Rare: only a connection to one of our ports gets here, so asking the kernel each time is fine.
        let local = (try? System.enumerateDevices()) ?? []
        return local.contains { $0.address?.ipAddress == address.ipAddress }
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

extension SocketAddress {
    func withPort(_ port: Int) -> SocketAddress {
        var copy = self
        copy.port = port
        return copy
    }

    var isLoopback: Bool {
        guard let ip = ipAddress else { return false }
        return ip.hasPrefix("127.") || ip == "::1"
    }
}

/// The downstream connections that are open, by listener: what a drain closes at its deadline (the
/// listeners' `connectionsActive` gauges are what it waits on).
final class ConnectionRegistry: Sendable {
    private let open = NIOLockedValueBox<[ObjectIdentifier: (listener: String, channel: Channel)]>([:])

    func opened(_ channel: Channel, listener: String) {
        open.withLockedValue { $0[ObjectIdentifier(channel)] = (listener, channel) }
    }

    func closed(_ channel: Channel) {
        _ = open.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    func closeAll(listeners: Set<String>) {
        let channels = open.withLockedValue { $0.values.filter { listeners.contains($0.listener) }.map(\.channel) }
        for channel in channels { channel.close(promise: nil) }
    }
}
