import FoundationEssentials
import Configuration
import Logging
import NIOCore
import Routing
import SwiftProtobuf
import Synchronization
import XDS

/// The proxy's side of ADS, in Envoy's order: clusters first, each EDS cluster warming until its
/// endpoints arrive (the previous version of a cluster keeps serving meanwhile), then listeners, once
/// the first clusters are in force, then the route configurations the listeners' HTTP connection
/// managers name (RDS, by name), each listener warming until its routes arrive just as clusters do. A
/// refused response changes nothing; a lost control plane leaves the last good configuration serving.
/// The proxy turns LIVE once its first listeners, and the routes they need, are in force.
final class DynamicResources: ADSResponseHandler {
    private struct State {
        /// The accepted CDS resources, in force or warming.
        var clusters: [XDSResourceDecoder.DiscoveredCluster] = []
        /// The latest endpoints per EDS service.
        var assignments: [String: XDSResourceDecoder.EndpointAssignment] = [:]
        var clustersInitialized = false
        /// The accepted LDS listeners, in force or warming, and the version each last changed in.
        var listeners: [BootstrapConfig.Listener] = []
        var listenerEntries: [String: ResourceVersions.Entry] = [:]
        /// Whether an LDS response has been accepted.
        var listenersAccepted = false
        /// Whether the first listeners, with their routes, are in force (the proxy is LIVE from then).
        var listenersInitialized = false
        /// The route configurations subscribed to, with the stat prefix of the first connection manager
        /// naming each (Envoy's `http.<stat_prefix>.rds.<name>.*`).
        var routeNames: [String: String] = [:]
        /// The latest table of each route configuration RDS delivered, by name.
        var routes: [String: RouteTable] = [:]
        /// Route configurations that did not come within the warming timeout: listeners needing them are
        /// in force without them (their requests get 404, as in Envoy).
        var routesTimedOut: Set<String> = []
        /// Route configurations whose warming timer has started.
        var routeTimers: Set<String> = []
        /// The DNS clusters' lookups at work, and the hosts each last found (absent: the first round
        /// has not finished, so the cluster is warming), by cluster name.
        var resolvers: [String: DNSClusterResolver] = [:]
        var dnsEndpoints: [String: [BootstrapConfig.Cluster.Endpoint]] = [:]
    }

    /// What one install puts in force.
    private struct Plan {
        var ready: [BootstrapConfig.Listener]
        var warming: [(listener: BootstrapConfig.Listener, waitingFor: [String])]
        var tables: [String: RouteTable]
    }

    private let proxy: Proxy
    private let bootstrap: BootstrapConfig
    private let staticClusters: [BootstrapConfig.Cluster]
    private let staticListeners: [BootstrapConfig.Listener]
    /// How long a new EDS cluster waits for endpoints before it serves without (Envoy's
    /// `initial_fetch_timeout`).
    private let warmingTimeout: Duration
    private let logger: Logger
    private let state = Mutex(State())
    /// The last listener install, which the next one waits for: installs run one at a time, whether an
    /// LDS or RDS response or a warming timer asks.
    private let lastInstall = Mutex<Task<Void, Never>?>(nil)

    /// Looks up the DNS clusters' names.
    private let hostnameResolution: any HostnameResolution
    /// The ADS client of the last CDS response, for installs a DNS lookup starts.
    private let lastClient = Mutex<ADSClient?>(nil)
    private let clusterInstalls = Mutex<Void>(())

    init(proxy: Proxy, bootstrap: BootstrapConfig, warmingTimeout: Duration = .seconds(15),
         hostnameResolution: any HostnameResolution = StubHostnameResolution(), logger: Logger) {
        self.hostnameResolution = hostnameResolution
        self.proxy = proxy
        self.bootstrap = bootstrap
        self.staticClusters = bootstrap.clusters
        self.staticListeners = bootstrap.listeners
        self.warmingTimeout = warmingTimeout
        self.logger = logger
    }

    private var runtime: ProxyRuntime { proxy.runtime }

    func connectionChanged(connected: Bool) {
        let gauge = runtime.stats.controlPlaneConnected
        if connected && gauge.value == 0 { gauge.increment() }
        if !connected && gauge.value == 1 { gauge.decrement() }
    }

