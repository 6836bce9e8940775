import Atomics
import HTTPProxy
import NIOConcurrencyHelpers

/// A monotonically increasing statistic, shared by all event loops.
final class Counter: Sendable {
    private let storage = ManagedAtomic<UInt64>(0)

    func increment(by amount: UInt64 = 1) {
        storage.wrappingIncrement(by: amount, ordering: .relaxed)
    }

    var value: UInt64 { storage.load(ordering: .relaxed) }
}

/// A statistic that goes up and down (open connections).
final class Gauge: Sendable {
    private let storage = ManagedAtomic<Int64>(0)

    func increment() { storage.wrappingIncrement(ordering: .relaxed) }
    func decrement() { storage.wrappingDecrement(ordering: .relaxed) }
    func set(_ value: Int64) { storage.store(value, ordering: .relaxed) }
    var value: Int64 { storage.load(ordering: .relaxed) }
}

/// Envoy's per-listener statistics.
final class ListenerStats: Sendable {
    let name: String
    let connectionsTotal = Counter()
    let connectionsActive = Gauge()
    /// Connections closed because their original destination was one of the proxy's own listeners.
    let loopsRefused = Counter()
    /// Connections no filter chain matched (Envoy's `no_filter_chain_match`).
    let noFilterChainMatch = Counter()
    /// Connections refused because the listener was draining.
    /// Connections whose filter chain names a cluster the proxy does not have.
    let noCluster = Counter()
    /// TLS terminated on this listener's chains.
    let tls = TLSStats()

    init(name: String) { self.name = name }

    var entries: [(String, Double)] {
        [("downstream_cx_total", Double(connectionsTotal.value)),
         ("downstream_cx_active", Double(connectionsActive.value)),
         ("downstream_cx_loop_refused", Double(loopsRefused.value)),
         ("no_filter_chain_match", Double(noFilterChainMatch.value)),
         ("downstream_cx_no_cluster", Double(noCluster.value))] + tls.entries
    }
}

/// Envoy's per-cluster upstream statistics.
final class ClusterStats: Sendable {
    let name: String
    let connectionsTotal = Counter()
    let connectionsActive = Gauge()
    let connectFailures = Counter()
    let connectTimeouts = Counter()
    /// The circuit breakers' counts and overflows, kept by name across versions of the cluster.
    let circuitBreakers = CircuitBreakers()
    /// Active health checking, for a cluster that has it.
    let healthChecks = HealthCheckStats()
    /// Connections refused because the cluster had no endpoint.
    let noHealthyUpstream = Counter()
    /// EDS responses for this cluster applied and refused.
    let membershipUpdates = Counter()
    let membershipRejections = Counter()
    /// A DNS cluster's lookups that failed (its hosts were kept).
    let membershipFailures = Counter()
    /// Bytes from the upstream (toward the downstream client).
    let bytesReceived = Counter()
    /// Bytes to the upstream.
    let bytesSent = Counter()
    /// TLS to this cluster's endpoints.
    let tls = TLSStats()
    /// Its outlier detector's ejections.
    let outlierDetection = OutlierDetectionStats()
    /// HTTP requests sent to this cluster, and their responses by class (1xx … 5xx).
    let requestsTotal = Counter()
    let responsesByClass = (1...5).map { _ in Counter() }

    init(name: String) { self.name = name }

    /// Requests to this cluster that timed out (UT).
    let requestTimeouts = Counter()

    /// Retries (Envoy's `upstream_rq_retry`), retried requests that then succeeded, and those whose
    /// retries ran out (`URX`).
    let retries = Counter()
    let retrySuccesses = Counter()
    let retryLimitsExceeded = Counter()

    /// An HTTP request to this cluster ended with `status` (0: without a response) after `retries`
    /// attempts beyond the first.
    func countRequest(status: Int, flags: ResponseFlags, retries: Int = 0) {
        requestsTotal.increment()
        if (100..<600).contains(status) { responsesByClass[status / 100 - 1].increment() }
        if flags.contains(.upstreamRequestTimeout) { requestTimeouts.increment() }
        if retries > 0 {
            self.retries.increment(by: UInt64(retries))
            if (100..<500).contains(status) { retrySuccesses.increment() }
        }
        if flags.contains(.upstreamRetryLimitExceeded) { retryLimitsExceeded.increment() }
    }

