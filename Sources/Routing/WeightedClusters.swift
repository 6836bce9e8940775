/// Envoy's `weighted_clusters`: each request goes to one cluster, chosen by a random value reduced modulo
/// the total weight and looked up in the clusters' consecutive weight ranges, in configured order.
/// Clusters of weight 0 are kept (they have an empty range) so decisions name clusters as configured.
public struct WeightedClusters: Sendable {
    /// Each cluster's forwarding, with the end of its weight range (exclusive), ascending.
    let clusters: [(forwarding: Forwarding, rangeEnd: UInt64)]
    public let totalWeight: UInt64

    init(_ clusters: [(forwarding: Forwarding, weight: UInt32)]) {
        var end: UInt64 = 0
        self.clusters = clusters.map { cluster in
            end += UInt64(cluster.weight)
            return (cluster.forwarding, end)
        }
        totalWeight = end
    }

    /// The cluster for `randomValue` (the decoder refuses a total weight of 0).
    public func choose(_ randomValue: UInt64) -> Forwarding {
        let value = randomValue % totalWeight
        for cluster in clusters where value < cluster.rangeEnd { return cluster.forwarding }
        return clusters[clusters.count - 1].forwarding
    }
}
