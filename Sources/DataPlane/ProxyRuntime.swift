import Atomics
import HTTPProxy
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Routing
import XDS

/// Where one captured connection goes.
struct UpstreamRoute: Sendable {
    var cluster: ClusterRuntime
    var endpoint: SocketAddress
    /// The endpoint's place in a LEAST_REQUEST cluster, released when the connection ends.
    var endpointIndex: Int?
    /// The local address to connect from; nil: the kernel picks.
    var source: SocketAddress?
    /// Bind `source` with `IP_TRANSPARENT` and the TPROXY mark: the client's own address.
    var transparent = false
    var idleTimeout: TimeAmount
    /// Which way the connection goes: Istio's `reporter` (source for outbound, destination for inbound).
    var direction = BootstrapConfig.Listener.Direction.outbound
    /// The chain's TLS, terminated before the upstream is connected; nil: relayed as it comes.
    var downstreamTLS: TransportSocketConfig?
    /// The chain's `envoy.filters.network.rbac` filters, checked before the upstream is connected.
    var authorization = NetworkAuthorization()
    /// The TLS to `endpoint`: the cluster's transport socket for it (``BootstrapConfig/Cluster/transportSocket(for:)``,
    /// by its `transport_socket_matches`); nil: plaintext.
    var upstreamTLS: TransportSocketConfig?
}

/// The listeners, clusters and route tables in force. An update replaces it whole, so each connection
/// (and each HTTP request) is routed by one consistent version while connections already open keep the
/// upstream they have.
struct ActiveConfiguration: Sendable {
    var listeners: [String: BootstrapConfig.Listener] = [:] {
        didSet {
            contentsChanged()
            handOff = HandOffIndex(listeners.values)
        }
    }
    var clusters: [String: ClusterRuntime] = [:] {
        didSet { contentsChanged() }
    }
    /// The route configurations from RDS that listeners' HTTP connection managers name, by name
    /// (inline ones are with their connection manager).
    var routes: [String: RouteTable] = [:] {
        didSet { contentsChanged() }
    }
    /// The listeners that do not bind, by address, for connections handed to them.
    private(set) var handOff = HandOffIndex([])

    /// The SDS secrets the transport sockets in force name, gathered when clusters or listeners change.
    private(set) var secretReferences: Set<SecretReference> = []
    /// The TLS contexts the transport sockets in force use, gathered when clusters or listeners change.
    private(set) var contextKeys: Set<TLSContextKey> = []
    /// How many fields of the listeners, clusters and route tables in force Capstan accepts but does not act on.
    private(set) var fieldsNotActedOn = 0

    /// Gathers what the listeners and clusters in force need and carry, once per change.
    private mutating func contentsChanged() {
        fieldsNotActedOn = listeners.values.reduce(0) { $0 + $1.fieldsNotActedOn.count }
            + clusters.values.reduce(0) { $0 + $1.config.fieldsNotActedOn.count }
            + routes.values.reduce(0) { $0 + $1.fieldsNotActedOn.count }
        var sockets = clusters.values.flatMap(\.config.allTransportSockets)
        for listener in listeners.values {
            sockets.append(contentsOf: listener.allChains.compactMap(\.transportSocket))
        }
        secretReferences = Set(sockets.flatMap(\.secretReferences))
        contextKeys = Set(sockets.map(\.contextKey))
    }
}

/// The xDS versions behind the configuration in force, for `/config_dump`.
struct ResourceVersions: Sendable {
    struct Entry: Sendable {
        var version: String
        var lastUpdated: String
    }
    /// By resource type's service (`LDS`, `CDS`, `EDS`, `RDS`): the last accepted version.
    var accepted: [String: String] = [:]
    var listeners: [String: Entry] = [:]
    /// Listeners accepted but waiting for their route configurations (the previous version, if any,
    /// serves meanwhile), by name.
    var warmingListeners: [String: WarmingListener] = [:]
    var clusters: [String: Entry] = [:]
    /// Clusters waiting for their endpoints before they serve.
    var warmingClusters: [String] = []
    /// Clusters whose endpoints come from EDS.
    var endpointDiscovered: Set<String> = []
    /// The endpoints EDS delivered, by service name (a `ClusterLoadAssignment`'s `cluster_name`).
    var assignments: [String: Assignment] = [:]