    func apply(_ response: DiscoveryResponse, type: XDSResourceType, client: ADSClient) async -> ADSVerdict {
        do throws(ConfigError) {
            switch type {
            case .cluster: try applyClusters(response, client: client)
            case .endpoint: try applyEndpoints(response, client: client)
            case .listener: try await applyListeners(response, client: client)
            case .route: try await applyRoutes(response, client: client)
            case .secret: try applySecrets(response)
            case .nameTable: return .reject("name tables are for the agent's DNS proxy, which subscribes to them itself")
            }
            runtime.versions.withLockedValue { $0.accepted[type.service] = response.versionInfo }
            return .accept
        } catch {
            return .reject(error.description)
        }
    }

    // MARK: SDS on the ADS stream

    /// Secrets the configuration asks for with `sds_config: {ads: {}}` (istiod's gateway credentials):
    /// parsed whole, as on an SDS stream, before the store changes.
    private func applySecrets(_ response: DiscoveryResponse) throws(ConfigError) {
        let contents = try SecretStore.decode(response.resources)
        runtime.secrets.update(contents, version: response.versionInfo)
        logger.info("secrets in force", metadata: ["version": "\(response.versionInfo)", "secrets": "\(contents.keys.sorted())"])
    }

    // MARK: CDS

    private func applyClusters(_ response: DiscoveryResponse, client: ADSClient) throws(ConfigError) {
        let stats = runtime.stats.clusterUpdates
        stats.attempts.increment()
        let clusters: [XDSResourceDecoder.DiscoveredCluster]
        do throws(ConfigError) {
            clusters = try XDSResourceDecoder.clusters(response.resources)
            if let clash = clusters.first(where: { cluster in staticClusters.contains { $0.name == cluster.cluster.name } }) {
                throw ConfigError(path: "cluster \"\(clash.cluster.name)\"", message: "is a static cluster of the bootstrap")
            }
            for cluster in clusters {
                try bootstrap.checkSecretSources(cluster.cluster.transportSocket, path: "cluster \"\(cluster.cluster.name)\".transport_socket")
                if let dns = cluster.dns, !dns.nameservers.isEmpty, dns.usesSystemResolver || !hostnameResolution.takesNameservers {
                    throw ConfigError(path: "cluster \"\(cluster.cluster.name)\".typed_dns_resolver_config.typed_config.resolvers",
                                      message: "the getaddrinfo resolver reads /etc/resolv.conf only: nameservers cannot be given per cluster")
                }
            }
        } catch {
            stats.rejections.increment()
            throw error
        }
        stats.successes.increment()
        logFieldsNotActedOn(clusters.flatMap { cluster in
            cluster.cluster.fieldsNotActedOn.map { $0.described(under: "cluster \"\(cluster.cluster.name)\"") }
        }, in: response)
        let services = Array(Set(clusters.compactMap(\.endpointService))).sorted()
        let previous = state.withLock { state in
            defer {
                state.clusters = clusters
                state.assignments = state.assignments.filter { services.contains($0.key) }
            }
            return state.clusters
        }
        client.subscribe(.endpoint, to: services)
        lastClient.withLock { $0 = client }
        reconcileResolvers(clusters)
        let version = response.versionInfo
        runtime.versions.withLockedValue { versions in
            let now = Self.timestamp()
            var entries: [String: ResourceVersions.Entry] = [:]
            for cluster in clusters {
                // A cluster keeps the version it last changed in, as Envoy reports it.
                if previous.contains(cluster), let kept = versions.clusters[cluster.cluster.name] {
                    entries[cluster.cluster.name] = kept
                } else {
                    entries[cluster.cluster.name] = .init(version: version, lastUpdated: now)
                }
            }
            versions.clusters = entries
            versions.endpointDiscovered = Set(clusters.filter { $0.endpointService != nil }.map(\.cluster.name))
            versions.assignments = versions.assignments.filter { services.contains($0.key) }
        }
        installClusters(client: client)
        let warming = Set(runtime.versions.withLockedValue { $0.warmingClusters })
        if !warming.isEmpty {
            let timeout = warmingTimeout
            Task { [self] in
                try? await Task.sleep(for: timeout)
                stopWarming(warming, client: client)
            }
        }
    }

    /// Puts in force every accepted cluster that is warm, with its endpoints, beside the bootstrap's
    /// static clusters. A cluster still warming keeps its previous version, if it had one.
    private func installClusters(client: ADSClient) {
        // One install at a time: a DNS cluster's lookups install from their own task, beside the ADS stream's.
        clusterInstalls.withLock { _ in installClustersSerially(client: client) }
    }

