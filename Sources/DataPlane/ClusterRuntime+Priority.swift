import HTTPProxy

/// Priority failover and locality-weighted balancing (Envoy's): a request first draws a priority by
/// ``PriorityLoad`` from the hosts available now, then (with `locality_weighted_lb_config`, outside
/// panic) a locality of that priority by its effective weight, then a host of it by the `lb_policy`.
extension ClusterRuntime {
    /// The endpoints' priorities and localities, fixed for this version of the cluster.
    struct PriorityPlan: Sendable {
        /// Each endpoint's priority, as an index into `totals` (priorities given in EDS, ascending).
        let priorityOf: [Int]
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
        /// Each locality's kept hosts (its available ones while none is out).
        let keptByLocality: [Int]

        /// nil when there is one priority and no locality weighting: then every endpoint is alike.
        init?(_ config: BootstrapConfig.Cluster) {
            guard case .endpoints(let endpoints) = config.discovery, !endpoints.isEmpty, !config.localities.isEmpty else { return nil }
            let localities = config.localities
            let priorities = Array(Set(localities.map(\.priority))).sorted()
            // One priority of one locality (istiod's usual cluster, locality-weighted or not): nothing to draw.
            guard priorities.count > 1 || (config.localityWeighted && localities.count > 1) else { return nil }
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
            overprovisioningFactor = config.overprovisioningFactor
            localityWeighted = config.localityWeighted
            panicThreshold = config.healthyPanicThreshold
            var kept = Array(repeating: 0, count: priorities.count)
            for priority in priorityOf { kept[priority] += 1 }
            var keptByLocality = Array(repeating: 0, count: localities.count)
            for endpoint in endpoints where keptByLocality.indices.contains(endpoint.locality) { keptByLocality[endpoint.locality] += 1 }
            self.keptByLocality = keptByLocality
            allAvailable = PriorityLoad(available: kept, total: totals, overprovisioningFactor: overprovisioningFactor,
                                        panicThreshold: panicThreshold)
        }

        /// The load with `available` hosts per priority.
        func load(available: [Int]) -> PriorityLoad {
            PriorityLoad(available: available, total: totals, overprovisioningFactor: overprovisioningFactor, panicThreshold: panicThreshold)
        }

        /// The locality of `priority` that a draw in 0..<1 falls on, by effective weights with
        /// `available` hosts per locality; nil when no locality of it has any effective weight.
        func locality(of priority: Int, available: [Int], draw: Double) -> Int? {
            var total = 0.0
            for locality in localityPriority.indices where localityPriority[locality] == priority {
                total += PriorityLoad.localityWeight(localityWeight[locality], available: available[locality],
                                                     total: localityTotals[locality], overprovisioningFactor: overprovisioningFactor)
            }
            guard total > 0 else { return nil }
            var upTo = 0.0, last: Int?
            for locality in localityPriority.indices where localityPriority[locality] == priority {
                let weight = PriorityLoad.localityWeight(localityWeight[locality], available: available[locality],
                                                         total: localityTotals[locality], overprovisioningFactor: overprovisioningFactor)
                guard weight > 0 else { continue }
                upTo += weight
                last = locality
                if draw * total < upTo { return locality }
            }
            return last
        }
    }

    /// The choice when the cluster has priorities or locality weights: the priority by its load (drawn
    /// from the request's hash where there is one, as Envoy does; a retry's `retryLoad` may replace the
    /// load, given the priorities' health), then the locality, then the host among those available (all
    /// of the priority's when it is in panic).
    func plannedChoice(_ endpoints: [BootstrapConfig.Cluster.Endpoint], plan: PriorityPlan, checker: HealthChecker?,
                       hash: UInt64?, retryLoad: (_ health: [Int]) -> [Int]? = { _ in nil }) -> Result<Choice, ProxyRuntime.RouteFailure> {
        let detector = outlierDetector
        let anyOut = detector?.anyEjected == true || (checker?.failingCount ?? 0) > 0
        func isOut(_ index: Int) -> Bool { anyOut && (detector?.isEjected(index) == true || checker?.isFailing(index) == true) }
        // While no host is out (the common case), the loads computed once; else from the hosts now in.
        var availableByLocality = plan.keptByLocality
        var load = plan.allAvailable
        if anyOut {
            availableByLocality = Array(repeating: 0, count: plan.localityTotals.count)
            var available = Array(repeating: 0, count: plan.totals.count)
            for index in endpoints.indices where !isOut(index) {
                available[plan.priorityOf[index]] += 1
                if availableByLocality.indices.contains(endpoints[index].locality) { availableByLocality[endpoints[index].locality] += 1 }
            }
            load = plan.load(available: available)
        }
        var random = RequestRandomness()
        let draw = Int((hash ?? random.next()) % 100)
        let priority = retryLoad(load.health).map { PriorityLoad.priority(in: $0, for: draw) } ?? load.priority(for: draw)
        let panic = load.panic[priority]
        if panic { stats.outlierDetection.panics.increment() }
        var locality: Int?
        if plan.localityWeighted && !panic {
            locality = plan.locality(of: priority, available: availableByLocality, draw: Double(random.next() >> 11) / Double(1 << 53))
        }
        func excluded(_ index: Int) -> Bool {
            if let locality { if endpoints[index].locality != locality { return true } } else if plan.priorityOf[index] != priority { return true }
            return !panic && isOut(index)
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