    var entries: [(String, Double)] {
        [("upstream_cx_total", Double(connectionsTotal.value)),
         ("upstream_cx_active", Double(connectionsActive.value)),
         ("upstream_cx_connect_fail", Double(connectFailures.value)),
         ("upstream_cx_connect_timeout", Double(connectTimeouts.value)),
         ("upstream_cx_none_healthy", Double(noHealthyUpstream.value)),
         ("update_success", Double(membershipUpdates.value)),
         ("update_rejected", Double(membershipRejections.value)),
         ("update_failure", Double(membershipFailures.value)),
         ("upstream_cx_rx_bytes_total", Double(bytesReceived.value)),
         ("upstream_cx_tx_bytes_total", Double(bytesSent.value)),
         ("upstream_rq_total", Double(requestsTotal.value)), ("upstream_rq_timeout", Double(requestTimeouts.value)),
         ("upstream_rq_retry", Double(retries.value)), ("upstream_rq_retry_success", Double(retrySuccesses.value)),
         ("upstream_rq_retry_limit_exceeded", Double(retryLimitsExceeded.value))]
            + responsesByClass.enumerated().map { ("upstream_rq_\($0.offset + 1)xx", Double($0.element.value)) } + tls.entries
            + circuitBreakers.entries + outlierDetection.entries + healthChecks.entries
    }
}

/// Envoy's counters for one xDS subscription: `listener_manager.lds.*`, `cluster_manager.cds.*`.
final class SubscriptionStats: Sendable {
    let prefix: String
    let attempts = Counter()
    let successes = Counter()
    let rejections = Counter()

    init(prefix: String) { self.prefix = prefix }

    var entries: [(String, Double)] {
        [("\(prefix).update_attempt", Double(attempts.value)),
         ("\(prefix).update_success", Double(successes.value)),
         ("\(prefix).update_rejected", Double(rejections.value))]
    }
}

/// Envoy's counters for one route configuration's RDS subscription, kept under the first HTTP connection
/// manager naming it: `http.<stat_prefix>.rds.<name>.update_attempt|success|rejected`.
final class RouteConfigurationStats: Sendable {
    let name: String
    let statPrefix: String
    let attempts = Counter()
    let successes = Counter()
    let rejections = Counter()

    init(name: String, statPrefix: String) {
        self.name = name
        self.statPrefix = statPrefix
    }

    var entries: [(String, Double)] {
        [("update_attempt", Double(attempts.value)), ("update_success", Double(successes.value)),
         ("update_rejected", Double(rejections.value))]
    }
}

/// Envoy's counters of one HTTP connection manager, by its stat prefix: `http.<stat_prefix>.downstream_rq_*`.
final class ConnectionManagerStats: Sendable {
    let statPrefix: String
    let requestsTotal = Counter()
    let requestsActive = Gauge()
    let responsesByClass = (1...5).map { _ in Counter() }
    /// Requests answered 408 or reset by stream_idle_timeout, and by no route.
    let idleTimeouts = Counter()
    /// HTTP/1 requests whose head took longer than request_headers_timeout (answered 408).
    let headerTimeouts = Counter()
    let noRoute = Counter()
    /// The fault filter's `fault.aborts_injected`, `fault.delays_injected` and `fault.active_faults`,
    /// listed once a connection manager with this prefix has the filter, as Envoy lists them.
    let faultAborts = Counter()
    let faultDelays = Counter()
    let activeFaults = Gauge()
    private let hasFaultFilter = ManagedAtomic(false)

    init(statPrefix: String) { self.statPrefix = statPrefix }

    /// The RBAC filters' counters.
    private let rbac = RBACStats()
    /// The ext_authz filters' counters.
    private let extAuthz = ExtAuthzStats()

    /// A connection on a connection manager with these filters starts: the fault filter's statistics are
    /// listed from now on, and each RBAC filter counts into this prefix's counters of its names (bound
    /// once per filter configuration, so requests take no lock).
    func adopt(_ filters: [HTTPFilterConfig]) {
        for filter in filters {
            switch filter.behaviour {
            case .fault:
                if !hasFaultFilter.load(ordering: .relaxed) { hasFaultFilter.store(true, ordering: .relaxed) }
            case .rbac(let config):
                rbac.bind(config.engine)
            case .extAuthz(let config):
                extAuthz.bind(config)
            default:
                continue
            }
        }
    }

