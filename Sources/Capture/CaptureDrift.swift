import Netfilter

/// The differences between what a spec asks for and what the kernel holds.
public struct CaptureDrift: Sendable, Equatable {
    public enum Difference: Sendable, Equatable, CustomStringConvertible {
        case missingChain(String)
        case extraChain(String)
        case changedHook(chain: String, expected: String?, found: String?)
        case missingRule(chain: String, rule: String)
        case extraRule(chain: String, rule: String)
        case changedRule(chain: String, expected: String, found: String)
        case foreignObject(String)
        case missingRoutingRule(FirewallMarkRule)
        case extraRoutingRule(FirewallMarkRule)
        case missingRoute(LocalDefaultRoute)
        case extraRoute(LocalDefaultRoute)

        public var description: String {
            switch self {
            case .missingChain(let chain): "missing chain \(chain)"
            case .extraChain(let chain): "extra chain \(chain)"
            case .changedHook(let chain, let expected, let found):
                "chain \(chain): hook is \"\(found ?? "none")\", expected \"\(expected ?? "none")\""
            case .missingRule(let chain, let rule): "missing in \(chain): \(rule)"
            case .extraRule(let chain, let rule): "extra in \(chain): \(rule)"
            case .changedRule(let chain, let expected, let found): "changed in \(chain): \(found)\n    expected: \(expected)"
            case .foreignObject(let line): "not Capstan's: \(line)"
            case .missingRoutingRule(let rule): "missing ip rule: fwmark \(rule.mark) lookup \(rule.table) (\(rule.family.rawValue))"
            case .extraRoutingRule(let rule): "extra ip rule: fwmark \(rule.mark) lookup \(rule.table) (\(rule.family.rawValue))"
            case .missingRoute(let route): "missing route: local default dev lo table \(route.table) (\(route.family.rawValue))"
            case .extraRoute(let route): "extra route: local default dev lo table \(route.table) (\(route.family.rawValue))"
            }
        }
    }

    public var differences: [Difference]

    public var isClean: Bool { differences.isEmpty }

    public init(expected: Ruleset, installed: InstalledTable,
                expectedRouting: PolicyRoutingPlan, installedRouting: PolicyRoutingPlan) {
        var differences: [Difference] = []
        for chain in expected.chains {
            guard let found = installed.chain(named: chain.name) else {
                differences.append(.missingChain(chain.name))
                continue
            }
            if found.hookText != chain.hook?.text {
                differences.append(.changedHook(chain: chain.name, expected: chain.hook?.text, found: found.hookText))
            }
            differences += Self.compare(chain: chain.name, expected: chain.rules.map(\.text), found: found.rules.map(\.text))
        }
        for chain in installed.chains where expected.chain(named: chain.name) == nil {
            differences.append(.extraChain(chain.name))
        }
        differences += installed.otherLines.map(Difference.foreignObject)

        for rule in expectedRouting.rules where !installedRouting.rules.contains(where: rule.sameSelector) {
            differences.append(.missingRoutingRule(rule))
        }
        for rule in installedRouting.rules where !expectedRouting.rules.contains(where: rule.sameSelector) {
            differences.append(.extraRoutingRule(rule))
        }
        for route in expectedRouting.routes where !installedRouting.routes.contains(route) {
            differences.append(.missingRoute(route))
        }
        for route in installedRouting.routes where !expectedRouting.routes.contains(route) {
            differences.append(.extraRoute(route))
        }
        self.differences = differences
    }

    /// A line diff (longest common subsequence); a removal and an addition with the same comment at
    /// the same place read as one changed rule.
    static func compare(chain: String, expected: [String], found: [String]) -> [Difference] {
        let n = expected.count, m = found.count
        var common = [[Int]](repeating: [Int](repeating: 0, count: m + 1), count: n + 1)
        for i in stride(from: n - 1, through: 0, by: -1) {
            for j in stride(from: m - 1, through: 0, by: -1) {
                common[i][j] = expected[i] == found[j] ? common[i + 1][j + 1] + 1 : max(common[i + 1][j], common[i][j + 1])
            }
        }
        var differences: [Difference] = []
        var missing: [String] = [], extra: [String] = []
        func flush() {
            var extras = extra
            for rule in missing {
                let comment = InstalledTable.rule(rule).comment
                if let index = extras.firstIndex(where: { InstalledTable.rule($0).comment == comment }) {
                    differences.append(.changedRule(chain: chain, expected: rule, found: extras.remove(at: index)))
                } else {
                    differences.append(.missingRule(chain: chain, rule: rule))
                }
            }
            differences += extras.map { .extraRule(chain: chain, rule: $0) }
            missing = []
            extra = []
        }
        var i = 0, j = 0
        while i < n || j < m {
            if i < n, j < m, expected[i] == found[j] {
                flush()
                i += 1
                j += 1
            } else if j < m, i == n || common[i][j + 1] >= common[i + 1][j] {
                extra.append(found[j])
                j += 1
            } else {
                missing.append(expected[i])
                i += 1
            }
        }
        flush()
        return differences
    }
}
