import Atomics
import HTTPProxy
import NIOConcurrencyHelpers

/// Istio's standard HTTP metrics, as the `istio.stats` filter reports them: `istio_requests_total`, and
/// the histograms `istio_request_duration_milliseconds`, `istio_request_bytes` and `istio_response_bytes`
/// with Istio's buckets. Each finished request (an ``HTTPStreamRecord``) counts once, reported by the
/// source's proxy (outbound) or the destination's (inbound). Without peer metadata exchange the peer's
/// workload is `unknown`; the principals come from mutual TLS.
final class IstioHTTPMetrics: Sendable {
    struct Labels: Hashable, Sendable {
        var reporter: IstioTCPMetrics.Reporter
        var sourcePrincipal: String
        var destinationPrincipal: String
        var destinationService: String
        var requestProtocol: String
        var responseCode: Int
        var grpcStatus: String
        var responseFlags: String
        var mutualTLS: Bool
    }

    /// Istio's default buckets.
    static let durationBuckets: [Double] = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000]
    static let sizeBuckets: [Double] = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000]

    /// A cumulative histogram: one counter per bucket, a count and a sum.
    final class Histogram: Sendable {
        let bounds: [Double]
        private let buckets: [ManagedAtomic<UInt64>]
        private let total = ManagedAtomic<UInt64>(0)
        /// The sum, in thousandths, so it stays an integer.
        private let sumMillis = ManagedAtomic<UInt64>(0)

        init(bounds: [Double]) {
            self.bounds = bounds
            buckets = bounds.map { _ in ManagedAtomic(0) }
        }

        func observe(_ value: Double) {
            if let index = bounds.firstIndex(where: { value <= $0 }) { buckets[index].wrappingIncrement(ordering: .relaxed) }
            total.wrappingIncrement(ordering: .relaxed)
            sumMillis.wrappingIncrement(by: UInt64(max(0, value) * 1000), ordering: .relaxed)
        }

        func samples(_ name: String, labels: String) -> [String] {
            var cumulative: UInt64 = 0
            var lines: [String] = []
            for (bound, bucket) in zip(bounds, buckets) {
                cumulative += bucket.load(ordering: .relaxed)
                lines.append("\(name)_bucket{\(labels),le=\"\(Self.format(bound))\"} \(cumulative)")
            }
            let count = total.load(ordering: .relaxed)
            lines.append("\(name)_bucket{\(labels),le=\"+Inf\"} \(count)")
            lines.append("\(name)_sum{\(labels)} \(Self.format(Double(sumMillis.load(ordering: .relaxed)) / 1000))")
            lines.append("\(name)_count{\(labels)} \(count)")
            return lines
        }

        private static func format(_ value: Double) -> String {
            value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
        }
    }

    final class Series: Sendable {
        let labels: Labels
        let requests = Counter()
        let duration = Histogram(bounds: IstioHTTPMetrics.durationBuckets)
        let requestBytes = Histogram(bounds: IstioHTTPMetrics.sizeBuckets)
        let responseBytes = Histogram(bounds: IstioHTTPMetrics.sizeBuckets)

        init(labels: Labels) { self.labels = labels }

        func observe(_ record: HTTPStreamRecord) {
            requests.increment()
            duration.observe(record.durationMilliseconds)
            requestBytes.observe(Double(record.requestBodyBytes))
            responseBytes.observe(Double(record.responseBodyBytes))
        }
    }

    private let series = NIOLockedValueBox<[Labels: Series]>([:])

    init() {}

    /// The series of one finished request's labels.
    func series(for record: HTTPStreamRecord, to cluster: ClusterRuntime?, on connection: DownstreamConnectionInfo) -> Series {
        let reporter: IstioTCPMetrics.Reporter = connection.isInbound ? .destination : .source
        let mutual = connection.isTLS && connection.peerPrincipal != nil
        // Outbound, the peer's principal is the upstream's (not known here without metadata exchange).
        let labels = Labels(
            reporter: reporter,
            sourcePrincipal: (connection.isInbound ? connection.peerPrincipal : nil) ?? IstioTCPMetrics.unknown,
            destinationPrincipal: (connection.isInbound ? connection.localPrincipal : nil) ?? IstioTCPMetrics.unknown,
            // Istio's: the cluster's service, else the request's host.
            destinationService: cluster?.config.serviceHost ?? Self.host(record.authority) ?? IstioTCPMetrics.unknown,
            requestProtocol: record.grpcStatus != nil ? "grpc" : "http",
            responseCode: record.responseCode, grpcStatus: record.grpcStatus ?? "", responseFlags: record.flags.description,
            mutualTLS: mutual)
        return series.withLockedValue { series in
            if let existing = series[labels] { return existing }
            let made = Series(labels: labels)
            series[labels] = made
            return made
        }
    }

    /// The authority without its port.
    private static func host(_ authority: String?) -> String? {
        guard let authority, !authority.isEmpty else { return nil }
        if authority.hasPrefix("[") { return authority.split(separator: "]").first.map { String($0) + "]" } }
        return authority.split(separator: ":").first.map(String.init)
    }

    /// The four families in Prometheus exposition text.
    var prometheusText: String {
        let used = series.withLockedValue { Array($0.values) }.sorted { "\($0.labels)" < "\($1.labels)" }
        guard !used.isEmpty else { return "" }
        var text = "# TYPE istio_requests_total counter\n"
        for series in used { text += "istio_requests_total{\(Self.render(series.labels))} \(series.requests.value)\n" }
        for (name, histogram) in [("istio_request_duration_milliseconds", \Series.duration), ("istio_request_bytes", \Series.requestBytes),
                                  ("istio_response_bytes", \Series.responseBytes)] {
            text += "# TYPE \(name) histogram\n"
            for series in used {
                text += series[keyPath: histogram].samples(name, labels: Self.render(series.labels)).joined(separator: "\n") + "\n"
            }
        }
        return text
    }

    private static func render(_ labels: Labels) -> String {
        [("reporter", labels.reporter.rawValue), ("source_workload", "unknown"), ("source_principal", labels.sourcePrincipal),
         ("destination_workload", "unknown"), ("destination_principal", labels.destinationPrincipal),
         ("destination_service", labels.destinationService), ("request_protocol", labels.requestProtocol),
         ("response_code", String(labels.responseCode)), ("grpc_response_status", labels.grpcStatus),
         ("response_flags", labels.responseFlags), ("connection_security_policy", labels.mutualTLS ? "mutual_tls" : "unknown")]
            .map { "\($0.0)=\"\(IstioTCPMetrics.escaped($0.1))\"" }.joined(separator: ",")
    }
}

