import Atomics
import HTTPProxy
import NIOCore

/// A cluster while the proxy runs: picks endpoints by its `lb_policy` and their weights; its circuit
/// breakers (kept with its statistics) limit what is open to it.
final class ClusterRuntime: Sendable {
    /// The endpoint chosen for a connection. `index`, set only where open connections are counted
    /// (LEAST_REQUEST), goes back to ``released(_:)`` when the connection ends.
    struct Choice {
        var address: SocketAddress
        var index: Int?
        /// The TLS to it (the cluster's, or by `transport_socket_matches` the endpoint's); nil: plaintext.
        var transport: EndpointTransport?
        /// The endpoint's priority (its rank among the cluster's; 0 where there is one).
        var priority = 0

        var transportSocket: TransportSocketConfig? { transport?.socket }
    }

    let config: BootstrapConfig.Cluster
    let stats: ClusterStats
    /// Connects HTTP requests' upstreams (nil in tests that only choose endpoints).
    let connector: UpstreamConnector?
    /// The cluster's `outlier_detection` at work (nil without it, or without endpoints); its interval
    /// timer runs on the loop given at init, while this runtime is in use.
    let outlierDetector: OutlierDetector?
    private let outlierSweep: RepeatedTask?
    /// The cluster's `health_checks` at work (nil without them, without endpoints, or without a loop to
    /// run on), from init until ``retire()``.
    private(set) var healthChecker: HealthChecker? {
        get { healthCheckerBox.load(ordering: .acquiring)?.checker }
        set { healthCheckerBox.store(newValue.map(CheckerBox.init), ordering: .releasing) }
    }
    private final class CheckerBox: AtomicReference, Sendable {
        let checker: HealthChecker
        init(_ checker: HealthChecker) { self.checker = checker }
    }
    private let healthCheckerBox = ManagedAtomic<CheckerBox?>(nil)
    /// Whether requests or connections have gone to this cluster (until then health checks run at
    /// `no_traffic_interval`, as in Envoy); carried over from the version this one replaces.
    private let carriedTraffic: ManagedAtomic<Bool>
    private let next = ManagedAtomic<Int>(0)
    /// Connections open to each endpoint, for LEAST_REQUEST.
    private let openByEndpoint: [ManagedAtomic<Int>]
    /// With unequal weights, the round-robin schedule; nil when every endpoint weighs the same.
    private let schedule: WeightedSchedule?
    /// Each endpoint's transport socket, chosen once (``BootstrapConfig/Cluster/transportSocket(for:)``);
    /// empty when the cluster has no `transport_socket_matches` (every endpoint takes the cluster's).
    private let endpointTransports: [EndpointTransport?]
    /// RING_HASH's ring or MAGLEV's table over the endpoints; nil for other policies.
    private let hashTable: ConsistentHashTable?
    /// The transport socket of an original destination, which has no metadata (matches with an empty
    /// `match` take it, as in Envoy), and of every endpoint without matches.
    private let originalDestinationTransport: EndpointTransport?
    /// The endpoints' priorities and localities, when requests are spread over more than one priority
    /// or by locality weights; nil otherwise (every endpoint alike).
    let priorityPlan: PriorityPlan?
    /// Under slow start, when each endpoint joined the cluster: carried over by address from the version
    /// this one replaces, else when this version was made (slow start ramps a host's weight from it).
    let joined: [NIODeadline]
    /// Under slow start, when the last host to join leaves its window (after it, weights are as given).
    private let slowStartEnds: NIODeadline
    /// The time for slow start (tests set their own).
    private let clock: @Sendable () -> NIODeadline