    private func installClustersSerially(client: ADSClient) {
        let (clusters, warming, firstTime) = state.withLock { state -> ([BootstrapConfig.Cluster], [String], Bool) in
            var ready: [BootstrapConfig.Cluster] = []
            var warming: [String] = []
            for discovered in state.clusters {
                var cluster = discovered.cluster
                if discovered.dns != nil {
                    // Warm once its first round of lookups is over, as in Envoy.
                    guard let hosts = state.dnsEndpoints[cluster.name] else {
                        warming.append(cluster.name)
                        if let previous = runtime.configuration.clusters[cluster.name] { ready.append(previous.config) }
                        continue
                    }
                    cluster.discovery = .endpoints(hosts)
                } else if let service = discovered.endpointService {
                    guard let assignment = state.assignments[service] else {
                        warming.append(cluster.name)
                        if let previous = runtime.configuration.clusters[cluster.name] { ready.append(previous.config) }
                        continue
                    }
                    cluster.discovery = .endpoints(assignment.endpoints)
                    cluster.localities = assignment.localities
                    cluster.overprovisioningFactor = assignment.overprovisioningFactor
                    cluster.fieldsNotActedOn += assignment.fieldsNotActedOn
                }
                ready.append(cluster)
            }
            let first = warming.isEmpty && !state.clustersInitialized
            if first { state.clustersInitialized = true }
            return (ready, warming, first)
        }
        runtime.replaceClusters(staticClusters + clusters)
        runtime.versions.withLockedValue { $0.warmingClusters = warming }
        proxy.requestSecrets()
        if firstTime {
            // Envoy asks for listeners once the first clusters are warm, so that listeners never
            // route to clusters that are not there yet.
            client.subscribe(.listener, to: [])
        }
    }

    /// Clusters that waited `warmingTimeout` without endpoints serve without them (connections to
    /// them fail until endpoints arrive), so that one missing assignment does not hold back the rest.
    private func stopWarming(_ names: Set<String>, client: ADSClient) {
        let expired = state.withLock { state -> [String] in
            let services = state.clusters.filter { names.contains($0.cluster.name) }.compactMap(\.endpointService)
            let missing = services.filter { state.assignments[$0] == nil }
            for service in missing { state.assignments[service] = .init(endpoints: []) }
            return missing
        }
        guard !expired.isEmpty else { return }
        logger.warning("clusters served without endpoints after the warming timeout", metadata: ["services": "\(expired)"])
        installClusters(client: client)
    }

    // MARK: DNS clusters

    /// Starts lookups for the DNS clusters that are new or whose names or lookup settings changed, and
    /// stops those of clusters gone or changed. A cluster whose lookups restart keeps its hosts until
    /// the new round gives others.
    private func reconcileResolvers(_ clusters: [XDSResourceDecoder.DiscoveredCluster]) {
        let wanted = Dictionary(clusters.compactMap { cluster in cluster.dns.map { (cluster.cluster.name, $0) } }) { first, _ in first }
        let (started, stopped) = state.withLock { state -> ([DNSClusterResolver], [DNSClusterResolver]) in
            var started: [DNSClusterResolver] = []
            var stopped: [DNSClusterResolver] = []
            for (name, resolver) in state.resolvers where wanted[name] != resolver.config {
                stopped.append(resolver)
                state.resolvers[name] = nil
                if wanted[name] == nil { state.dnsEndpoints[name] = nil }
            }
            for (name, config) in wanted where state.resolvers[name] == nil {
                let resolution: any HostnameResolution = config.usesSystemResolver ? SystemHostnameResolver() : hostnameResolution
                let resolver = DNSClusterResolver(config: config, resolver: resolution, stats: runtime.stats.cluster(name)) {
                    [weak self] hosts in self?.dnsResolved(name, hosts: hosts)
                }
                state.resolvers[name] = resolver
                started.append(resolver)
            }
            return (started, stopped)
        }
        for resolver in stopped { resolver.stop() }
        for resolver in started { resolver.start() }
    }

    /// A DNS cluster's lookups found `hosts`: they are put in force (ignored if the cluster is gone).
    private func dnsResolved(_ name: String, hosts: [BootstrapConfig.Cluster.Endpoint]) {
        let current = state.withLock { state -> Bool in
            guard state.resolvers[name] != nil else { return false }
            state.dnsEndpoints[name] = hosts
            return true
        }
        guard current, let client = lastClient.withLock({ $0 }) else { return }
        installClusters(client: client)
    }

