import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import XDS

/// The packaged proxy: the capture listeners, Envoy's admin API on 127.0.0.1, the Prometheus endpoint,
/// and drain. Without configuration it is a passthrough, like Istio's `PassthroughCluster`.
public final class Proxy: Sendable {
    /// Envoy's server states, as `/ready` reports them.
    public enum State: String, Sendable {
        case preInitializing = "PRE_INITIALIZING"
        case live = "LIVE"
        case draining = "DRAINING"
    }

    /// A listening socket and what it was bound for: a listener whose port or transparency changes is
    /// bound anew.
    private struct BoundListener {
        var port: Int
        var transparent: Bool
        var channel: Channel
    }

    private struct Mutable {
        var state = State.preInitializing
        /// Capture listeners by name.
        var serverChannels: [String: BoundListener] = [:]
        /// The admin API and the Prometheus endpoint.
        var adminChannels: [Channel] = []
        var drained: Set<String> = []
        var healthCheckFailing = false
        var stopping = false
        /// The ADS subscription, while it runs, and its client (secrets with `sds_config: {ads: {}}` are asked there).
        var controlPlane: Task<Void, Never>?
        var controlPlaneClient: ADSClient?
        /// The SDS streams, once the configuration names a secret.
        var secretDiscovery: SecretDiscovery?
    }

    let runtime: ProxyRuntime
    let group: MultiThreadedEventLoopGroup
    private let mutable = NIOLockedValueBox(Mutable())
    /// The SDS secrets subscribed to, last time the configuration named any. Its lock is held while
    /// the SDS streams are told, so that concurrent changes reach them in order.
    private let subscribedSecrets = NIOLockedValueBox<Set<SecretReference>>([])
    private let stopped: EventLoopPromise<Void>