    /// `previous`: the runtime this one replaces, whose hosts' outlier state carries over (same outlier
    /// settings, same addresses). `timerLoop`: where the outlier detector's interval timer runs (none:
    /// ejected hosts only come back through ``OutlierDetector/sweep(now:)`` called directly).
    init(_ config: BootstrapConfig.Cluster, stats: ClusterStats? = nil, connector: UpstreamConnector? = nil,
         previous: ClusterRuntime? = nil, timerLoop: (any EventLoop)? = nil, clock: @escaping @Sendable () -> NIODeadline = { .now() }) {
        self.config = config
        self.clock = clock
        let joined = Self.joinTimes(config, previous: previous, now: clock())
        self.joined = joined
        slowStartEnds = config.slowStart.map { (joined.max() ?? .distantPast) + TimeAmount($0.window) } ?? .distantPast
        self.connector = connector
        self.stats = stats ?? ClusterStats(name: config.name)
        self.stats.circuitBreakers.limits = config.circuitBreakers
        (outlierDetector, outlierSweep) = Self.outlierDetection(config, stats: self.stats, previous: previous, timerLoop: timerLoop)
        carriedTraffic = ManagedAtomic(previous?.carriedTraffic.load(ordering: .relaxed) ?? false)
        if case .endpoints(let endpoints) = config.discovery, config.loadBalancing == .leastRequest {
            openByEndpoint = endpoints.map { _ in ManagedAtomic(0) }
        } else {
            openByEndpoint = []
        }
        if case .endpoints(let endpoints) = config.discovery, Set(endpoints.map(\.weight)).count > 1 {
            schedule = WeightedSchedule(weights: endpoints.map(\.weight))
        } else {
            schedule = nil
        }
        if case .endpoints(let endpoints) = config.discovery, !config.transportSocketMatches.isEmpty {
            endpointTransports = endpoints.map { config.transportSocket(for: $0).map(EndpointTransport.init) }
        } else {
            endpointTransports = []
        }
        originalDestinationTransport = config.transportSocket(matching: [:]).map(EndpointTransport.init)
        hashTable = Self.hashTable(config)
        priorityPlan = PriorityPlan(config)
        if let settings = config.healthCheck, case .endpoints(let endpoints) = config.discovery, !endpoints.isEmpty, let timerLoop {
            let checker = HealthChecker(config: settings, cluster: self, endpoints: endpoints, stats: self.stats.healthChecks, on: timerLoop,
                                        previous: previous?.healthChecker,
                                        hadTraffic: { [weak self] in self?.carriedTraffic.load(ordering: .relaxed) ?? false },
                                        passed: { [weak self] index in self?.outlierDetector?.healthCheckPassed(index) })
            healthChecker = checker
            checker.start()
        }
    }

    /// Kept only under slow start (a version without it records none, so its hosts count as joining now,
    /// all alike).
    private static func joinTimes(_ config: BootstrapConfig.Cluster, previous: ClusterRuntime?, now: NIODeadline) -> [NIODeadline] {
        guard config.slowStart != nil, case .endpoints(let endpoints) = config.discovery else { return [] }
        var before: [SocketAddress: NIODeadline] = [:]
        if let previous, case .endpoints(let old) = previous.config.discovery, old.count == previous.joined.count {
            for (index, endpoint) in old.enumerated() where before[endpoint.address] == nil { before[endpoint.address] = previous.joined[index] }
        }
        return endpoints.map { before[$0.address] ?? now }
    }

    /// This version of the cluster is no longer in force: its health checks stop (its requests in flight
    /// finish).
    func retire() {
        healthChecker?.stop()
        healthChecker = nil
    }

    private static func hashTable(_ config: BootstrapConfig.Cluster) -> ConsistentHashTable? {
        guard case .endpoints(let endpoints) = config.discovery, !endpoints.isEmpty else { return nil }
        let keys = endpoints.map { "\($0.address.ipAddress ?? $0.address.pathname ?? "?"):\($0.address.port ?? 0)" }
        switch config.loadBalancing {
        case .ringHash(let minimumSize, let maximumSize):
            return .ring(keys: keys, weights: endpoints.map(\.weight), minimumSize: minimumSize, maximumSize: maximumSize)
        case .maglev(let tableSize):
            return .maglev(keys: keys, weights: endpoints.map(\.weight), size: tableSize)
        case .roundRobin, .random, .leastRequest:
            return nil
        }
    }

    /// The transport socket for the endpoint at `index` (of `.endpoints`); for an original destination
    /// (no index), the one for an endpoint without metadata.
    func transport(ofEndpoint index: Int?) -> EndpointTransport? {
        guard let index, endpointTransports.indices.contains(index) else { return originalDestinationTransport }
        return endpointTransports[index]
    }

