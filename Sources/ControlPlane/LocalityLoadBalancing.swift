import SwiftProtobuf
import XDS

/// A DestinationRule's `loadBalancer.localityLbSetting`, and how istiod applies it (or its default) to a
/// service's endpoints for one proxy, by that proxy's locality (`region/zone/subzone`):
/// - `distribute`: the first rule whose `from` matches the proxy sets the localities' weights (a `to`
///   pattern's weight is shared among the localities it matches, by their own weights); localities no
///   `to` matches get no endpoints;
/// - otherwise, when the cluster has outlier detection (without it Envoy never fails over) and the
///   setting is not disabled: priorities by how much of the proxy's locality an endpoint's shares (0 the
///   same region, zone and subzone; 1 region and zone; 2 region; 3 none), the other regions a `failover`
///   rule does not name for the proxy's region pushed after those it names; or with `failoverPriority`,
///   by how many of the listed labels, in order, an endpoint shares with the proxy (and, when `failover`
///   is given too, by locality within each of those).
/// Priorities are then renumbered from 0 without gaps, as Envoy expects.
public struct LocalityLoadBalancing: Sendable, Equatable {
    /// One `distribute` rule: from the proxies of `from`, `to` localities with percentages summing to 100.
    public struct Distribute: Sendable, Equatable {
        public var from: String
        public var to: [(locality: String, weight: Int)]

        public static func == (a: Distribute, b: Distribute) -> Bool {
            a.from == b.from && a.to.map(\.locality) == b.to.map(\.locality) && a.to.map(\.weight) == b.to.map(\.weight)
        }
    }

    /// `enabled`: false turns locality load balancing off for the rule; nil: not given (on).
    public var enabled: Bool?
    public var distribute: [Distribute] = []
    /// `failover`: region pairs.
    public var failover: [(from: String, to: String)] = []
    /// `failoverPriority`: label keys, most important first.
    public var failoverPriority: [String] = []

    public init(enabled: Bool? = nil) { self.enabled = enabled }

    public static func == (a: Self, b: Self) -> Bool {
        a.enabled == b.enabled && a.distribute == b.distribute && a.failover.map(\.from) == b.failover.map(\.from)
            && a.failover.map(\.to) == b.failover.map(\.to) && a.failoverPriority == b.failoverPriority
    }

    /// `region/zone/subzone` as three parts (missing ones empty).
    static func parts(_ locality: String) -> [String] {
        Array((locality.split(separator: "/", omittingEmptySubsequences: false).map(String.init) + ["", "", ""]).prefix(3))
    }

    static func parts(_ locality: Envoy_Config_Core_V3_Locality) -> [String] { [locality.region, locality.zone, locality.subZone] }

    /// Whether `locality` is matched by `pattern` (`region/zone/subzone`, `*` standing for anything from
    /// there on; missing parts match anything), as istiod's `LocalityMatch`.
    static func matches(_ locality: [String], pattern: String) -> Bool {
        for (index, part) in pattern.split(separator: "/", omittingEmptySubsequences: false).enumerated() where index < 3 {
            if part == "*" { return true }
            if locality[index] != part { return false }
        }
        return true
    }

    /// istiod's `LbPriority`: 0 when region, zone and subzone are the proxy's, 1 for region and zone, 2
    /// for region, else 3.
    static func priority(of locality: [String], proxy: [String]) -> Int {
        guard locality[0] == proxy[0] else { return 3 }
        guard locality[1] == proxy[1] else { return 2 }
        return locality[2] == proxy[2] ? 0 : 1
    }