    /// One accepted `ClusterLoadAssignment`, for `/config_dump?include_eds`.
    struct Assignment: Sendable {
        var entry: Entry
        var endpoints: [BootstrapConfig.Cluster.Endpoint]
        /// The localities the endpoints index (priority, weight, name).
        var localities: [BootstrapConfig.Cluster.Locality] = []
    }

    /// A listener waiting for route configurations, and the version it came in.
    struct WarmingListener: Sendable {
        var entry: Entry
        var listener: BootstrapConfig.Listener
        var waitingFor: [String]
    }

    /// The route configurations RDS delivered, by name, each with the version it last changed in and
    /// the message itself, for the routes dump.
    var routes: [String: Route] = [:]

    struct Route: Sendable {
        var entry: Entry
        var proto: Envoy_Config_Route_V3_RouteConfiguration
    }
}

/// Envoy's listener hand-off (`use_original_dst`): the listeners that do not bind, found by the original
/// destination of a connection another listener accepted. Built once per listener update.
struct HandOffIndex: Sendable {
    /// By exact address and port.
    private var exact: [SocketAddress: String] = [:]
    /// Listeners on 0.0.0.0 (IPv4) and :: (IPv6), by port.
    private var anyIPv4: [Int: String] = [:]
    private var anyIPv6: [Int: String] = [:]

    init(_ listeners: some Sequence<BootstrapConfig.Listener>) {
        for listener in listeners where !listener.bindsToPort {
            switch listener.host {
            case "0.0.0.0": anyIPv4[listener.port] = listener.name
            case "::": anyIPv6[listener.port] = listener.name
            default:
                if let address = try? SocketAddress(ipAddress: listener.host, port: listener.port) { exact[address] = listener.name }
            }
        }
    }

    var isEmpty: Bool { exact.isEmpty && anyIPv4.isEmpty && anyIPv6.isEmpty }

    /// The listener for a connection to `destination`: the one on exactly that address and port, else the
    /// one on all addresses of its family (0.0.0.0 or ::) and that port, else none.
    func listener(for destination: SocketAddress) -> String? {
        let address = destination.unmapped
        if let name = exact[address] { return name }
        guard let port = address.port else { return nil }
        return address.protocol == .inet6 ? anyIPv6[port] : anyIPv4[port]
    }
}

/// What connection handlers share: options, the configuration in force, statistics, the open connections.
final class ProxyRuntime: Sendable {
    let options: ProxyOptions
    let stats: ProxyStats
    let connections = ConnectionRegistry()
    /// The HTTP access log files, one writer per path, shared by all listeners.
    let accessLogs = AccessLogFiles()
    /// Certificates and trust bundles from SDS.
    let secrets = SecretStore()
    /// The TLS contexts of the clusters and filter chains in force, one per distinct setting; those no
    /// longer in force are dropped when clusters or listeners are replaced.
    let contexts: TLSContextCache
    /// Versions of the resources in force, as the control plane named them (empty when static).
    let versions = NIOLockedValueBox(ResourceVersions())
    private let active = NIOLockedValueBox(ActiveConfiguration())
    /// Moves whenever the configuration in force changes (under the lock), so that connections keep the
    /// one they read until then.
    private let generation = ManagedAtomic(0)
    /// Connects the HTTP router's upstreams, with the clusters' TLS.
    let connector: UpstreamConnector
    /// The HTTP upstream pools of each event loop, by the loop's identity (made once: never changes).
    private let pools: [ObjectIdentifier: UpstreamPools]
    /// Where clusters' outlier detectors run their interval timers (none in tests without loops).
    private let timerLoop: (any EventLoop)?

    init(options: ProxyOptions, config: BootstrapConfig, loops: [any EventLoop] = []) {
        self.options = options
        let stats = ProxyStats()
        self.stats = stats
        contexts = TLSContextCache(metrics: stats.istio)
        connector = UpstreamConnector(contexts: contexts, secrets: secrets, defaultConnectTimeout: options.connectTimeout)
        pools = Dictionary(uniqueKeysWithValues: loops.map { (ObjectIdentifier($0), UpstreamPools(eventLoop: $0)) })
        timerLoop = loops.first
        replaceClusters(config.clusters)
        replaceListeners(config.listeners)
    }

    var configuration: ActiveConfiguration { active.withLockedValue { $0 } }

    /// How many times the configuration in force has changed.
    var configurationGeneration: Int { generation.load(ordering: .acquiring) }