    var name: String { config.name }

    /// Where the next connection or request goes, or why nowhere: there are no endpoints (an EDS cluster
    /// before or without its assignment).
    /// RING_HASH and MAGLEV place `hash` (nil, as for a TCP connection: a random place).
    /// `retryLoad`: a retry's priority load under `previous_priorities`, given the priorities' health and
    /// degraded health.
    func endpoint(originalDestination: SocketAddress, hash: UInt64? = nil,
                  retryLoad: (_ health: [Int], _ degraded: [Int]) -> (healthy: [Int], degraded: [Int])? = { _, _ in nil })
        -> Result<Choice, ProxyRuntime.RouteFailure> {
        switch config.discovery {
        case .originalDestination:
            return .success(Choice(address: originalDestination, index: nil, transport: transport(ofEndpoint: nil)))
        case .endpoints(let endpoints):
            guard !endpoints.isEmpty else {
                stats.noHealthyUpstream.increment()
                return .failure(.noHealthyUpstream)
            }
            if !carriedTraffic.load(ordering: .relaxed) { carriedTraffic.store(true, ordering: .relaxed) }
            let checker = healthChecker
            if let priorityPlan { return plannedChoice(endpoints, plan: priorityPlan, checker: checker, hash: hash, retryLoad: retryLoad) }
            if outlierDetector?.anyEjected == true || (checker?.failingCount ?? 0) > 0,
               let choice = choiceAvoidingUnavailable(endpoints, checker: checker, hash: hash) {
                return choice
            }
            // The index goes with the choice where the outlier detector needs it to record the outcome.
            let tracked = outlierDetector != nil
            if let inForce = slowStartInForce(), let index = slowStartPick(endpoints, excluding: { _ in false }, inForce.slowStart, now: inForce.now) {
                let counted = tracked || config.loadBalancing == .leastRequest
                return .success(Choice(address: endpoints[index].address, index: counted ? index : nil, transport: transport(ofEndpoint: index)))
            }
            switch config.loadBalancing {
            case .ringHash, .maglev:
                var random = RequestRandomness()
                let index = hashTable?.endpoint(for: hash ?? random.next()) ?? 0
                return .success(Choice(address: endpoints[index].address, index: tracked ? index : nil, transport: transport(ofEndpoint: index)))
            case .roundRobin:
                let ticket = UInt(bitPattern: next.loadThenWrappingIncrement(ordering: .relaxed))
                let index = schedule?.endpoint(for: ticket) ?? Int(ticket % UInt(endpoints.count))
                return .success(Choice(address: endpoints[index].address, index: tracked ? index : nil, transport: transport(ofEndpoint: index)))
            case .random:
                var random = RequestRandomness()
                let index = Int.random(in: endpoints.indices, using: &random)
                return .success(Choice(address: endpoints[index].address, index: tracked ? index : nil, transport: transport(ofEndpoint: index)))
            case .leastRequest:
                // Envoy's two random choices: the one with fewer open connections for its weight, (open + 1)
                // / weight, compared without dividing.
                var random = RequestRandomness()
                let first = Int.random(in: endpoints.indices, using: &random)
                let second = endpoints.count > 1 ? (first + Int.random(in: 1..<endpoints.count, using: &random)) % endpoints.count : first
                let firstLoad = (openByEndpoint[first].load(ordering: .relaxed) + 1) * endpoints[second].weight
                let secondLoad = (openByEndpoint[second].load(ordering: .relaxed) + 1) * endpoints[first].weight
                let index = secondLoad < firstLoad ? second : first
                openByEndpoint[index].wrappingIncrement(ordering: .relaxed)
                return .success(Choice(address: endpoints[index].address, index: index, transport: transport(ofEndpoint: index)))
            }
        }
    }

    /// The connection given `index` by ``endpoint(originalDestination:)`` has ended.
    func released(_ index: Int?) {
        guard let index, openByEndpoint.indices.contains(index) else { return }
        openByEndpoint[index].wrappingDecrement(ordering: .relaxed)
    }

    deinit { outlierSweep?.cancel() }

    // MARK: Outlier detection