    /// `assignment` as the proxy at `proxyLocality` (with labels `proxyLabels`) gets it. `failoverAllowed`:
    /// the cluster has outlier detection. `endpointLabels`: each group's endpoints' labels, for
    /// `failoverPriority` (by group index, the labels of the group's endpoints).
    func applied(to assignment: Envoy_Config_Endpoint_V3_ClusterLoadAssignment, proxyLocality: String, proxyLabels: [String: String],
                 endpointLabels: [[[String: String]]], failoverAllowed: Bool) -> Envoy_Config_Endpoint_V3_ClusterLoadAssignment {
        var assignment = assignment
        let proxy = Self.parts(proxyLocality)
        if !distribute.isEmpty {
            guard let rule = distribute.first(where: { Self.matches(proxy, pattern: $0.from) }) else { return assignment }
            var unmatched = Set(assignment.endpoints.indices)
            for (pattern, weight) in rule.to {
                var own: [Int: UInt32] = [:]
                for index in assignment.endpoints.indices where unmatched.contains(index)
                    && Self.matches(Self.parts(assignment.endpoints[index].locality), pattern: pattern) {
                    unmatched.remove(index)
                    own[index] = assignment.endpoints[index].hasLoadBalancingWeight ? assignment.endpoints[index].loadBalancingWeight.value : 1
                }
                let total = own.values.reduce(0, +)
                for (index, original) in own where total > 0 {
                    let share = (Double(original) * Double(weight) / Double(total)).rounded(.up)
                    if share > 0 { assignment.endpoints[index].loadBalancingWeight = Google_Protobuf_UInt32Value(UInt32(share)) }
                }
            }
            for index in unmatched { assignment.endpoints[index].lbEndpoints = [] }
            return assignment
        }
        guard failoverAllowed, enabled != false else { return assignment }
        if !failoverPriority.isEmpty {
            // Groups split by how many labels (in order) each endpoint shares with the proxy.
            var groups: [Envoy_Config_Endpoint_V3_LocalityLbEndpoints] = []
            for (index, group) in assignment.endpoints.enumerated() {
                var byPriority: [Int: [Envoy_Config_Endpoint_V3_LbEndpoint]] = [:]
                for (position, endpoint) in group.lbEndpoints.enumerated() {
                    let labels = endpointLabels.indices.contains(index) && endpointLabels[index].indices.contains(position)
                        ? endpointLabels[index][position] : [:]
                    var shared = 0
                    for key in failoverPriority {
                        guard let value = proxyLabels[key], labels[key] == value else { break }
                        shared += 1
                    }
                    byPriority[failoverPriority.count - shared, default: []].append(endpoint)
                }
                for (priority, endpoints) in byPriority.sorted(by: { $0.key < $1.key }) {
                    var split = group
                    split.lbEndpoints = endpoints
                    split.priority = UInt32(priority)
                    if split.hasLoadBalancingWeight {
                        split.loadBalancingWeight = Google_Protobuf_UInt32Value(UInt32(clamping: endpoints.reduce(0) {
                            $0 + Int($1.hasLoadBalancingWeight ? $1.loadBalancingWeight.value : 1) }))
                    }
                    groups.append(split)
                }
            }
            assignment.endpoints = groups
        }
        // By locality (with failoverPriority, only when failover is given too, within each label priority).
        if failoverPriority.isEmpty || !failover.isEmpty {
            for index in assignment.endpoints.indices {
                let locality = Self.parts(assignment.endpoints[index].locality)
                var priority = Self.priority(of: locality, proxy: proxy)
                if priority == 3, let rule = failover.first(where: { $0.from == proxy[0] }), locality[0] != rule.to {
                    priority = 4
                }
                assignment.endpoints[index].priority = assignment.endpoints[index].priority * 5 + UInt32(priority)
            }
        }
        // Renumbered 0, 1, 2 … in order, without gaps.
        let used = Set(assignment.endpoints.map(\.priority)).sorted()
        let rank = Dictionary(uniqueKeysWithValues: used.enumerated().map { ($1, UInt32($0)) })
        for index in assignment.endpoints.indices { assignment.endpoints[index].priority = rank[assignment.endpoints[index].priority] ?? 0 }
        return assignment
    }

    /// Whether the setting changes anything for a cluster (`failoverAllowed`: it has outlier detection).
    func appliesTo(failoverAllowed: Bool) -> Bool {
        !distribute.isEmpty || (failoverAllowed && enabled != false)
    }
}
