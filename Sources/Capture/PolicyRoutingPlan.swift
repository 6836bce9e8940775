import Netfilter

/// The policy routing TPROXY needs: `fwmark MARK lookup TABLE` and `local default dev lo table TABLE`,
/// for IPv4 and, when the namespace has it, IPv6.
public struct PolicyRoutingPlan: Sendable, Equatable {
    public var rules: [FirewallMarkRule]
    public var routes: [LocalDefaultRoute]

    public static let none = PolicyRoutingPlan(rules: [], routes: [])

    public init(rules: [FirewallMarkRule], routes: [LocalDefaultRoute]) {
        self.rules = rules
        self.routes = routes
    }

    /// As istio-iptables: only TPROXY mode with inbound capture on needs routing.
    public init(spec: CaptureSpec, families: [AddressFamily]) {
        guard spec.interceptionMode == .tproxy, spec.capturesInbound else {
            self = .none
            return
        }
        rules = families.map { FirewallMarkRule(family: $0, mark: spec.tproxyMark, table: spec.tproxyRouteTable) }
        routes = families.map { LocalDefaultRoute(family: $0, table: spec.tproxyRouteTable) }
    }

    public var isEmpty: Bool { rules.isEmpty && routes.isEmpty }

    /// What `ip` would be told, for `--dry-run` and `status`.
    public var commandLines: [String] {
        rules.map { "ip \($0.family == .ipv6 ? "-6 " : "")rule add fwmark \($0.mark) lookup \($0.table)" }
            + routes.map { "ip \($0.family == .ipv6 ? "-6 " : "")route add local default dev lo table \($0.table)" }
    }
}
