import Atomics
import HTTPProxy

/// Priority failover, degraded load and locality-weighted balancing (Envoy's): a request first draws a
/// priority, and whether its healthy or its degraded hosts, by ``PriorityLoad`` from the hosts available
/// now, then (with `locality_weighted_lb_config`, outside panic) a locality of that priority by its
/// effective weight, then a host of it by the `lb_policy`.
extension ClusterRuntime {
    /// The endpoints' priorities and localities, fixed for this version of the cluster.
    struct PriorityPlan: Sendable {
        /// Each endpoint's priority, as an index into `totals` (priorities given in EDS, ascending).
        let priorityOf: [Int]
        /// Whether each endpoint was given as DEGRADED.
        let isDegraded: [Bool]
        /// Hosts of each priority, those EDS gave as not healthy included.
        let totals: [Int]
        /// Each locality's priority (index into `totals`), weight and hosts (unhealthy ones included).
        let localityPriority: [Int]
        let localityWeight: [Int]
        let localityTotals: [Int]
        let overprovisioningFactor: Int
        let localityWeighted: Bool
        let panicThreshold: Double
        /// The load while every kept host is available (the common case, computed once).
        let allAvailable: PriorityLoad
        /// Each locality's kept healthy and degraded hosts (its available ones while none is out).
        let keptByLocality: [Int]
        let keptDegradedByLocality: [Int]
        /// Each priority's turns at its localities, healthy hosts' and degraded hosts' apart (see
        /// ``locality(of:degraded:available:)``).
        let localityTurns: [ManagedAtomic<UInt>]

        /// nil when there is one priority, no degraded host and no locality weighting: then every endpoint
        /// is alike.
        init?(_ config: BootstrapConfig.Cluster) {
            guard case .endpoints(let endpoints) = config.discovery, !endpoints.isEmpty, !config.localities.isEmpty else { return nil }
            let localities = config.localities
            let priorities = Array(Set(localities.map(\.priority))).sorted()
            // One priority of one locality (istiod's usual cluster, locality-weighted or not): nothing to draw.
            guard priorities.count > 1 || (config.localityWeighted && localities.count > 1) || endpoints.contains(where: \.degraded) else { return nil }
            let rank = Dictionary(uniqueKeysWithValues: priorities.enumerated().map { ($1, $0) })
            localityPriority = localities.map { rank[$0.priority] ?? 0 }
            localityWeight = localities.map(\.weight)
            var localityTotals = localities.map(\.unavailable)
            for endpoint in endpoints where localityTotals.indices.contains(endpoint.locality) { localityTotals[endpoint.locality] += 1 }
            self.localityTotals = localityTotals
            var totals = Array(repeating: 0, count: priorities.count)
            for (locality, count) in localityTotals.enumerated() { totals[localityPriority[locality]] += count }
            self.totals = totals
            priorityOf = endpoints.map { [localityPriority] in localityPriority.indices.contains($0.locality) ? localityPriority[$0.locality] : 0 }
            isDegraded = endpoints.map(\.degraded)
            overprovisioningFactor = config.overprovisioningFactor
            localityWeighted = config.localityWeighted
            panicThreshold = config.healthyPanicThreshold
            var kept = Array(repeating: 0, count: priorities.count)
            var keptDegraded = kept
            for (index, priority) in priorityOf.enumerated() {
                if isDegraded[index] { keptDegraded[priority] += 1 } else { kept[priority] += 1 }
            }
            var keptByLocality = Array(repeating: 0, count: localities.count)
            var keptDegradedByLocality = keptByLocality
            for endpoint in endpoints where keptByLocality.indices.contains(endpoint.locality) {
                if endpoint.degraded { keptDegradedByLocality[endpoint.locality] += 1 } else { keptByLocality[endpoint.locality] += 1 }
            }
            self.keptByLocality = keptByLocality
            self.keptDegradedByLocality = keptDegradedByLocality
            allAvailable = PriorityLoad(available: kept, degraded: keptDegraded, total: totals, overprovisioningFactor: overprovisioningFactor,
                                        panicThreshold: panicThreshold)
            localityTurns = (0..<(2 * priorities.count)).map { _ in ManagedAtomic<UInt>(0) }
        }

        /// The load with `available` healthy and `degraded` degraded hosts per priority.
        func load(available: [Int], degraded: [Int]) -> PriorityLoad {
            PriorityLoad(available: available, degraded: degraded, total: totals, overprovisioningFactor: overprovisioningFactor,
                         panicThreshold: panicThreshold)
        }

