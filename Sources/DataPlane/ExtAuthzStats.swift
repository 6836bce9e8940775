import HTTPProxy
import NIOConcurrencyHelpers

/// ext_authz filters' counters under one connection manager's prefix, by their names, kept once made,
/// as Envoy keeps statistics by name across configuration updates.
final class ExtAuthzStats: Sendable {
    private let byName = NIOLockedValueBox<[ExtAuthzCounters.Names: ExtAuthzCounters]>([:])

    /// Points `config` at the counters of its names, made if new. Once per filter configuration: the
    /// requests after take no lock.
    func bind(_ config: ExtAuthzFilterConfig) {
        guard config.counters.load() == nil else { return }
        let names = config.statNames
        let counters = byName.withLockedValue { byName in
            if let existing = byName[names] { return existing }
            let made = ExtAuthzCounters(names: names)
            byName[names] = made
            return made
        }
        _ = config.counters.storeIfNilThenLoad(counters)
    }

    /// Each counter's name and value, by name.
    var entries: [(String, Double)] {
        byName.withLockedValue { Array($0.values) }.flatMap(\.entries)
            .sorted { $0.0 < $1.0 }.map { ($0.0, Double($0.1)) }
    }
}