    /// The HTTP upstream pools of `loop`, one of the proxy's own.
    func upstreamPools(for loop: any EventLoop) -> UpstreamPools {
        if let pools = pools[ObjectIdentifier(loop)] { return pools }
        preconditionFailure("\(loop) is not one of the proxy's event loops")
    }

    /// The SDS secrets the configuration in force names (gathered when it was put in force).
    var secretReferences: Set<SecretReference> { active.withLockedValue { $0.secretReferences } }

    /// Puts `clusters` in force in place of all others. A cluster whose configuration did not change
    /// keeps its runtime (round-robin position); statistics and the circuit breaker's count of open
    /// connections carry over by name either way. TLS contexts whose settings are still in force stay;
    /// the others are dropped.
    func replaceClusters(_ clusters: [BootstrapConfig.Cluster]) {
        active.withLockedValue { active in
            var next: [String: ClusterRuntime] = [:]
            for cluster in clusters {
                if let current = active.clusters[cluster.name], current.config == cluster {
                    next[cluster.name] = current
                } else {
                    next[cluster.name] = ClusterRuntime(cluster, stats: stats.cluster(cluster.name), connector: connector,
                                                        previous: active.clusters[cluster.name], timerLoop: timerLoop)
                }
                if !cluster.allTransportSockets.isEmpty { stats.cluster(cluster.name).tls.markConfigured() }
            }
            // Versions no longer in force stop their health checks.
            for (name, old) in active.clusters where next[name] !== old { old.retire() }
            active.clusters = next
            generation.wrappingIncrement(ordering: .releasing)
            contexts.retain(active.contextKeys)
            countFieldsNotActedOn(in: active)
        }
    }

    /// Puts `listeners` in force in place of all others (their sockets are the proxy's business). A
    /// listener that did not change is kept as it was. TLS contexts whose settings are still in force
    /// stay; the others are dropped.
    func replaceListeners(_ listeners: [BootstrapConfig.Listener]) {
        for listener in listeners {
            let listenerStats = stats.listener(listener.statName)
            if listener.allChains.contains(where: { $0.transportSocket != nil }) {
                listenerStats.tls.markConfigured()
            }
        }
        active.withLockedValue { active in
            var next: [String: BootstrapConfig.Listener] = [:]
            for listener in listeners {
                if let current = active.listeners[listener.name], current == listener {
                    next[listener.name] = current
                } else {
                    next[listener.name] = listener
                }
            }
            active.listeners = next
            generation.wrappingIncrement(ordering: .releasing)
            contexts.retain(active.contextKeys)
            countFieldsNotActedOn(in: active)
        }
    }

    /// Puts the route tables from RDS in force in place of all others: those the listeners in force name,
    /// and those listeners waiting for them are about to (so tables go in before the listeners that use
    /// them). The HTTP connection managers look them up per request, by name.
    func replaceRoutes(_ routes: [String: RouteTable]) {
        active.withLockedValue { active in
            active.routes = routes
            generation.wrappingIncrement(ordering: .releasing)
            countFieldsNotActedOn(in: active)
        }
    }

    /// `config.fields_not_acted_on`: those of the listeners, clusters and route tables in force, and the
    /// bootstrap's own.
    private func countFieldsNotActedOn(in active: ActiveConfiguration) {
        stats.fieldsNotActedOn.set(Int64(active.fieldsNotActedOn + (options.bootstrap?.fieldsNotActedOn.count ?? 0)))
    }

    /// Envoy's listener hand-off: the name of the listener that serves a connection to `destination`
    /// accepted by the listener named `accepting`. Only a listener with `use_original_dst` hands
    /// connections off: to the listener that does not bind whose address is exactly `destination`'s IP
    /// and port, else to the one on 0.0.0.0 (IPv4) or :: (IPv6) and that port; without either, and for
    /// any other accepting listener, the accepting listener serves it.
    func listener(handingOff accepting: String, destination: SocketAddress, in configuration: ActiveConfiguration) -> String {
        guard !configuration.handOff.isEmpty, configuration.listeners[accepting]?.usesOriginalDestination == true else { return accepting }
        return configuration.handOff.listener(for: destination) ?? accepting
    }

