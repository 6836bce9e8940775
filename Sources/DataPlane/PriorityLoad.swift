/// How a cluster's traffic is shared among its priorities, as Envoy computes it from the hosts that are
/// available (not ejected, not failing health checks) in each, healthy and degraded apart: a priority's
/// health is its available healthy share × the overprovisioning factor (capped at 100 %), its degraded
/// health the same of its available degraded hosts; priority 0 takes its health in percent, the next
/// takes what is left up to its own health, and so on; what the healths leave goes to the degraded hosts,
/// by priority in the same way; when the healths add up to less than 100 (the normalized total), every
/// load is scaled up by 100 / total. Below 100 % total, a priority whose available share (healthy and
/// degraded) is under the panic threshold is in panic (its hosts are used whatever their health); when
/// every priority is, load follows the number of hosts instead (Envoy's total panic).
struct PriorityLoad: Equatable {
    /// Percent of requests for each priority's healthy hosts.
    private(set) var percent: [Int]
    /// Percent of requests for each priority's degraded hosts (with `percent`, sums to 100).
    private(set) var degradedPercent: [Int]
    /// Whether each priority is in panic.
    private(set) var panic: [Bool]
    /// Each priority's health in percent: its available healthy share × the overprovisioning factor, at
    /// most 100 (what `previous_priorities` shares a retry's load by).
    private(set) var health: [Int]
    /// The same of each priority's available degraded hosts.
    private(set) var degradedHealth: [Int]

    /// `available[i]` healthy and `degraded[i]` degraded of `total[i]` hosts of priority `i` may take
    /// requests; `overprovisioningFactor` in percent (Envoy's default 140); `panicThreshold` in percent
    /// (0 disables panic).
    init(available: [Int], degraded: [Int]? = nil, total: [Int], overprovisioningFactor: Int, panicThreshold: Double) {
        let count = total.count
        let degraded = degraded ?? Array(repeating: 0, count: count)
        percent = Array(repeating: 0, count: count)
        degradedPercent = Array(repeating: 0, count: count)
        panic = Array(repeating: false, count: count)
        health = Array(repeating: 0, count: count)
        degradedHealth = Array(repeating: 0, count: count)
        guard count > 0 else { return }
        health = (0..<count).map { total[$0] > 0 ? min(100, overprovisioningFactor * available[$0] / total[$0]) : 0 }
        degradedHealth = (0..<count).map { total[$0] > 0 ? min(100, overprovisioningFactor * degraded[$0] / total[$0]) : 0 }
        let normalizedTotal = min(100, health.reduce(0, +) + degradedHealth.reduce(0, +))
        if normalizedTotal > 0 {
            var left = 100
            for index in 0..<count {
                percent[index] = min(left, health[index] * 100 / normalizedTotal)
                left -= percent[index]
            }
            for index in 0..<count {
                degradedPercent[index] = min(left, degradedHealth[index] * 100 / normalizedTotal)
                left -= degradedPercent[index]
            }
            // Rounding's remainder goes to the first priority with any health, else with degraded health.
            if left > 0 {
                if let first = health.firstIndex(where: { $0 > 0 }) {
                    percent[first] += left
                } else if let first = degradedHealth.firstIndex(where: { $0 > 0 }) {
                    degradedPercent[first] += left
                }
            }
        }
        if panicThreshold == 0 && normalizedTotal == 0 {
            percent[0] = 100
            return
        }
        var totalPanic = true
        for index in 0..<count {
            let share = total[index] > 0 ? Double(available[index] + degraded[index]) * 100 / Double(total[index]) : 0
            panic[index] = normalizedTotal == 100 ? false : share < panicThreshold
            totalPanic = totalPanic && panic[index]
        }
        guard totalPanic else { return }
        let hosts = total.reduce(0, +)
        percent = Array(repeating: 0, count: count)
        degradedPercent = Array(repeating: 0, count: count)
        guard hosts > 0 else {
            percent[0] = 100
            return
        }
        var left = 100
        for index in 0..<count {
            percent[index] = 100 * total[index] / hosts
            left -= percent[index]
        }
        if let first = total.firstIndex(where: { $0 > 0 }) { percent[first] += left }
    }

    /// The priority for a draw in 0..<100 (a random number or a request's hash, modulo 100).
    func priority(for draw: Int) -> Int {
        choice(for: draw).priority
    }

    /// The priority for a draw in 0..<100, and whether it falls on its degraded hosts' share.
    func choice(for draw: Int) -> (priority: Int, degraded: Bool) {
        Self.choice(healthy: percent, degraded: degradedPercent, for: draw)
    }

    /// The priority for a draw in 0..<100 under a load (healthy shares first, then degraded ones, as
    /// Envoy's `choosePriority` walks them), and whether it is a degraded share.
    static func choice(healthy: [Int], degraded: [Int], for draw: Int) -> (priority: Int, degraded: Bool) {
        var upTo = 0
        for (index, share) in healthy.enumerated() {
            upTo += share
            if draw < upTo { return (index, false) }
        }
        for (index, share) in degraded.enumerated() {
            upTo += share
            if draw < upTo { return (index, true) }
        }
        return (0, false)
    }

    /// A locality's effective weight within its priority (Envoy's locality-weighted balancing): its
    /// `load_balancing_weight` × its available share × the overprovisioning factor, the product of the
    /// last two capped at 1.
    static func localityWeight(_ weight: Int, available: Int, total: Int, overprovisioningFactor: Int) -> Double {
        guard total > 0, weight > 0 else { return 0 }
        return Double(weight) * min(1, Double(overprovisioningFactor) / 100 * Double(available) / Double(total))
    }
}