    /// Stops every DNS cluster's lookups (the proxy's control plane stream has ended).
    func stopResolvers() {
        let resolvers = state.withLock { state in
            defer { state.resolvers = [:] }
            return Array(state.resolvers.values)
        }
        for resolver in resolvers { resolver.stop() }
    }

    // MARK: EDS

    private func applyEndpoints(_ response: DiscoveryResponse, client: ADSClient) throws(ConfigError) {
        let assignments: [String: XDSResourceDecoder.EndpointAssignment]
        do throws(ConfigError) {
            assignments = try XDSResourceDecoder.assignments(response.resources)
        } catch {
            for cluster in clusterNames(using: nil) { runtime.stats.cluster(cluster).membershipRejections.increment() }
            throw error
        }
        state.withLock { state in
            for (service, assignment) in assignments { state.assignments[service] = assignment }
        }
        logFieldsNotActedOn(assignments.sorted { $0.key < $1.key }.flatMap { service, assignment in
            assignment.fieldsNotActedOn.map { $0.described(under: "cluster_load_assignment \"\(service)\"") }
        }, in: response)
        runtime.versions.withLockedValue { versions in
            let entry = ResourceVersions.Entry(version: response.versionInfo, lastUpdated: Self.timestamp())
            for (service, assignment) in assignments {
                versions.assignments[service] = .init(entry: entry, endpoints: assignment.endpoints, localities: assignment.localities)
            }
        }
        for cluster in clusterNames(using: Set(assignments.keys)) { runtime.stats.cluster(cluster).membershipUpdates.increment() }
        installClusters(client: client)
    }

    /// The accepted EDS clusters fed by `services` (all of them for nil).
    private func clusterNames(using services: Set<String>?) -> [String] {
        state.withLock { state in
            state.clusters.filter { cluster in
                guard let service = cluster.endpointService else { return false }
                return services?.contains(service) ?? true
            }.map(\.cluster.name)
        }
    }

    // MARK: LDS

    /// Envoy's way with a state-of-the-world LDS response: every listener that can be taken is put in
    /// force; one that is refused keeps its previous version serving (or stays out, if it is new), and the
    /// response is NACKed naming each refused listener and why.
    private func applyListeners(_ response: DiscoveryResponse, client: ADSClient) async throws(ConfigError) {
        let stats = runtime.stats.listenerUpdates
        stats.attempts.increment()
        let decoded: (accepted: [BootstrapConfig.Listener], refused: [(name: String, error: ConfigError)])
        do throws(ConfigError) {
            decoded = try XDSResourceDecoder.listenersOneByOne(response.resources)
        } catch {
            stats.rejections.increment()
            throw error
        }
        var refused = decoded.refused
        var listeners: [BootstrapConfig.Listener] = []
        for listener in decoded.accepted {
            let path = "listener \"\(listener.name)\""
            do throws(ConfigError) {
                let sameName = staticListeners.contains { $0.name == listener.name }
                let sameAddress = (try? XDSResourceDecoder.checkAddress(of: listener, against: staticListeners, path: path)) == nil
                if sameName || sameAddress {
                    throw ConfigError(path: path, message: "clashes with a static listener of the bootstrap")
                }
                for chain in listener.allChains {
                    try bootstrap.checkSecretSources(chain.transportSocket, path: "\(path) filter chain \"\(chain.name)\".transport_socket")
                }
                listeners.append(listener)
            } catch {
                refused.append((listener.name, error))
            }
        }
        // A refused listener that was accepted before keeps that version.
        let previous = state.withLock { $0.listeners }
        for (name, _) in refused {
            if let kept = previous.first(where: { $0.name == name }), !listeners.contains(where: { $0.name == name }) { listeners.append(kept) }
        }
        let version = response.versionInfo
        let taken = listeners
        if case .failure(let error) = await serially({ await self.install(accepted: taken, version: version, client: client) }) {
            stats.rejections.increment()
            throw ConfigError(path: "listeners", message: "\(error)")
        }
        logFieldsNotActedOn(taken.flatMap { listener in
            listener.fieldsNotActedOn.map { $0.described(under: "listener \"\(listener.name)\"") }
        }, in: response)
        guard refused.isEmpty else {
            stats.rejections.increment()
            throw ConfigError(path: "listeners", message: "\(refused.count) of \(response.resources.count) refused (the others are in force): "
                              + refused.map(\.error.description).joined(separator: "; "))
        }
        stats.successes.increment()
    }

