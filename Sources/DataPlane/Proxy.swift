import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The packaged proxy: the capture listeners, Envoy's admin API on 127.0.0.1, the Prometheus endpoint,
/// and drain. Without configuration it is a passthrough, like Istio's `PassthroughCluster`.
public final class Proxy: Sendable {
    /// Envoy's server states, as `/ready` reports them.
    public enum State: String, Sendable {
        case preInitializing = "PRE_INITIALIZING"
        case live = "LIVE"
        case draining = "DRAINING"
    }

    private struct Mutable {
        var state = State.preInitializing
        /// Capture listeners by name.
        var serverChannels: [String: Channel] = [:]
        /// The admin API and the Prometheus endpoint.
        var adminChannels: [Channel] = []
        var drained: Set<String> = []
        var healthCheckFailing = false
        var stopping = false
    }

    let runtime: ProxyRuntime
    private let group: MultiThreadedEventLoopGroup
    private let mutable = NIOLockedValueBox(Mutable())
    private let stopped: EventLoopPromise<Void>

    public init(options: ProxyOptions) {
        let config = options.bootstrap ?? .passthrough(outboundPort: options.outboundPort, inboundPort: options.inboundPort,
                                                       inboundTransparent: options.inboundInterception == .tproxy)
        runtime = ProxyRuntime(options: options, config: config)
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, options.concurrency))
        stopped = group.next().makePromise(of: Void.self)
    }

    public var state: State { mutable.withLockedValue { $0.state } }

    /// Binds the admin API first (so `/ready` can say PRE_INITIALIZING), then the listeners and the
    /// Prometheus endpoint; the proxy is LIVE when this returns.
    /// If a port cannot be bound, what was bound is closed again (``stop()``) and the error is thrown.
    public func start() throws {
        let admin = AdminServer(proxy: self)
        let adminPort = runtime.options.bootstrap?.adminPort ?? runtime.options.adminPort
        do {
            for (host, port, routes) in [("127.0.0.1", adminPort, AdminServer.Routes.admin),
                                         ("::", runtime.options.statsPort, .prometheusOnly)] {
                let channel = try admin.bind(host: host, port: port, group: group, routes: routes).wait()
                mutable.withLockedValue { $0.adminChannels.append(channel) }
            }
            for listener in runtime.listeners {
                let channel = try bind(listener).wait()
                mutable.withLockedValue { $0.serverChannels[listener.name] = channel }
            }
        } catch {
            stop()
            throw error
        }
        mutable.withLockedValue { $0.state = .live }
    }

    private func bind(_ listener: BootstrapConfig.Listener) -> EventLoopFuture<Channel> {
        let runtime = self.runtime
        let stats = runtime.stats.listener(listener.statName)
        var bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.socketOption(.so_keepalive), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.recvAllocator, value: ProxyOptions.readBuffers)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        CapturedConnectionHandler(listener: listener, stats: stats, runtime: runtime))
                }
            }
        // One dual-stack socket takes IPv4 and IPv6 connections alike.
        let address = try! SocketAddress(ipAddress: "::", port: listener.port)
        if listener.transparent {
            bootstrap = bootstrap.serverChannelOption(.ipTransparent(for: address), value: 1)
        }
        return bootstrap.bind(to: address)
    }

    // MARK: Admin actions

    public var healthCheckFailing: Bool {
        get { mutable.withLockedValue { $0.healthCheckFailing } }
        set { mutable.withLockedValue { $0.healthCheckFailing = newValue } }
    }

    /// Stops accepting on the chosen listeners. Graceful: open connections run until they finish or
    /// the drain time passes. Not graceful: they are closed now. Once every listener is drained and its
    /// connections are gone, the proxy stops.
    public func drain(inboundOnly: Bool, graceful: Bool) {
        let names = Set(runtime.listeners.filter { !inboundOnly || $0.direction == .inbound }.map(\.name))
        let (channels, allDrained) = mutable.withLockedValue { state -> ([Channel], Bool) in
            if !inboundOnly { state.state = .draining }
            let newly = names.subtracting(state.drained)
            state.drained.formUnion(names)
            return (newly.compactMap { state.serverChannels[$0] }, state.drained.count == runtime.listeners.count)
        }
        for channel in channels { channel.close(promise: nil) }
        if !graceful { runtime.connections.closeAll(listeners: names) }
        let deadline = NIODeadline.now() + runtime.options.drainTime
        waitForConnections(of: names, until: deadline, thenStop: allDrained)
    }

    private func waitForConnections(of listeners: Set<String>, until deadline: NIODeadline, thenStop: Bool) {
        let loop = group.next()
        loop.scheduleTask(in: .milliseconds(50)) { [self] in
            let open = runtime.listeners.filter { listeners.contains($0.name) }
                .reduce(Int64(0)) { $0 + runtime.stats.listener($1.statName).connectionsActive.value }
            if open > 0 && NIODeadline.now() < deadline {
                waitForConnections(of: listeners, until: deadline, thenStop: thenStop)
                return
            }
            runtime.connections.closeAll(listeners: listeners)
            if thenStop { stop() }
        }
    }

    /// Closes everything now; calling it again does nothing.
    public func stop() {
        let channels = mutable.withLockedValue { state -> [Channel]? in
            guard !state.stopping else { return nil }
            state.stopping = true
            return Array(state.serverChannels.values) + state.adminChannels
        }
        guard let channels else { return }
        let closes = channels.map { $0.close() }
        runtime.connections.closeAll(listeners: Set(runtime.listeners.map(\.name)))
        EventLoopFuture.andAllComplete(closes, on: group.next()).whenComplete { _ in
            self.stopped.succeed(())
        }
    }

    /// Stops shortly after the current admin response has gone out.
    func stopSoon() {
        group.next().scheduleTask(in: .milliseconds(50)) { self.stop() }
    }

    /// Blocks until ``stop()`` has closed everything, then shuts the event loops down.
    public func waitUntilStopped() throws {
        try stopped.futureResult.wait()
        try group.syncShutdownGracefully()
    }

    /// Envoy's `/stats`, with the server-wide lines first: `server.state` (0 live, 1 draining,
    /// 2 pre-initializing, as Envoy numbers them) and whether `/healthcheck/fail` is in force.
    var statsText: String {
        serverStats.map { "server.\($0.0): \($0.1)" }.joined(separator: "\n") + "\n" + runtime.stats.envoyText
    }

    var prometheusText: String {
        serverStats.map { "# TYPE envoy_server_\($0.0) gauge\nenvoy_server_\($0.0) \($0.1)" }.joined(separator: "\n")
            + "\n" + runtime.stats.prometheusText
    }

    private var serverStats: [(String, Int)] {
        let (state, failing) = mutable.withLockedValue { ($0.state, $0.healthCheckFailing) }
        let number = switch state {
        case .live: 0
        case .draining: 1
        case .preInitializing: 2
        }
        return [("state", number), ("healthcheck_failed", failing ? 1 : 0)]
    }

    /// `/listeners`: `virtualOutbound::[::]:15001`, one per line, as Envoy prints them.
    var listenersText: String {
        let open = mutable.withLockedValue { $0.serverChannels }
        return runtime.listeners.compactMap { listener in
            open[listener.name]?.localAddress.flatMap { address in
                address.ipAddress.map { "\(listener.name)::\(address.protocol == .inet6 ? "[\($0)]" : $0):\(listener.port)" }
            }
        }.joined(separator: "\n") + "\n"
    }

    /// `/clusters`: `NAME::STAT::VALUE`, as Envoy prints them.
    var clustersText: String {
        runtime.stats.clusters.flatMap { cluster in
            cluster.entries.map { "\(cluster.name)::\($0.0)::\(Int64($0.1))" }
        }.joined(separator: "\n") + "\n"
    }

    /// `/config_dump`: the listeners and clusters in force, in the shape of Envoy's dump.
    var configDump: String { ConfigDump(runtime: runtime).json }
}
