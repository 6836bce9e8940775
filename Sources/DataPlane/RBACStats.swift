import HTTPProxy
import NIOConcurrencyHelpers

/// RBAC filters' counters under one prefix (a connection manager's, or the network filters'), by their
/// names, kept once made, as Envoy keeps statistics by name across configuration updates.
final class RBACStats: Sendable {
    private let byName = NIOLockedValueBox<[RBACCounters.Names: RBACCounters]>([:])

    /// Points `engine` at the counters of its names, made if new. Once per filter configuration: the
    /// requests and connections after take no lock.
    func bind(_ engine: RBACEngine) {
        guard engine.counters.load() == nil else { return }
        let names = engine.statNames
        let counters = byName.withLockedValue { byName in
            if let existing = byName[names] { return existing }
            let made = RBACCounters(names: names)
            byName[names] = made
            return made
        }
        _ = engine.counters.storeIfNilThenLoad(counters)
    }

    /// Each name's value; filters counting under the same name (a DENY and an ALLOW filter) add up, as
    /// in Envoy.
    var entries: [(String, Double)] {
        var totals: [String: Int] = [:]
        for counters in byName.withLockedValue({ Array($0.values) }) {
            for (name, value) in counters.entries { totals[name, default: 0] += value }
        }
        return totals.sorted { $0.key < $1.key }.map { ($0.key, Double($0.value)) }
    }
}