    var entries: [(String, Double)] {
        var entries = [("downstream_rq_total", Double(requestsTotal.value)), ("downstream_rq_active", Double(requestsActive.value)),
                       ("downstream_rq_idle_timeout", Double(idleTimeouts.value)),
                       ("downstream_rq_header_timeout", Double(headerTimeouts.value)), ("no_route", Double(noRoute.value))]
            + responsesByClass.enumerated().map { ("downstream_rq_\($0.offset + 1)xx", Double($0.element.value)) }
        if hasFaultFilter.load(ordering: .relaxed) {
            entries += [("fault.aborts_injected", Double(faultAborts.value)), ("fault.delays_injected", Double(faultDelays.value)),
                        ("fault.active_faults", Double(activeFaults.value))]
        }
        return entries + rbac.entries + extAuthz.entries
    }
}

/// All of the proxy's statistics, rendered as Envoy's `/stats` text and as Prometheus exposition text.
/// Listener and cluster statistics are made on first use and kept by name, so they survive updates.
final class ProxyStats: Sendable {
    private let listenersByName = NIOLockedValueBox<[String: ListenerStats]>([:])
    private let clustersByName = NIOLockedValueBox<[String: ClusterStats]>([:])
    let listenerUpdates = SubscriptionStats(prefix: "listener_manager.lds")
    let clusterUpdates = SubscriptionStats(prefix: "cluster_manager.cds")
    /// Envoy's `listener_manager.total_listeners_warming`: listeners waiting for their route configurations.
    let listenersWarming = Gauge()
    /// HTTP connection managers' counters, by stat prefix.
    private let connectionManagers = NIOLockedValueBox<[String: ConnectionManagerStats]>([:])
    /// RDS subscriptions' counters, by route configuration name (kept once made, as Envoy keeps them).
    private let routeConfigurations = NIOLockedValueBox<[String: RouteConfigurationStats]>([:])
    /// The network RBAC filters' counters (`tcp.rbac.allowed`, … by their `stat_prefix`).
    let networkRBAC = RBACStats()
    /// Envoy's `control_plane.connected_state`: 1 while the ADS stream is up.
    let controlPlaneConnected = Gauge()
    /// Capstan's `config.fields_not_acted_on`: how many fields of the configuration in force Capstan accepts
    /// but does not act on (README, "Accepted, not acted on").
    let fieldsNotActedOn = Gauge()
    /// Istio's `istio_tcp_connections_opened_total` and `…_closed_total`.
    let istio = IstioTCPMetrics()
    /// Istio's `istio_requests_total` and its histograms.
    let istioHTTP = IstioHTTPMetrics()

    init() {}

    func listener(_ name: String) -> ListenerStats {
        listenersByName.withLockedValue { stats in
            if let existing = stats[name] { return existing }
            let made = ListenerStats(name: name)
            stats[name] = made
            return made
        }
    }

    func cluster(_ name: String) -> ClusterStats {
        clustersByName.withLockedValue { stats in
            if let existing = stats[name] { return existing }
            let made = ClusterStats(name: name)
            stats[name] = made
            return made
        }
    }

    /// The counters of the HTTP connection managers with `statPrefix` (found once per connection).
    func connectionManager(_ statPrefix: String) -> ConnectionManagerStats {
        connectionManagers.withLockedValue { stats in
            if let existing = stats[statPrefix] { return existing }
            let made = ConnectionManagerStats(statPrefix: statPrefix)
            stats[statPrefix] = made
            return made
        }
    }

    var connectionManagerStats: [ConnectionManagerStats] {
        connectionManagers.withLockedValue { $0.values.sorted { $0.statPrefix < $1.statPrefix } }
    }

    /// The RDS counters of route configuration `name`, made with `statPrefix` on first use.
    func routeConfiguration(_ name: String, statPrefix: String) -> RouteConfigurationStats {
        routeConfigurations.withLockedValue { stats in
            if let existing = stats[name] { return existing }
            let made = RouteConfigurationStats(name: name, statPrefix: statPrefix)
            stats[name] = made
            return made
        }
    }

