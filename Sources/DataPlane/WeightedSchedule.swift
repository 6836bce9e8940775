/// Weighted round robin without a per-pick lock: ticket `n` (one per connection, from an atomic counter)
/// lands at `n × stride mod total` on the line where each endpoint holds as many places as its weight.
/// The stride is coprime with the total, so each run of `total` tickets visits every place once (each
/// endpoint gets exactly its share), and being near the total's golden section it spreads an endpoint's
/// places over the run instead of giving them in a row.
struct WeightedSchedule: Sendable {
    /// Where each endpoint's places end on the line.
    private let ends: [Int]
    private let stride: Int

    init(weights: [Int]) {
        var total = 0
        ends = weights.map { weight in
            total += weight
            return total
        }
        var stride = max(1, Int(Double(total) * 0.618))
        while Self.greatestCommonDivisor(stride, total) != 1 { stride += 1 }
        self.stride = stride
    }

    func endpoint(for ticket: UInt) -> Int {
        let total = UInt(ends.last ?? 1)
        // Below total², so the remainder of the full-width product is exact.
        let place = Int(total.dividingFullWidth((ticket % total).multipliedFullWidth(by: UInt(stride))).remainder)
        var low = 0, high = ends.count - 1
        while low < high {
            let middle = (low + high) / 2
            if ends[middle] > place { high = middle } else { low = middle + 1 }
        }
        return low
    }

    private static func greatestCommonDivisor(_ a: Int, _ b: Int) -> Int { b == 0 ? a : greatestCommonDivisor(b, a % b) }
}
