import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Where one captured connection goes: the cluster it counts under, and the local address to connect
/// from (none: the kernel picks).
struct UpstreamRoute: Sendable {
    var cluster: String
    var source: SocketAddress?
    /// Bind `source` with `IP_TRANSPARENT` and the TPROXY mark: the client's own address.
    var transparent = false
}

/// What connection handlers share: options, statistics, the open connections, and routing.
final class ProxyRuntime: Sendable {
    static let outboundPassthrough = "PassthroughCluster"
    static let inboundPassthrough = "InboundPassthroughCluster"

    let options: ProxyOptions
    let stats: ProxyStats
    let connections = ConnectionRegistry()
    let listeners: [ListenerSpec]

    init(options: ProxyOptions, listeners: [ListenerSpec]) {
        self.options = options
        self.listeners = listeners
        self.stats = ProxyStats(listeners: listeners.map(\.statName),
                                clusters: [Self.outboundPassthrough, Self.inboundPassthrough])
    }

    /// The passthrough routes of Istio's sidecar: outbound to the original destination; inbound to the
    /// application from 127.0.0.6 / ::6 (REDIRECT) or from the client's own address (TPROXY).
    func upstream(for listener: ListenerSpec, destination: SocketAddress, client: SocketAddress?) -> UpstreamRoute {
        switch listener.direction {
        case .outbound:
            return UpstreamRoute(cluster: Self.outboundPassthrough)
        case .inbound where listener.transparent:
            return UpstreamRoute(cluster: Self.inboundPassthrough, source: client.map { $0.withPort(0) }, transparent: true)
        case .inbound:
            let source = destination.protocol == .inet6
                ? try? SocketAddress(ipAddress: "::6", port: 0)
                : try? SocketAddress(ipAddress: "127.0.0.6", port: 0)
            return UpstreamRoute(cluster: Self.inboundPassthrough, source: source)
        }
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

/// The downstream connections that are open, by listener: what a drain waits for and closes at its deadline.
final class ConnectionRegistry: Sendable {
    private let open = NIOLockedValueBox<[ObjectIdentifier: (listener: String, channel: Channel)]>([:])

    func opened(_ channel: Channel, listener: String) {
        open.withLockedValue { $0[ObjectIdentifier(channel)] = (listener, channel) }
    }

    func closed(_ channel: Channel) {
        _ = open.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    func count(listeners: Set<String>) -> Int {
        open.withLockedValue { $0.values.filter { listeners.contains($0.listener) }.count }
    }

    func closeAll(listeners: Set<String>) {
        let channels = open.withLockedValue { $0.values.filter { listeners.contains($0.listener) }.map(\.channel) }
        for channel in channels { channel.close(promise: nil) }
    }
}