    private static func outlierDetection(_ config: BootstrapConfig.Cluster, stats: ClusterStats, previous: ClusterRuntime?,
                                         timerLoop: (any EventLoop)?) -> (OutlierDetector?, RepeatedTask?) {
        // The detector this runtime replaces stops, so that it cannot move the statistics they share.
        defer { previous?.outlierDetector?.retire() }
        guard let settings = config.outlierDetection, case .endpoints(let endpoints) = config.discovery, !endpoints.isEmpty else {
            if previous?.outlierDetector != nil { stats.outlierDetection.ejectionsActive.set(0) }
            return (nil, nil)
        }
        let detector = OutlierDetector(config: settings, addresses: endpoints.map(\.address), stats: stats.outlierDetection)
        if let previous = previous?.outlierDetector, previous.config == settings { detector.inherit(from: previous) }
        let interval = TimeAmount(settings.interval)
        let sweep = timerLoop?.scheduleRepeatedTask(initialDelay: interval, delay: interval) { [weak detector] task in
            guard let detector else { return task.cancel() }
            detector.sweep()
        }
        return (detector, sweep)
    }

    /// The choice while some hosts are out (ejected by outlier detection, or failing their health
    /// checks): among the others, by the cluster's `lb_policy`; nil when fewer than
    /// `healthy_panic_threshold` percent of hosts are left (Envoy's panic: all hosts are used, out or
    /// not). None left, without panic: no healthy upstream (Envoy's `UH`).
    private func choiceAvoidingUnavailable(_ endpoints: [BootstrapConfig.Cluster.Endpoint], checker: HealthChecker?,
                                           hash: UInt64?) -> Result<Choice, ProxyRuntime.RouteFailure>? {
        let detector = outlierDetector
        func isOut(_ index: Int) -> Bool { detector?.isEjected(index) == true || checker?.isFailing(index) == true }
        let healthy = endpoints.indices.reduce(0) { $0 + (isOut($1) ? 0 : 1) }
        if Double(healthy) * 100 / Double(endpoints.count) < config.healthyPanicThreshold {
            stats.outlierDetection.panics.increment()
            return nil
        }
        guard let index = select(endpoints, healthy: healthy, excluding: isOut, hash: hash) else {
            stats.noHealthyUpstream.increment()
            return .failure(.noHealthyUpstream)
        }
        return .success(Choice(address: endpoints[index].address, index: index, transport: transport(ofEndpoint: index)))
    }

    /// Among the `healthy` endpoints that `isOut` does not exclude, one by the cluster's `lb_policy`
    /// (nil when none is left).
    func select(_ endpoints: [BootstrapConfig.Cluster.Endpoint], healthy: Int, excluding isOut: (Int) -> Bool, hash: UInt64?) -> Int? {
        /// The `n`th endpoint not out (flags may change meanwhile: then the first one).
        func healthyEndpoint(_ n: Int) -> Int? {
            var left = n, first: Int?
            for index in endpoints.indices where !isOut(index) {
                if left == 0 { return index }
                left -= 1
                if first == nil { first = index }
            }
            return first
        }
        var random = RequestRandomness()
        var chosen: Int?
        if healthy > 0, let inForce = slowStartInForce() {
            return slowStartPick(endpoints, excluding: isOut, inForce.slowStart, now: inForce.now)
        }
        if healthy > 0 {
            switch config.loadBalancing {
            case .ringHash, .maglev:
                // Where the hash falls; if that host is out, where the hash re-mixed falls, the same places
                // each time, so that a key keeps one host while its own is ejected.
                var key = hash ?? random.next()
                for _ in 0..<(2 * endpoints.count) {
                    let index = hashTable?.endpoint(for: key) ?? 0
                    if !isOut(index) { chosen = index; break }
                    key = (key ^ (key >> 31)) &* 0x9E37_79B9_7F4A_7C15 &+ 1
                }
                chosen = chosen ?? healthyEndpoint(0)
            case .roundRobin:
                let ticket = UInt(bitPattern: next.loadThenWrappingIncrement(ordering: .relaxed))
                if let schedule {
                    // The weighted schedule's next turns until one falls on a host that is in.
                    for turn in 0..<(2 * endpoints.count) {
                        let index = schedule.endpoint(for: ticket &+ UInt(turn))
                        if !isOut(index) { chosen = index; break }
                    }
                    chosen = chosen ?? healthyEndpoint(0)
                } else {
                    chosen = healthyEndpoint(Int(ticket % UInt(healthy)))
                }
            case .random:
                chosen = healthyEndpoint(Int.random(in: 0..<healthy, using: &random))
            case .leastRequest:
                let firstTurn = Int.random(in: 0..<healthy, using: &random)
                let secondTurn = healthy > 1 ? (firstTurn + Int.random(in: 1..<healthy, using: &random)) % healthy : firstTurn
                if let first = healthyEndpoint(firstTurn), let second = healthyEndpoint(secondTurn) {
                    let firstLoad = (openByEndpoint[first].load(ordering: .relaxed) + 1) * endpoints[second].weight
                    let secondLoad = (openByEndpoint[second].load(ordering: .relaxed) + 1) * endpoints[first].weight
                    let index = secondLoad < firstLoad ? second : first
                    openByEndpoint[index].wrappingIncrement(ordering: .relaxed)
                    chosen = index
                }
            }
        }
        return chosen
    }

