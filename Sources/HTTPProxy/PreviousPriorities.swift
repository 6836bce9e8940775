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
    /// The load computed at the last update (percent per priority).
    private var adjusted: [Int]?

    public init(updateFrequency: Int) {
        self.updateFrequency = max(1, updateFrequency)
    }

    /// An attempt went to a host of `priority` (Envoy's `onHostAttempted`).
    public mutating func attempted(priority: Int) {
        attempted.append(priority)
    }

    /// The load a retry's priority is drawn from, percent per priority, given each priority's health in
    /// percent (its available share × the overprovisioning factor, at most 100, as the cluster computes
    /// it); nil: the cluster's own load (Envoy's `determinePriorityLoad`).
    public mutating func load(health: [Int]) -> [Int]? {
        if attempted.count < updateFrequency { return nil }
        guard attempted.count % updateFrequency == 0 else { return adjusted }
        if excluded.count < health.count { excluded += Array(repeating: false, count: health.count - excluded.count) }
        for priority in attempted where excluded.indices.contains(priority) { excluded[priority] = true }
        var total = availability(health)
        if total == 0 {
            // Every priority with health was tried: start over rather than fail.
            excluded = Array(repeating: false, count: excluded.count)
            attempted = []
            total = availability(health)
        }
        guard total > 0 else { return nil }
        var load = Array(repeating: 0, count: health.count)
        var left = 100
        // Priorities in order take their share of what is left; rounding's remainder goes round again,
        // to the first ones.
        while left > 0 {
            for index in health.indices where !isExcluded(index) {
                let share = min(left, health[index] * 100 / total)
                load[index] += share
                left -= share
            }
        }
        adjusted = load
        return load
    }

    private func isExcluded(_ priority: Int) -> Bool {
        excluded.indices.contains(priority) && excluded[priority]
    }

    /// The health of the priorities not left out, at most 100.
    private func availability(_ health: [Int]) -> Int {
        min(100, health.indices.reduce(0) { $0 + (isExcluded($1) ? 0 : health[$1]) })
    }
}