    /// Runs `job` after every install asked for before it has finished.
    private func serially<T: Sendable>(_ job: @escaping @Sendable () async -> T) async -> T {
        let task = lastInstall.withLock { last -> Task<T, Never> in
            let previous = last
            let task = Task { await previous?.value; return await job() }
            last = Task { _ = await task.value }
            return task
        }
        return await task.value
    }

    /// Puts in force each accepted listener whose route configurations are here (or timed out), beside
    /// the static ones, after the route tables they use. A listener still waiting keeps its previous
    /// version serving, if it had one; a new one is not bound until its routes come or the warming
    /// timeout passes. `accepted`: an LDS response's listeners (in `version`), which become the accepted
    /// ones only if their sockets can be bound; nil: the accepted ones again (routes came, or a timer
    /// ended). Then subscribes to the route configurations the listeners name.
    private func install(accepted candidate: [BootstrapConfig.Listener]?, version: String?, client: ADSClient) async -> Result<Void, any Error> {
        let inForce = runtime.configuration.listeners
        let plan = state.withLock { state -> Plan in
            let accepted = candidate ?? state.listeners
            var plan = Plan(ready: [], warming: [], tables: [:])
            for listener in accepted {
                let missing = listener.routeConfigNames.filter { state.routes[$0] == nil && !state.routesTimedOut.contains($0) }.sorted()
                if missing.isEmpty {
                    plan.ready.append(listener)
                } else {
                    plan.warming.append((listener, missing))
                    if let previous = inForce[listener.name] { plan.ready.append(previous) }
                }
            }
            let needed = Set((staticListeners + accepted + Array(inForce.values)).flatMap(\.routeConfigNames))
            plan.tables = state.routes.filter { needed.contains($0.key) }
            return plan
        }
        // Tables first, so that a listener's first request finds its routes.
        runtime.replaceRoutes(plan.tables)
        do {
            try await proxy.applyListeners(staticListeners + plan.ready).get()
        } catch {
            return .failure(error)
        }
        let now = Self.timestamp()
        let (entries, accepted, first) = state.withLock { state -> ([String: ResourceVersions.Entry], [BootstrapConfig.Listener], Bool) in
            if let candidate, let version {
                var entries: [String: ResourceVersions.Entry] = [:]
                for listener in candidate {
                    // A listener keeps the version it last changed in, as Envoy reports it.
                    if state.listeners.contains(listener), let kept = state.listenerEntries[listener.name] {
                        entries[listener.name] = kept
                    } else {
                        entries[listener.name] = .init(version: version, lastUpdated: now)
                    }
                }
                state.listeners = candidate
                state.listenerEntries = entries
                state.listenersAccepted = true
            }
            let first = state.listenersAccepted && !state.listenersInitialized && plan.warming.isEmpty
            if first { state.listenersInitialized = true }
            return (state.listenerEntries, state.listeners, first)
        }
        runtime.versions.withLockedValue { versions in
            var inForceEntries: [String: ResourceVersions.Entry] = [:]
            for listener in plan.ready {
                // The accepted version, or the previous one still serving while the accepted one warms.
                inForceEntries[listener.name] = accepted.contains(listener) ? entries[listener.name] : versions.listeners[listener.name]
            }
            versions.listeners = inForceEntries
            versions.warmingListeners = Dictionary(uniqueKeysWithValues: plan.warming.compactMap { listener, waitingFor in
                entries[listener.name].map { (listener.name, ResourceVersions.WarmingListener(entry: $0, listener: listener, waitingFor: waitingFor)) }
            })
        }
        runtime.stats.listenersWarming.set(Int64(plan.warming.count))
        proxy.requestSecrets()
        subscribeToRoutes(client: client)
        startWarmingTimers(for: Set(plan.warming.flatMap(\.waitingFor)), client: client)
        if first {
            proxy.becomeLive()
            logger.info("first listeners from the control plane in force, with their routes: LIVE",
                        metadata: ["version": "\(entries.values.map(\.version).max() ?? "")"])
        }
        return .success(())
    }