/// What the proxy does with each request of one connection: Istio's request metrics, Envoy's counters
/// of its connection manager and of the cluster it went to, and the connection manager's access logs
/// (their writers found once per connection). What a request's labels depend on beyond the connection
/// (cluster, status, flags, gRPC status, host) keys a cache of the series this connection used, so a
/// request on a kept-alive connection finds its series without building labels or taking the metrics' lock.
final class RequestStatistics: HTTPStreamObserver, @unchecked Sendable {
    // @unchecked: called on the connection's event loop only (its streams' handlers).
    private struct SeriesKey: Hashable {
        var cluster: ObjectIdentifier?
        /// The request's host, when the cluster names no service (the label falls back to it).
        var host: String?
        var responseCode: Int
        var flags: ResponseFlags
        var grpcStatus: String?
    }

    private struct ClusterEntry {
        var runtime: ClusterRuntime?
        var namesService: Bool
    }

    let istio: IstioHTTPMetrics
    let manager: ConnectionManagerStats
    let accessLogs: [AccessLogSink]
    private var series: [SeriesKey: IstioHTTPMetrics.Series] = [:]
    private var clusters: [ObjectIdentifier: ClusterEntry] = [:]

    init(istio: IstioHTTPMetrics, manager: ConnectionManagerStats, accessLogs: [AccessLogSink]) {
        self.istio = istio
        self.manager = manager
        self.accessLogs = accessLogs
    }

    func activeFaultsChanged(by delta: Int) {
        if delta > 0 { manager.activeFaults.increment() } else { manager.activeFaults.decrement() }
    }

    func shadowEnded(to upstream: any UpstreamCluster, status: Int, flags: ResponseFlags) {
        cluster(of: upstream).runtime?.stats.countRequest(status: status, flags: flags)
    }

    func requestHeadersTimedOut() {
        manager.headerTimeouts.increment()
    }

    func streamStarted() {
        manager.requestsTotal.increment()
        manager.requestsActive.increment()
    }

    func streamEnded(_ record: HTTPStreamRecord, on connection: DownstreamConnectionInfo, manager config: HTTPConnectionManagerConfig) {
        manager.requestsActive.decrement()
        let status = record.responseCode
        if (100..<600).contains(status) { manager.responsesByClass[status / 100 - 1].increment() }
        if record.flags.contains(.streamIdleTimeout) { manager.idleTimeouts.increment() }
        if record.flags.contains(.noRoute) { manager.noRoute.increment() }
        if record.flags.contains(.faultInjected) { manager.faultAborts.increment() }
        if record.flags.contains(.delayInjected) { manager.faultDelays.increment() }
        let cluster = record.upstream.map(cluster(of:))
        let key = SeriesKey(cluster: record.upstream.map { ObjectIdentifier($0) },
                            host: cluster?.namesService == true ? nil : record.authority,
                            responseCode: status, flags: record.flags, grpcStatus: record.grpcStatus)
        let found: IstioHTTPMetrics.Series
        if let cached = series[key] {
            found = cached
        } else {
            found = istio.series(for: record, to: cluster?.runtime, on: connection)
            // Bounded: a connection that sees many hosts or statuses stops caching rather than grow.
            if series.count < 64 { series[key] = found }
        }
        found.observe(record)
        cluster?.runtime?.stats.countRequest(status: status, flags: record.flags, retries: record.upstreamRetries)
        if !accessLogs.isEmpty {
            let entry = AccessLogEntry(record: record, connection: connection)
            for log in accessLogs { log.writer.log(entry, format: log.format) }
        }
    }

    /// The proxy's runtime of `upstream`, found once per cluster per connection.
    private func cluster(of upstream: any UpstreamCluster) -> ClusterEntry {
        let identity = ObjectIdentifier(upstream)
        if let known = clusters[identity] { return known }
        let runtime = upstream as? ClusterRuntime
        let entry = ClusterEntry(runtime: runtime, namesService: runtime?.config.serviceHost != nil)
        clusters[identity] = entry
        return entry
    }
}
