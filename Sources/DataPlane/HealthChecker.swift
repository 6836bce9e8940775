import Atomics
import HTTPProxy
import HTTPTypes
import NIOCore

/// Envoy's active health checking of one version of a cluster: each endpoint checked on its own timer
/// (HTTP, TCP or gRPC), `unhealthy_threshold` failures in a row take it out of rotation and
/// `healthy_threshold` successes bring it back. As in Envoy, an endpoint starts out failed and its first
/// successful check alone makes it healthy. Checks run on one event loop; the failed flags are atomics
/// the request path reads from every loop.
final class HealthChecker: @unchecked Sendable {
    // @unchecked: `results`, `timers` and `stopped` are touched on `loop` only; the flags are atomics.
    let config: HealthCheckConfig
    private let loop: any EventLoop
    private let stats: HealthCheckStats
    private let target: HealthCheckTarget
    private let endpoints: [UpstreamEndpoint]
    private let failed: [ManagedAtomic<Bool>]
    private let failedCount: ManagedAtomic<Int>
    /// Whether the cluster has carried traffic (until it has, checks run at `no_traffic_interval`).
    private let hadTraffic: @Sendable () -> Bool
    /// Told of each passing check (the outlier detector brings an ejected host back).
    private let passed: @Sendable (Int) -> Void
    private var results: [(successes: Int, failures: Int)]
    /// Whether each endpoint has been checked since start (its first success alone makes it healthy).
    private var checked: [Bool]
    private var timers: [Scheduled<Void>?]
    private var stopped = false

    /// `previous`: the checker of the version this cluster replaces; endpoints it knew keep their health
    /// (and need the whole threshold to change it), as Envoy keeps a host's health across updates.
    init(config: HealthCheckConfig, cluster: ClusterRuntime, endpoints: [BootstrapConfig.Cluster.Endpoint], stats: HealthCheckStats,
         on loop: any EventLoop, previous: HealthChecker?, hadTraffic: @escaping @Sendable () -> Bool,
         passed: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.config = config
        self.loop = loop
        self.stats = stats
        self.hadTraffic = hadTraffic
        self.passed = passed
        target = HealthCheckTarget(cluster: cluster, http2: { if case .grpc = config.check { true } else { false } }(), loop: loop)
        self.endpoints = endpoints.enumerated().map { index, endpoint in
            var address = endpoint.address
            if let port = config.alternatePort { address = address.withPort(port) }
            return UpstreamEndpoint(address: address, transport: cluster.transport(ofEndpoint: index))
        }
        let known = previous?.config == config ? previous?.health() ?? [:] : [:]
        let failing = self.endpoints.map { known[$0.address] ?? true }
        failed = failing.map { ManagedAtomic($0) }
        failedCount = ManagedAtomic(failing.filter { $0 }.count)
        results = endpoints.map { _ in (0, 0) }
        checked = self.endpoints.map { known[$0.address] != nil }
        timers = endpoints.map { _ in nil }
        stats.healthy.set(Int64(failing.filter { !$0 }.count))
        stats.configured.store(true, ordering: .relaxed)
    }

    /// Whether the endpoint at `index` is out of rotation (failed its checks, or not yet checked).
    func isFailing(_ index: Int) -> Bool { failed[index].load(ordering: .relaxed) }

    var failingCount: Int { failedCount.load(ordering: .relaxed) }

    /// Whether each checked address is failing, for the checker that replaces this one.
    private func health() -> [SocketAddress: Bool] {
        var health: [SocketAddress: Bool] = [:]
        for (index, endpoint) in endpoints.enumerated() { health[endpoint.address] = isFailing(index) }
        return health
    }

    /// Schedules each endpoint's first check, within `initial_jitter`.
    func start() {
        loop.execute { [self] in
            var random = RequestRandomness()
            let jitter = Self.nanoseconds(config.initialJitter)
            for index in endpoints.indices {
                let delay = jitter > 0 ? Int64(random.next() % UInt64(jitter)) : 0
                schedule(index, in: .nanoseconds(delay))
            }
        }
    }