    // MARK: Slow start

    /// The slow start and the time now, while some host is in its window (ROUND_ROBIN and LEAST_REQUEST).
    private func slowStartInForce() -> (slowStart: BootstrapConfig.Cluster.SlowStart, now: NIODeadline)? {
        guard let slowStart = config.slowStart else { return nil }
        switch config.loadBalancing {
        case .roundRobin, .leastRequest: break
        case .random, .ringHash, .maglev: return nil
        }
        let now = clock()
        return now < slowStartEnds ? (slowStart, now) : nil
    }

    /// A host's weight now under slow start: its weight (LEAST_REQUEST: divided by its open requests + 1,
    /// Envoy's `active_request_bias` 1.0) × its slow-start factor, which only healthy hosts get (a
    /// degraded one keeps its weight, as in Envoy).
    private func slowStartWeight(_ endpoints: [BootstrapConfig.Cluster.Endpoint], _ index: Int, _ slowStart: BootstrapConfig.Cluster.SlowStart,
                         now: NIODeadline) -> Double {
        var weight = Double(endpoints[index].weight)
        if config.loadBalancing == .leastRequest, openByEndpoint.indices.contains(index) {
            weight /= Double(openByEndpoint[index].load(ordering: .relaxed) + 1)
        }
        guard joined.indices.contains(index), !endpoints[index].degraded else { return weight }
        return weight * slowStart.factor(age: .nanoseconds((now - joined[index]).nanoseconds))
    }

    /// While hosts are in slow start: the host where the next ticket's place (its multiple of the golden
    /// ratio, modulo 1) falls on the line of the weights now, so that each host gets its share of turns in
    /// order, as Envoy's weighted scheduler gives them, though the weights change with every pick. Not
    /// Envoy's EDF schedule itself: the picks follow the same shares in another order.
    private func slowStartPick(_ endpoints: [BootstrapConfig.Cluster.Endpoint], excluding isOut: (Int) -> Bool,
                               _ slowStart: BootstrapConfig.Cluster.SlowStart, now: NIODeadline) -> Int? {
        var total = 0.0
        for index in endpoints.indices where !isOut(index) { total += slowStartWeight(endpoints, index, slowStart, now: now) }
        guard total > 0 else { return nil }
        let ticket = UInt(bitPattern: next.loadThenWrappingIncrement(ordering: .relaxed))
        let place = (Double(ticket & 0xFFFF_FFFF) * 0.618_033_988_749_894_9).truncatingRemainder(dividingBy: 1) * total
        var upTo = 0.0, chosen: Int?
        for index in endpoints.indices where !isOut(index) {
            upTo += slowStartWeight(endpoints, index, slowStart, now: now)
            chosen = index
            if place < upTo { break }
        }
        if let chosen, config.loadBalancing == .leastRequest, openByEndpoint.indices.contains(chosen) {
            openByEndpoint[chosen].wrappingIncrement(ordering: .relaxed)
        }
        return chosen
    }
}