    /// The route for a connection to `destination` accepted on the listener named `listenerName`, or
    /// why there is none. A chain that serves HTTP is the failure ``RouteFailure/servesHTTP(_:)``: its
    /// requests are routed one by one, by the HTTP connection manager.
    func route(listener listenerName: String, destination: SocketAddress, client: SocketAddress?,
               detected: TransportDetection = .plaintext, in configuration: ActiveConfiguration) -> Result<UpstreamRoute, RouteFailure> {
        guard let listener = configuration.listeners[listenerName], let chain = listener.chain(for: destination, detected: detected) else {
            return .failure(.noFilterChain)
        }
        let name: String
        switch chain.action {
        case .relay where chain.clusterFromServerName && detected.serverName?.isEmpty == false:
            // sni_cluster: the SNI names the cluster (Istio's `outbound_.PORT_.SUBSET_.HOST`); none by that name, no relay.
            name = detected.serverName!
        case .relay(.cluster(let cluster)): name = cluster
        case .relay(.weighted(let clusters)): name = Self.pick(clusters)
        case .http: return .failure(.servesHTTP(chain))
        }
        guard let cluster = configuration.clusters[name] else { return .failure(.unknownCluster) }
        // The relay's upstream connection, under max_connections: held until the downstream closes.
        guard cluster.circuitBreakers.tryOpen(.connections) else { return .failure(.overflow) }
        let choice: ClusterRuntime.Choice
        switch cluster.endpoint(originalDestination: destination) {
        case .success(let chosen): choice = chosen
        case .failure(let failure):
            cluster.circuitBreakers.close(.connections)
            return .failure(failure)
        }
        let endpoint = choice.address
        // Forwarding to one of our own listeners would come straight back.
        if case .originalDestination = cluster.config.discovery, isOwnListener(endpoint, in: configuration) {
            cluster.circuitBreakers.close(.connections)
            return .failure(.loop)
        }
        var route = UpstreamRoute(cluster: cluster, endpoint: endpoint, endpointIndex: choice.index,
                                  idleTimeout: chain.idleTimeout.map { TimeAmount($0) } ?? options.idleTimeout,
                                  direction: listener.direction, downstreamTLS: chain.transportSocket, authorization: chain.authorization,
                                  upstreamTLS: choice.transportSocket)
        if listener.direction == .inbound {
            // Istio's inbound passthrough: the application sees 127.0.0.6 / ::6, or with TPROXY the client.
            if listener.transparent {
                route.source = client.map { $0.withPort(0) }
                route.transparent = true
            } else {
                route.source = cluster.config.bindSource(for: endpoint)
                    ?? (try? SocketAddress(ipAddress: endpoint.protocol == .inet6 ? "::6" : "127.0.0.6", port: 0))
            }
        }
        return .success(route)
    }

    enum RouteFailure: Error, Equatable {
        case noFilterChain
        /// The chain names a cluster the proxy does not have (yet): Envoy's tcp_proxy closes too.
        case unknownCluster
        /// The circuit breaker is open.
        case overflow
        /// The cluster has no endpoint to send to.
        case noHealthyUpstream
        case loop
        /// The chain ends in `http_connection_manager` (``BootstrapConfig/FilterChain/httpConnectionManager``):
        /// HTTP is served on the connection, after the chain's TLS (``BootstrapConfig/FilterChain/transportSocket``).
        case servesHTTP(BootstrapConfig.FilterChain)
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

    /// Whether `destination` is one of this proxy's own listening sockets: forwarding there would loop.
    /// (A listener that does not bind has no socket to come back to.)
    private func isOwnListener(_ destination: SocketAddress, in configuration: ActiveConfiguration) -> Bool {
        guard let port = destination.port,
              configuration.listeners.values.contains(where: { $0.bindsToPort && $0.port == port }) else { return false }
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

    func closeAll() {
        let channels = open.withLockedValue { $0.values.map(\.channel) }
        for channel in channels { channel.close(promise: nil) }
    }

    /// Tells the connections of `listeners` that the proxy drains: HTTP/1.1 answers with
    /// `connection: close` and closes once idle, HTTP/2 sends GOAWAY and closes when its streams end. A
    /// TCP relay carries on until the drain deadline.
    func quiesce(listeners: Set<String>) {
        let channels = open.withLockedValue { $0.values.filter { listeners.contains($0.listener) }.map(\.channel) }
        for channel in channels { channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }
    }

    func closeAll(listeners: Set<String>) {
        let channels = open.withLockedValue { $0.values.filter { listeners.contains($0.listener) }.map(\.channel) }
        for channel in channels { channel.close(promise: nil) }
    }
}
