import FoundationEssentials
import Configuration
import Logging
import NIOCore
import SwiftProtobuf
import Synchronization
import XDS

/// The proxy's side of ADS, in Envoy's order: clusters first, each EDS cluster warming until its
/// endpoints arrive (the previous version of a cluster keeps serving meanwhile), then listeners, once
/// the first clusters are in force. A refused response changes nothing; a lost control plane leaves
/// the last good configuration serving. The proxy turns LIVE with its first listeners.
final class DynamicResources: ADSResponseHandler {
    private struct State {
        /// The accepted CDS resources, in force or warming.
        var clusters: [XDSResourceDecoder.DiscoveredCluster] = []
        /// The latest endpoints per EDS service.
        var assignments: [String: XDSResourceDecoder.EndpointAssignment] = [:]
        var clustersInitialized = false
        var listenersInitialized = false
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

    init(proxy: Proxy, bootstrap: BootstrapConfig, warmingTimeout: Duration = .seconds(15), logger: Logger) {
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
            case .listener: try await applyListeners(response)
            case .secret: return .reject("secrets are served over SDS, not on the ADS stream")
            }
            runtime.versions.withLockedValue { $0.accepted[type.service] = response.versionInfo }
            return .accept
        } catch {
            return .reject(error.description)
        }
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
        let (clusters, warming, firstTime) = state.withLock { state -> ([BootstrapConfig.Cluster], [String], Bool) in
            var ready: [BootstrapConfig.Cluster] = []
            var warming: [String] = []
            for discovered in state.clusters {
                var cluster = discovered.cluster
                if let service = discovered.endpointService {
                    guard let assignment = state.assignments[service] else {
                        warming.append(cluster.name)
                        if let previous = runtime.configuration.clusters[cluster.name] { ready.append(previous.config) }
                        continue
                    }
                    cluster.discovery = .endpoints(assignment.endpoints)
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
                versions.assignments[service] = .init(entry: entry, endpoints: assignment.endpoints)
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

    private func applyListeners(_ response: DiscoveryResponse) async throws(ConfigError) {
        let stats = runtime.stats.listenerUpdates
        stats.attempts.increment()
        let listeners: [BootstrapConfig.Listener]
        do throws(ConfigError) {
            listeners = try XDSResourceDecoder.listeners(response.resources)
            if let clash = listeners.first(where: { listener in staticListeners.contains { $0.name == listener.name || $0.port == listener.port } }) {
                throw ConfigError(path: "listener \"\(clash.name)\"", message: "clashes with a static listener of the bootstrap")
            }
            for listener in listeners {
                for chain in listener.allChains {
                    try bootstrap.checkSecretSources(chain.transportSocket,
                                                     path: "listener \"\(listener.name)\" filter chain \"\(chain.name)\".transport_socket")
                }
            }
        } catch {
            stats.rejections.increment()
            throw error
        }
        let previous = runtime.configuration.listeners
        do {
            try await proxy.applyListeners(staticListeners + listeners).get()
        } catch {
            stats.rejections.increment()
            throw ConfigError(path: "listeners", message: "\(error)")
        }
        stats.successes.increment()
        logFieldsNotActedOn(listeners.flatMap { listener in
            listener.fieldsNotActedOn.map { $0.described(under: "listener \"\(listener.name)\"") }
        }, in: response)
        proxy.requestSecrets()
        let version = response.versionInfo
        runtime.versions.withLockedValue { versions in
            let now = Self.timestamp()
            var entries: [String: ResourceVersions.Entry] = [:]
            for listener in listeners {
                entries[listener.name] = previous[listener.name] == listener ? versions.listeners[listener.name] : .init(version: version, lastUpdated: now)
            }
            versions.listeners = entries
        }
        let first = state.withLock { state in
            defer { state.listenersInitialized = true }
            return !state.listenersInitialized
        }
        if first {
            proxy.becomeLive()
            logger.info("first listeners from the control plane in force: LIVE", metadata: ["version": "\(version)"])
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