        /// The locality of `priority` for the next turn of its healthy (or `degraded`) hosts, by effective
        /// weights with `available` hosts of that kind per locality; nil when no locality of it has any
        /// effective weight. Envoy keeps an EDF schedule per priority; here each turn (an atomic count, no
        /// lock) takes the place of its multiple of the golden ratio, modulo 1, on the line of the
        /// weights: every locality gets its share of turns, spread out and in a fixed order, though not
        /// Envoy's order.
        func locality(of priority: Int, degraded: Bool, available: [Int]) -> Int? {
            var total = 0.0
            for locality in localityPriority.indices where localityPriority[locality] == priority {
                total += PriorityLoad.localityWeight(localityWeight[locality], available: available[locality],
                                                     total: localityTotals[locality], overprovisioningFactor: overprovisioningFactor)
            }
            guard total > 0 else { return nil }
            let turn = localityTurns[2 * priority + (degraded ? 1 : 0)].loadThenWrappingIncrement(ordering: .relaxed)
            let place = Self.goldenPlace(turn) * total
            var upTo = 0.0, last: Int?
            for locality in localityPriority.indices where localityPriority[locality] == priority {
                let weight = PriorityLoad.localityWeight(localityWeight[locality], available: available[locality],
                                                         total: localityTotals[locality], overprovisioningFactor: overprovisioningFactor)
                guard weight > 0 else { continue }
                upTo += weight
                last = locality
                if place < upTo { return locality }
            }
            return last
        }

        /// Turn `turn`'s place in 0..<1: its multiple of the golden ratio, modulo 1 (a low-discrepancy
        /// sequence: any interval of the line gets its length's share of turns, within a few).
        static func goldenPlace(_ turn: UInt) -> Double {
            (Double(turn & 0xFFFF_FFFF) * 0.618_033_988_749_894_9).truncatingRemainder(dividingBy: 1)
        }
    }

    /// The choice when the cluster has priorities, degraded hosts or locality weights: the priority and
    /// whether its healthy or degraded hosts, by the load (drawn from the request's hash where there is
    /// one, as Envoy does; a retry's `retryLoad` may replace the load, given the priorities' health and
    /// degraded health), then the locality, then the host among those available of that kind (all of
    /// the priority's when it is in panic).
    func plannedChoice(_ endpoints: [BootstrapConfig.Cluster.Endpoint], plan: PriorityPlan, checker: HealthChecker?, hash: UInt64?,
                       retryLoad: (_ health: [Int], _ degraded: [Int]) -> (healthy: [Int], degraded: [Int])? = { _, _ in nil })
        -> Result<Choice, ProxyRuntime.RouteFailure> {
        let detector = outlierDetector
        let anyOut = detector?.anyEjected == true || (checker?.failingCount ?? 0) > 0
        func isOut(_ index: Int) -> Bool { anyOut && (detector?.isEjected(index) == true || checker?.isFailing(index) == true) }
        // While no host is out (the common case), the loads computed once; else from the hosts now in.
        var availableByLocality = plan.keptByLocality
        var degradedByLocality = plan.keptDegradedByLocality
        var load = plan.allAvailable
        if anyOut {
            availableByLocality = Array(repeating: 0, count: plan.localityTotals.count)
            degradedByLocality = availableByLocality
            var available = Array(repeating: 0, count: plan.totals.count)
            var degraded = available
            for index in endpoints.indices where !isOut(index) {
                let locality = endpoints[index].locality
                if plan.isDegraded[index] {
                    degraded[plan.priorityOf[index]] += 1
                    if degradedByLocality.indices.contains(locality) { degradedByLocality[locality] += 1 }
                } else {
                    available[plan.priorityOf[index]] += 1
                    if availableByLocality.indices.contains(locality) { availableByLocality[locality] += 1 }
                }
            }
            load = plan.load(available: available, degraded: degraded)
        }
        var random = RequestRandomness()
        let draw = Int((hash ?? random.next()) % 100)
        let (priority, degraded) = retryLoad(load.health, load.degradedHealth).map { PriorityLoad.choice(healthy: $0.healthy, degraded: $0.degraded, for: draw) }
            ?? load.choice(for: draw)
        let panic = load.panic[priority]
        if panic { stats.outlierDetection.panics.increment() }
        var locality: Int?
        if plan.localityWeighted && !panic {
            locality = plan.locality(of: priority, degraded: degraded, available: degraded ? degradedByLocality : availableByLocality)
        }
        func excluded(_ index: Int) -> Bool {
            if let locality { if endpoints[index].locality != locality { return true } } else if plan.priorityOf[index] != priority { return true }
            return !panic && (isOut(index) || plan.isDegraded[index] != degraded)
        }
        let candidates = endpoints.indices.reduce(0) { $0 + (excluded($1) ? 0 : 1) }
        guard candidates > 0, let index = select(endpoints, healthy: candidates, excluding: excluded, hash: hash) else {
            stats.noHealthyUpstream.increment()
            return .failure(.noHealthyUpstream)
        }
        let tracked = outlierDetector != nil || config.loadBalancing == .leastRequest
        return .success(Choice(address: endpoints[index].address, index: tracked ? index : nil, transport: transport(ofEndpoint: index),
                               priority: plan.priorityOf[index]))
    }
}
