import Routing

/// Where a request hash lands among a cluster's endpoints, for RING_HASH and MAGLEV: built once per
/// version of the cluster (its endpoints and weights), read without locks by every event loop. The
/// same endpoints give the same table on every proxy, and a changed endpoint moves only its own share.
enum ConsistentHashTable: Sendable {
    /// Envoy's ring: each endpoint hashed onto a circle at `weight`-proportional many points (its
    /// address and a counter, by XXH64); a request goes to the first point at or after its hash.
    case ring(hashes: [UInt64], endpoints: [Int])
    /// Maglev's lookup table: each endpoint fills slots in its own permutation of the table, in turns
    /// by weight; a request goes to the slot of its hash modulo the (prime) size.
    case maglev([Int])

    /// The index of the endpoint for `hash`.
    func endpoint(for hash: UInt64) -> Int {
        switch self {
        case .ring(let hashes, let endpoints):
            // The first point at or after `hash`, wrapping past the last.
            var low = 0, high = hashes.count
            while low < high {
                let middle = (low + high) / 2
                if hashes[middle] < hash { low = middle + 1 } else { high = middle }
            }
            return endpoints[low == hashes.count ? 0 : low]
        case .maglev(let table):
            return table[Int(hash % UInt64(table.count))]
        }
    }

    /// A ring of between `minimumSize` and `maximumSize` points: each endpoint gets its weight's share of
    /// at least `minimumSize`, and at least one point.
    static func ring(keys: [String], weights: [Int], minimumSize: Int, maximumSize: Int) -> Self {
        let total = weights.reduce(0, +)
        let smallest = Double(weights.min() ?? 1) / Double(max(total, 1))
        // Enough points that the lightest endpoint has one, within the bounds.
        let scale = min(max(Double(minimumSize), (1 / smallest).rounded(.up)), Double(maximumSize))
        var points: [(hash: UInt64, endpoint: Int)] = []
        points.reserveCapacity(Int(scale) + keys.count)
        for (index, key) in keys.enumerated() {
            let count = max(1, Int((scale * Double(weights[index]) / Double(total)).rounded(.up)))
            for point in 0..<count { points.append((XXHash64.hash("\(key)_\(point)"), index)) }
        }
        points.sort { $0.hash < $1.hash || ($0.hash == $1.hash && $0.endpoint < $1.endpoint) }
        return .ring(hashes: points.map(\.hash), endpoints: points.map(\.endpoint))
    }

    /// Maglev's table of `size` slots (a prime): endpoint `i` starts at `offset(i)` and steps by
    /// `skip(i)`, both from its key; in each turn an endpoint takes slots in proportion to its weight.
    static func maglev(keys: [String], weights: [Int], size: Int) -> Self {
        let offsets = keys.map { Int(XXHash64.hash($0) % UInt64(size)) }
        let skips = keys.map { Int(XXHash64.hash($0, seed: 1) % UInt64(size - 1)) + 1 }
        var next = [Int](repeating: 0, count: keys.count)
        var table = [Int](repeating: -1, count: size)
        let heaviest = weights.max() ?? 1
        // Weighted turns (Envoy's): an endpoint takes a slot when its credit, growing by its weight each
        // turn, reaches the heaviest weight.
        var credit = [Int](repeating: 0, count: keys.count)
        var filled = 0
        while filled < size {
            for index in keys.indices {
                credit[index] += weights[index]
                guard credit[index] >= heaviest else { continue }
                credit[index] -= heaviest
                var slot = (offsets[index] + next[index] * skips[index]) % size
                while table[slot] >= 0 {
                    next[index] += 1
                    slot = (offsets[index] + next[index] * skips[index]) % size
                }
                table[slot] = index
                next[index] += 1
                filled += 1
                if filled == size { break }
            }
        }
        return .maglev(table)
    }
}