    /// This version of the cluster is no longer in force: no more checks.
    func stop() {
        loop.execute { [self] in
            stopped = true
            for timer in timers { timer?.cancel() }
        }
    }

    private func schedule(_ index: Int, in delay: TimeAmount) {
        guard !stopped else { return }
        timers[index] = loop.assumeIsolated().scheduleTask(in: delay) { [self] in check(index) }
    }

    private func check(_ index: Int) {
        guard !stopped else { return }
        stats.attempts.increment()
        let timeout = TimeAmount(config.timeout)
        let outcome: EventLoopFuture<HealthProbe.Outcome>
        switch config.check {
        case .http(let host, let path, let expected):
            var fields = HTTPFields()
            fields[.userAgent] = "Envoy/HC"
            let request = HTTPRequest(method: .get, scheme: "http", authority: host.isEmpty ? target.name : host, path: path, headerFields: fields)
            outcome = HealthProbe.http(request, expected: expected, to: endpoints[index], of: target, pools: target.pools, timeout: timeout)
        case .grpc(let service, let authority):
            outcome = HealthProbe.grpc(service: service, authority: authority.isEmpty ? target.name : authority, to: endpoints[index],
                                       of: target, pools: target.pools, timeout: timeout)
        case .tcp(let send, let receive):
            outcome = TCPHealthCheck.run(send: send, receive: receive, to: endpoints[index], of: target, timeout: timeout)
        }
        outcome.assumeIsolated().whenSuccess { [self] result in record(result, for: index) }
    }

    private func record(_ outcome: HealthProbe.Outcome, for index: Int) {
        guard !stopped else { return }
        var result = results[index]
        let wasFailing = isFailing(index)
        switch outcome {
        case .healthy:
            stats.successes.increment()
            passed(index)
            result = (result.successes + 1, 0)
            // The first check after start needs one success; a failed endpoint needs healthy_threshold.
            if wasFailing, !checked[index] || result.successes >= config.healthyThreshold { setFailing(index, false) }
        case .unhealthy, .unreachable:
            stats.failures.increment()
            if case .unreachable = outcome { stats.networkFailures.increment() }
            result = (0, result.failures + 1)
            if !wasFailing, result.failures >= config.unhealthyThreshold { setFailing(index, true) }
        }
        checked[index] = true
        results[index] = result
        var random = RequestRandomness()
        let delay = config.nextDelay(unhealthy: isFailing(index), hadTraffic: hadTraffic(), randomValue: random.next())
        schedule(index, in: TimeAmount(delay))
    }

    private func setFailing(_ index: Int, _ failing: Bool) {
        failed[index].store(failing, ordering: .relaxed)
        if failing {
            failedCount.wrappingIncrement(ordering: .relaxed)
            stats.healthy.decrement()
        } else {
            failedCount.wrappingDecrement(ordering: .relaxed)
            stats.healthy.increment()
        }
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let parts = duration.components
        return parts.seconds * 1_000_000_000 + parts.attoseconds / 1_000_000_000
    }
}