    var routeConfigurationStats: [RouteConfigurationStats] {
        routeConfigurations.withLockedValue { $0.values.sorted { $0.name < $1.name } }
    }

    var listeners: [ListenerStats] { listenersByName.withLockedValue { $0.values.sorted { $0.name < $1.name } } }
    var clusters: [ClusterStats] { clustersByName.withLockedValue { $0.values.sorted { $0.name < $1.name } } }

    /// Server-wide entries, without a listener or cluster: xDS updates and the control plane's state.
    private var serverEntries: [(String, Double)] {
        listenerUpdates.entries + clusterUpdates.entries
            + [("listener_manager.total_listeners_warming", Double(listenersWarming.value)),
               ("control_plane.connected_state", Double(controlPlaneConnected.value)),
               ("config.fields_not_acted_on", Double(fieldsNotActedOn.value))]
            + networkRBAC.entries
    }

    /// Server-wide entries that go up and down.
    private static let serverGauges: Set<String> = ["control_plane.connected_state", "config.fields_not_acted_on",
                                                    "listener_manager.total_listeners_warming"]

    /// `listener.0.0.0.0_15001.downstream_cx_total: 3`, one per line, as Envoy's admin `/stats`.
    var envoyText: String {
        var lines = serverEntries.map { "\($0.0): \(Int64($0.1))" }
        for cluster in clusters {
            for (key, value) in cluster.entries { lines.append("cluster.\(cluster.name).\(key): \(Int64(value))") }
        }
        for listener in listeners {
            for (key, value) in listener.entries { lines.append("listener.\(listener.name).\(key): \(Int64(value))") }
        }
        for route in routeConfigurationStats {
            for (key, value) in route.entries { lines.append("http.\(route.statPrefix).rds.\(route.name).\(key): \(Int64(value))") }
        }
        for manager in connectionManagerStats {
            for (key, value) in manager.entries { lines.append("http.\(manager.statPrefix).\(key): \(Int64(value))") }
        }
        return lines.sorted().joined(separator: "\n") + "\n"
    }

    /// Envoy's Prometheus names: `envoy_cluster_upstream_cx_total{envoy_cluster_name="…"}`.
    var prometheusText: String {
        var families: [(name: String, type: String, samples: [String])] = []
        func add(_ prefix: String, _ label: String, _ owner: String, _ entries: [(String, Double)]) {
            for (key, value) in entries {
                let name = "envoy_\(prefix)_" + key.replacing(".", with: "_")
                let type = key.hasSuffix("_active") || key == "fault.active_faults" ? "gauge" : "counter"
                let sample = "\(name){\(label)=\"\(owner)\"} \(Int64(value))"
                if let index = families.firstIndex(where: { $0.name == name }) {
                    families[index].samples.append(sample)
                } else {
                    families.append((name, type, [sample]))
                }
            }
        }
        for (key, value) in serverEntries {
            let name = "envoy_" + key.replacing(".", with: "_")
            families.append((name, Self.serverGauges.contains(key) ? "gauge" : "counter", ["\(name) \(Int64(value))"]))
        }
        for cluster in clusters { add("cluster", "envoy_cluster_name", cluster.name, cluster.entries) }
        for listener in listeners { add("listener", "envoy_listener_address", listener.name, listener.entries) }
        for manager in connectionManagerStats { add("http", "envoy_http_conn_manager_prefix", manager.statPrefix, manager.entries) }
        // Envoy's tag extraction: the connection manager's prefix and the route configuration are labels.
        for route in routeConfigurationStats {
            for (key, value) in route.entries {
                let name = "envoy_http_rds_\(key)"
                let sample = "\(name){envoy_http_conn_manager_prefix=\"\(route.statPrefix)\",envoy_rds_route_config=\"\(route.name)\"} \(Int64(value))"
                if let index = families.firstIndex(where: { $0.name == name }) {
                    families[index].samples.append(sample)
                } else {
                    families.append((name, "counter", [sample]))
                }
            }
        }
        return families.map { "# TYPE \($0.name) \($0.type)\n" + $0.samples.joined(separator: "\n") }
            .joined(separator: "\n") + "\n" + istio.prometheusText + istioHTTP.prometheusText
    }
}