    public init(options: ProxyOptions) {
        let config = options.bootstrap ?? .passthrough(outboundPort: options.outboundPort, inboundPort: options.inboundPort,
                                                       inboundTransparent: options.inboundInterception == .tproxy)
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, options.concurrency))
        runtime = ProxyRuntime(options: options, config: config, loops: Array(group.makeIterator()))
        stopped = group.next().makePromise(of: Void.self)
    }

    public var state: State { mutable.withLockedValue { $0.state } }

    /// Binds the admin API first (so `/ready` can say PRE_INITIALIZING), then the listeners and the
    /// Prometheus endpoint. With static configuration the proxy is LIVE when this returns (or, when it
    /// names SDS secrets, once they are there); with ADS it becomes LIVE once the first clusters and
    /// listeners from the control plane, and their secrets, are in force.
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
            try applyListeners(Array(runtime.configuration.listeners.values)).wait()
        } catch {
            stop()
            throw error
        }
        requestSecrets()
        if let bootstrap = runtime.options.bootstrap, let dynamic = bootstrap.dynamicResources {
            subscribe(to: dynamic, bootstrap: bootstrap)
        } else {
            becomeLive()
        }
    }

    /// Opens the ADS stream: clusters first, listeners once they are warm.
    private func subscribe(to dynamic: BootstrapConfig.DynamicResources, bootstrap: BootstrapConfig) {
        let logger = Logger(label: "capstan.proxy.xds")
        let client = ADSClient(server: dynamic.server, node: dynamic.node, nodeOnEveryRequest: dynamic.nodeOnEveryRequest,
                               backoff: runtime.options.controlPlaneBackoff, logger: logger)
        let handler = DynamicResources(proxy: self, bootstrap: bootstrap, warmingTimeout: runtime.options.warmingTimeout, logger: logger)
        client.subscribe(.cluster, to: [])
        let task = Task {
            await client.run(handler: handler)
            handler.stopResolvers()
        }
        mutable.withLockedValue {
            $0.controlPlane = task
            $0.controlPlaneClient = client
        }
        // Secrets named before the stream existed (static listeners) are asked for on it now.
        subscribedSecrets.withLockedValue { subscribed in
            let names = subscribed.filter { $0.cluster == nil }.map(\.name)
            if !names.isEmpty { client.subscribe(.secret, to: Set(names).sorted()) }
        }
    }

    /// From PRE_INITIALIZING to LIVE (not back from DRAINING), once the SDS secrets the configuration
    /// names are there, or the warming timeout has passed without them (Envoy's initial_fetch_timeout).
    /// The secret store says when they arrive; the configuration is read again then, in case it names
    /// others by now.
    func becomeLive() {
        let runtime = self.runtime
        func missing() -> Set<String> { Set(runtime.secretReferences.lazy.map(\.name).filter { runtime.secrets[$0] == nil }) }
        guard !missing().isEmpty else { return markLive() }
        let deadline = ContinuousClock.now + runtime.options.warmingTimeout
        Task { [self] in
            var names = missing()
            while !names.isEmpty, await runtime.secrets.waitForSecrets(names, until: deadline) {
                names = missing()
            }
            markLive()
        }
    }

    private func markLive() {
        mutable.withLockedValue { if $0.state == .preInitializing { $0.state = .live } }
    }

    /// Subscribes to the SDS secrets the configuration in force names, opening the SDS stream the first
    /// time (with Istio: `default` and `ROOTCA`, from the agent's `sds-grpc` socket). Does nothing while
    /// they are the ones already subscribed to (an EDS push changes no secret), or when the
    /// configuration names none (the subscriptions stay).
    func requestSecrets() {
        guard let bootstrap = runtime.options.bootstrap else { return }
        let runtime = self.runtime
        subscribedSecrets.withLockedValue { subscribed in
            let references = runtime.secretReferences
            guard !references.isEmpty, references != subscribed else { return }
            let discovery = mutable.withLockedValue { state -> SecretDiscovery? in
                guard !state.stopping else { return nil }
                if let open = state.secretDiscovery { return open }
                let made = SecretDiscovery(store: runtime.secrets, node: bootstrap.node ?? bootstrap.dynamicResources?.node ?? .init(),
                                           servers: { bootstrap.grpcServer(cluster: $0) }, backoff: runtime.options.controlPlaneBackoff,
                                           logger: Logger(label: "capstan.proxy.sds"))
                state.secretDiscovery = made
                return made
            }
            guard let discovery else { return }
            discovery.request(references)
            // Those with `sds_config: {ads: {}}` come on the ADS stream, as istiod serves gateways' credentials.
            let overADS = Set(references.filter { $0.cluster == nil }.map(\.name))
            if overADS != Set(subscribed.filter { $0.cluster == nil }.map(\.name)),
               let client = mutable.withLockedValue({ $0.controlPlaneClient }) {
                client.subscribe(.secret, to: overADS.sorted())
            }
            subscribed = references
        }
    }

    /// Puts `listeners` in force: binds those that are new (or moved to another port) and bind at all
    /// (`bind_to_port`), then swaps the configuration, then closes the sockets of listeners that are gone
    /// (or no longer bind). Connections already accepted
    /// finish on what they were routed by. If a new socket cannot be bound, the configuration does not
    /// change and the error says which listener failed; the one exception is a port handed from one
    /// listener to another in the same update, whose old socket has to close before the new bind.
    func applyListeners(_ listeners: [BootstrapConfig.Listener]) -> EventLoopFuture<Void> {
        let (toBind, refused) = mutable.withLockedValue { state -> ([BootstrapConfig.Listener], Bool) in
            let fresh = listeners.filter { listener in
                // A listener that does not bind only takes connections handed to it: no socket.
                guard listener.bindsToPort, !state.drained.contains(listener.name) else { return false }
                guard let bound = state.serverChannels[listener.name] else { return true }
                return bound.port != listener.port || bound.transparent != listener.transparent
            }
            return (fresh, state.stopping)
        }
        let loop = group.next()
        if refused { return loop.makeSucceededVoidFuture() }
        // A listener that moves to a port another listener gives up in the same update is bound after
        // the old one closes; within one update ports are unique (checked when decoding).
        let movingPorts = Set(toBind.map(\.port))
        let released = mutable.withLockedValue { state -> [Channel] in
            let leaving = state.serverChannels.filter { name, bound in
                movingPorts.contains(bound.port)
                    && !listeners.contains { $0.bindsToPort && $0.name == name && $0.port == bound.port && $0.transparent == bound.transparent }
            }
            for name in leaving.keys { state.serverChannels.removeValue(forKey: name) }
            return leaving.values.map(\.channel)
        }
        let closes = EventLoopFuture.andAllComplete(released.map { $0.close() }, on: loop)
        return closes.flatMap { [self] in
            let binds = toBind.map { listener in bind(listener).map { (listener, $0) } }
            return EventLoopFuture.whenAllComplete(binds, on: loop)
        }.flatMapThrowing { [self] results in
            var bound: [(BootstrapConfig.Listener, Channel)] = []
            var failure: (String, any Error)?
            for (listener, result) in zip(toBind, results) {
                switch result {
                case .success(let pair): bound.append(pair)
                case .failure(let error): failure = failure ?? (listener.name, error)
                }
            }
            if let (name, error) = failure {
                for (_, channel) in bound { channel.close(promise: nil) }
                throw ListenerBindError(listener: name, underlying: error)
            }
            runtime.replaceListeners(listeners)
            // A listener that stops binding (bind_to_port: false) gives its socket up too.
            let wanted = Set(listeners.filter(\.bindsToPort).map(\.name))
            let removed = mutable.withLockedValue { state -> [Channel] in
                var replaced: [Channel] = []
                for (listener, channel) in bound {
                    if let old = state.serverChannels[listener.name] { replaced.append(old.channel) }
                    state.serverChannels[listener.name] = BoundListener(port: listener.port, transparent: listener.transparent, channel: channel)
                }
                for name in state.serverChannels.keys where !wanted.contains(name) {
                    replaced.append(state.serverChannels.removeValue(forKey: name)!.channel)
                }
                return replaced
            }
            for channel in removed { channel.close(promise: nil) }
        }
    }

    private func bind(_ listener: BootstrapConfig.Listener) -> EventLoopFuture<Channel> {
        let runtime = self.runtime
        let stats = runtime.stats.listener(listener.statName)
        let name = listener.name
        let transparent = listener.transparent
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
                        CapturedConnectionHandler(listener: name, transparent: transparent, stats: stats, runtime: runtime))
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
        let listeners = runtime.configuration.listeners.values
        let names = Set(listeners.filter { !inboundOnly || $0.direction == .inbound }.map(\.name))
        let (channels, allDrained) = mutable.withLockedValue { state -> ([Channel], Bool) in
            if !inboundOnly { state.state = .draining }
            let newly = names.subtracting(state.drained)
            state.drained.formUnion(names)
            return (newly.compactMap { state.serverChannels[$0]?.channel }, state.drained.isSuperset(of: listeners.map(\.name)))
        }
        for channel in channels { channel.close(promise: nil) }
        if graceful {
            runtime.connections.quiesce(listeners: names)
        } else {
            runtime.connections.closeAll(listeners: names)
        }
        let deadline = NIODeadline.now() + runtime.options.drainTime
        waitForConnections(of: names, until: deadline, thenStop: allDrained)
    }

    private func waitForConnections(of listeners: Set<String>, until deadline: NIODeadline, thenStop: Bool) {
        let loop = group.next()
        loop.scheduleTask(in: .milliseconds(50)) { [self] in
            let open = runtime.configuration.listeners.values.filter { listeners.contains($0.name) }
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
            state.controlPlane?.cancel()
            state.secretDiscovery?.stop()
            return state.serverChannels.values.map(\.channel) + state.adminChannels
        }
        guard let channels else { return }
        let closes = channels.map { $0.close() }
        runtime.connections.closeAll()
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
        runtime.accessLogs.flush()  // what the loops still hold, before they go
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

    /// `/listeners`: `virtualOutbound::[::]:15001`, one per line, as Envoy prints them (by port).
    var listenersText: String {
        let open = mutable.withLockedValue { $0.serverChannels }
        return open.sorted { $0.value.port < $1.value.port }.compactMap { name, bound in
            bound.channel.localAddress.flatMap { address in
                address.ipAddress.map { "\(name)::\(address.protocol == .inet6 ? "[\($0)]" : $0):\(bound.port)" }
            }
        }.joined(separator: "\n") + "\n"
    }

    /// `/clusters`: `NAME::STAT::VALUE` and each host's `NAME::HOST::health_flags::…`, as Envoy prints them.
    var clustersText: String {
        let hosts = runtime.configuration.clusters
        return runtime.stats.clusters.flatMap { cluster in
            cluster.entries.map { "\(cluster.name)::\($0.0)::\(Int64($0.1))" } + (hosts[cluster.name]?.hostLines ?? [])
        }.joined(separator: "\n") + "\n"
    }

    /// `/config_dump`: the listeners and clusters in force, in the shape of Envoy's dump.
    var configDump: String { configDump(includeEndpoints: false) }

    /// `/config_dump`, with the endpoints dump too for Envoy's `?include_eds`.
    func configDump(includeEndpoints: Bool) -> String { ConfigDump(runtime: runtime, includeEndpoints: includeEndpoints).json }

    /// `/certs`: the certificates of every TLS context in force, in the shape of Envoy's answer.
    var certificatesDump: String { CertificatesDump(runtime: runtime).json }
}

/// A listener's socket could not be bound: the update that asked for it is refused.
struct ListenerBindError: Error, CustomStringConvertible {
    var listener: String
    var underlying: any Error
    var description: String { "listener \"\(listener)\": cannot bind: \(underlying)" }
}