/// Envoy's TCP health check: a connection, and with a `send` payload, those bytes written and every
/// `receive` payload expected back in order, anywhere in what the endpoint answers.
enum TCPHealthCheck {
    static func run(send: [UInt8], receive: [[UInt8]], to endpoint: UpstreamEndpoint, of target: HealthCheckTarget,
                    timeout: TimeAmount) -> EventLoopFuture<HealthProbe.Outcome> {
        let loop = target.pools.eventLoop
        let promise = loop.makePromise(of: HealthProbe.Outcome.self)
        let expected = receive.filter { !$0.isEmpty }
        let connecting = target.connect(to: endpoint, version: .http1, alpn: nil, on: loop) { channel -> Channel in
            if !send.isEmpty || !expected.isEmpty {
                try channel.pipeline.syncOperations.addHandler(ResponseMatcher(expected: expected, promise: promise))
            }
            return channel
        }
        let deadline = loop.assumeIsolated().scheduleTask(in: timeout) { promise.succeed(.unreachable("timed out")) }
        connecting.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
                if send.isEmpty && expected.isEmpty {
                    promise.succeed(.healthy)
                } else if !send.isEmpty {
                    channel.writeAndFlush(channel.allocator.buffer(bytes: send), promise: nil)
                }
                promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
            case .failure(let error):
                promise.succeed(.unreachable("\(error)"))
            }
        }
        promise.futureResult.whenComplete { _ in deadline.cancel() }
        return promise.futureResult
    }

    /// Reads until every expected payload has come, in order.
    private final class ResponseMatcher: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        private var expected: ArraySlice<[UInt8]>
        private var received: [UInt8] = []
        private let promise: EventLoopPromise<HealthProbe.Outcome>

        init(expected: [[UInt8]], promise: EventLoopPromise<HealthProbe.Outcome>) {
            self.expected = expected[...]
            self.promise = promise
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            received += buffer.readBytes(length: buffer.readableBytes) ?? []
            while let next = expected.first, let found = Self.find(next, in: received) {
                received.removeFirst(found + next.count)
                expected.removeFirst()
            }
            if expected.isEmpty { promise.succeed(.healthy) }
            if received.count > 65_536 { promise.succeed(.unhealthy("the expected payload did not come")) }
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.succeed(expected.isEmpty ? .healthy : .unhealthy("closed before the expected payload came"))
        }

        private static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
            guard needle.count <= haystack.count else { return nil }
            return (0...(haystack.count - needle.count)).first { haystack[$0..<($0 + needle.count)].elementsEqual(needle) }
        }
    }
}

/// Envoy's `cluster.NAME.health_check.*` statistics, kept by name across versions of the cluster.
final class HealthCheckStats: Sendable {
    let attempts = Counter()
    let successes = Counter()
    let failures = Counter()
    let networkFailures = Counter()
    /// Endpoints passing their checks.
    let healthy = Gauge()
    /// Set once the cluster has health checks: the statistics are shown from then on.
    let configured = ManagedAtomic(false)

    var entries: [(String, Double)] {
        guard configured.load(ordering: .relaxed) else { return [] }
        return [("health_check.attempt", Double(attempts.value)), ("health_check.success", Double(successes.value)),
         ("health_check.failure", Double(failures.value)), ("health_check.network_failure", Double(networkFailures.value)),
         ("health_check.healthy", Double(healthy.value))]
    }
}

/// The cluster as the health checker's own pools see it: its connections (TLS per endpoint), under its
/// own name and without its circuit breakers, which health checks do not count against, as in Envoy.
final class HealthCheckTarget: UpstreamCluster, @unchecked Sendable {
    // @unchecked: `pools` is used on its loop only.
    /// Weak: the cluster holds its checker, which holds this.
    private weak let cluster: ClusterRuntime?
    let name: String
    let upstreamProtocol: UpstreamProtocol
    let circuitBreakers: CircuitBreakers
    let pools: UpstreamPools

    init(cluster: ClusterRuntime, http2: Bool, loop: any EventLoop) {
        self.cluster = cluster
        name = cluster.name
        upstreamProtocol = http2 ? .http2 : .http1
        var unlimited = CircuitBreakers.Limits()
        unlimited.maxConnections = .max
        unlimited.maxPendingRequests = .max
        unlimited.maxRequests = .max
        circuitBreakers = CircuitBreakers(unlimited)
        pools = UpstreamPools(eventLoop: loop, maxIdlePerEndpoint: 1)
    }

    var upstreamIdleTimeout: TimeAmount? { nil }
    var maxRequestsPerConnection: Int? { nil }

    func chooseEndpoint(for downstream: DownstreamConnectionInfo, hash: UInt64?) -> Result<UpstreamEndpoint, UpstreamUnavailable> {
        .failure(.noHealthyUpstream)  // checks name their endpoint
    }

    func requestEnded(at endpoint: UpstreamEndpoint) {}

    func connect<Connection>(to endpoint: UpstreamEndpoint, version: UpstreamVersion, alpn: [String]?, on loop: any EventLoop,
                             configure: @escaping (Channel) throws -> Connection) -> EventLoopFuture<Connection> {
        guard let cluster else { return loop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
        return cluster.connect(to: endpoint, version: version, alpn: alpn, on: loop, configure: configure)
    }
}
