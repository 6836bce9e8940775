import Synchronization

/// The resource names a stream asked for, shared by every stream that asked for the same ones: proxies
/// of one mesh mostly subscribe to the same thousands of endpoint names, which one copy serves.
final class ResourceSubscription: Sendable {
    let names: [String]
    private let wanted: Set<String>
    /// The positions of the wanted resources in the last list asked about (weakly held: a list freed
    /// never matches a new one at its address).
    private let lastSelection = Mutex<(list: WeakResourceList, positions: [Int])>((WeakResourceList(), []))

    init(names: [String]) {
        self.names = names
        self.wanted = Set(names)
    }

    /// The positions in `list` of the resources this subscription names, in the list's order.
    func selection(in list: XDSResourceList) -> [Int] {
        if let positions = lastSelection.withLock({ $0.list.value === list ? $0.positions : nil }) { return positions }
        let positions = list.resources.indices.filter { wanted.contains(list.resources[$0].name) }
        lastSelection.withLock { $0 = (WeakResourceList(value: list), positions) }
        return positions
    }
}

/// A list held without keeping it alive.
struct WeakResourceList: @unchecked Sendable {
    weak var value: XDSResourceList?
}

/// Hands out one ``ResourceSubscription`` for equal name lists, for as long as some stream holds it.
final class ResourceSubscriptions: Sendable {
    private let table = Mutex<[[String]: WeakSubscription]>([:])

    private struct WeakSubscription: @unchecked Sendable {
        weak var value: ResourceSubscription?
    }

    /// The shared subscription to `names`.
    func subscription(to names: [String]) -> ResourceSubscription {
        table.withLock { table in
            if let shared = table[names]?.value { return shared }
            // Forget the lists no stream holds any more before adding one.
            table = table.filter { $0.value.value != nil }
            let made = ResourceSubscription(names: names)
            table[names] = WeakSubscription(value: made)
            return made
        }
    }
}