    /// Subscribes to the route configurations the static listeners, the accepted ones and those in force
    /// name (RDS asks by name); forgets the tables of those no longer named, in force too.
    private func subscribeToRoutes(client: ADSClient) {
        let inForce = runtime.configuration.listeners
        let changed = state.withLock { state -> (names: [String], tables: [String: RouteTable])? in
            var names: [String: String] = [:]
            for listener in staticListeners + state.listeners + inForce.values.sorted(by: { $0.name < $1.name }) {
                for chain in listener.allChains {
                    if let manager = chain.httpConnectionManager, let name = manager.discoveredRouteName, names[name] == nil {
                        names[name] = manager.statPrefix
                    }
                }
            }
            guard names != state.routeNames else { return nil }
            state.routeNames = names
            state.routes = state.routes.filter { names[$0.key] != nil }
            state.routesTimedOut = state.routesTimedOut.filter { names[$0] != nil }
            state.routeTimers = state.routeTimers.filter { names[$0] != nil }
            return (names.keys.sorted(), state.routes)
        }
        guard let changed else { return }
        runtime.replaceRoutes(changed.tables)
        runtime.versions.withLockedValue { versions in versions.routes = versions.routes.filter { changed.names.contains($0.key) } }
        client.subscribe(.route, to: changed.names)
    }

    /// Starts the warming timeout of route configurations that have none running: when it passes, the
    /// listeners waiting for those still missing go in force without them.
    private func startWarmingTimers(for names: Set<String>, client: ADSClient) {
        let fresh = state.withLock { state -> Set<String> in
            let fresh = names.subtracting(state.routeTimers)
            state.routeTimers.formUnion(fresh)
            return fresh
        }
        guard !fresh.isEmpty else { return }
        let timeout = warmingTimeout
        Task { [self] in
            try? await Task.sleep(for: timeout)
            let expired = state.withLock { state -> [String] in
                let missing = fresh.filter { state.routeNames[$0] != nil && state.routes[$0] == nil }
                state.routesTimedOut.formUnion(missing)
                return missing.sorted()
            }
            guard !expired.isEmpty else { return }
            logger.warning("listeners put in force without their route configurations after the warming timeout",
                           metadata: ["routes": "\(expired)"])
            if case .failure(let error) = await serially({ await self.install(accepted: nil, version: nil, client: client) }) {
                logger.error("listeners that waited for their routes cannot be put in force", metadata: ["error": "\(error)"])
            }
        }
    }

    // MARK: RDS

    /// A route configuration response: every table compiled, or none taken (the first refusal is the
    /// NACK); then the listeners that waited for them go in force.
    private func applyRoutes(_ response: DiscoveryResponse, client: ADSClient) async throws(ConfigError) {
        let subscribed = state.withLock { $0.routeNames }
        let stats = subscribed.sorted { $0.key < $1.key }.map { runtime.stats.routeConfiguration($0.key, statPrefix: $0.value) }
        for stat in stats { stat.attempts.increment() }
        let decoded: [String: XDSResourceDecoder.DiscoveredRoutes]
        do throws(ConfigError) {
            decoded = try XDSResourceDecoder.routeConfigurations(response.resources)
        } catch {
            for stat in stats { stat.rejections.increment() }
            throw error
        }
        for stat in stats { stat.successes.increment() }
        // Only those asked for: state of the world by name.
        let taken = decoded.filter { subscribed[$0.key] != nil }
        state.withLock { state in
            for (name, routes) in taken { state.routes[name] = routes.table }
            state.routesTimedOut.subtract(taken.keys)
        }
        let now = Self.timestamp()
        runtime.versions.withLockedValue { versions in
            for (name, routes) in taken where versions.routes[name]?.proto != routes.proto {
                versions.routes[name] = .init(entry: .init(version: response.versionInfo, lastUpdated: now), proto: routes.proto)
            }
        }
        logFieldsNotActedOn(taken.sorted { $0.key < $1.key }.flatMap { $0.value.table.fieldsNotActedOn.map { $0.described() } }, in: response)
        if case .failure(let error) = await serially({ await self.install(accepted: nil, version: nil, client: client) }) {
            // The routes are fine; a listener that waited for them could not bind its socket.
            logger.error("listeners that waited for their routes cannot be put in force", metadata: ["error": "\(error)"])
        }
    }

    /// Fields of an accepted response that Capstan does not act on (also counted in
    /// `config.fields_not_acted_on` while they are in force).
    private func logFieldsNotActedOn(_ fields: [String], in response: DiscoveryResponse) {
        guard !fields.isEmpty else { return }
        logger.info("accepted fields Capstan does not act on", metadata: ["version": "\(response.versionInfo)", "fields": "\(fields)"])
    }

    /// RFC 3339 UTC, as Envoy's `last_updated`.
    private static func timestamp() -> String {
        Date.now.formatted(.iso8601)
    }
}
