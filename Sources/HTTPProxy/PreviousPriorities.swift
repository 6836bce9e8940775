/// Envoy's `envoy.retry_priorities.previous_priorities` for one request: the priorities of the hosts its
/// attempts went to, and the priority load its retries use. Until `updateFrequency` hosts were tried a
/// retry uses the cluster's own load; each time the number tried reaches a multiple of it, the priorities
/// tried so far are left out and the load is shared again among the others by their health. When no
/// other priority has any health, the priorities tried are forgotten (and the hosts, for the count) and
/// every priority is in again; when none has any, the cluster's own load applies.
public struct PreviousPriorities: Sendable, Equatable {
    /// `update_frequency` (istiod sends 2).
    public let updateFrequency: Int
    /// The priority of each host tried since the start or the last reset.
    public private(set) var attempted: [Int] = []
    /// The priorities left out.
    public private(set) var excluded: [Bool] = []
    /// The load computed at the last update (percent per priority, healthy and degraded hosts).
    private var adjusted: (healthy: [Int], degraded: [Int])?

    public init(updateFrequency: Int) {
        self.updateFrequency = max(1, updateFrequency)
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.updateFrequency == b.updateFrequency && a.attempted == b.attempted && a.excluded == b.excluded
            && a.adjusted?.healthy == b.adjusted?.healthy && a.adjusted?.degraded == b.adjusted?.degraded
    }

    /// An attempt went to a host of `priority` (Envoy's `onHostAttempted`).
    public mutating func attempted(priority: Int) {
        attempted.append(priority)
    }

    /// The load a retry's priority is drawn from, percent per priority for its healthy and its degraded
    /// hosts, given each priority's health and degraded health in percent (their available share × the
    /// overprovisioning factor, at most 100, as the cluster computes them); nil: the cluster's own load
    /// (Envoy's `determinePriorityLoad`).
    public mutating func load(health: [Int], degraded: [Int]) -> (healthy: [Int], degraded: [Int])? {
        if attempted.count < updateFrequency { return nil }
        guard attempted.count % updateFrequency == 0 else { return adjusted }
        let count = max(health.count, degraded.count)
        if excluded.count < count { excluded += Array(repeating: false, count: count - excluded.count) }
        for priority in attempted where excluded.indices.contains(priority) { excluded[priority] = true }
        var total = availability(health, degraded)
        if total == 0 {
            // Every priority with health was tried: start over rather than fail.
            excluded = Array(repeating: false, count: excluded.count)
            attempted = []
            total = availability(health, degraded)
        }
        guard total > 0 else { return nil }
        var load = (healthy: Array(repeating: 0, count: health.count), degraded: Array(repeating: 0, count: degraded.count))
        var left = 100
        // Priorities in order take their share of what is left, healthy hosts first, then degraded ones;
        // rounding's remainder goes round again, to the first ones.
        while left > 0 {
            for index in health.indices where !isExcluded(index) {
                let share = min(left, health[index] * 100 / total)
                load.healthy[index] += share
                left -= share
            }
            for index in degraded.indices where !isExcluded(index) {
                let share = min(left, degraded[index] * 100 / total)
                load.degraded[index] += share
                left -= share
            }
        }
        adjusted = load
        return load
    }

    /// ``load(health:degraded:)`` for a cluster without degraded hosts: the healthy hosts' load.
    public mutating func load(health: [Int]) -> [Int]? {
        load(health: health, degraded: Array(repeating: 0, count: health.count))?.healthy
    }

    private func isExcluded(_ priority: Int) -> Bool {
        excluded.indices.contains(priority) && excluded[priority]
    }

    /// The health of the priorities not left out, healthy and degraded, at most 100.
    private func availability(_ health: [Int], _ degraded: [Int]) -> Int {
        min(100, health.indices.reduce(0) { $0 + (isExcluded($1) ? 0 : health[$1]) }
            + degraded.indices.reduce(0) { $0 + (isExcluded($1) ? 0 : degraded[$1]) })
    }
}
