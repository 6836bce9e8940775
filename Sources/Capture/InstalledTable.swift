import Netfilter

/// The `inet capstan` table as the kernel lists it: chains, rules, comments and live counters.
public struct InstalledTable: Sendable, Equatable {
    public struct InstalledRule: Sendable, Equatable {
        /// The rule as listed, with its counter reset to zero so it compares with ``Rule/text``.
        public var text: String
        public var comment: String?
        public var packets: UInt64
        public var bytes: UInt64
    }

    public struct InstalledChain: Sendable, Equatable {
        public var name: String
        /// `type … hook … priority …; policy …;` for base chains.
        public var hookText: String?
        public var rules: [InstalledRule]
    }

    public var chains: [InstalledChain]
    /// Anything else inside the table (sets, maps, flowtables …): never ours.
    public var otherLines: [String]

    public func chain(named name: String) -> InstalledChain? {
        chains.first { $0.name == name }
    }

    /// The chains in the order a packet meets them: each hook's base chain (prerouting path, then output
    /// path), followed depth-first by the chains it jumps to; unreached chains last.
    public var chainsInTraversalOrder: [InstalledChain] {
        let hooks = ["raw_prerouting", "mangle_prerouting", "prerouting", "raw_output", "mangle_output", "output"]
        var ordered: [InstalledChain] = []
        var seen = Set<String>()
        func visit(_ name: String) {
            guard !seen.contains(name), let chain = chain(named: name) else { return }
            seen.insert(name)
            ordered.append(chain)
            for rule in chain.rules {
                if let target = rule.text.split(separator: " ").split(separator: "jump").dropFirst().first?.first {
                    visit(String(target))
                }
            }
        }
        hooks.forEach(visit)
        chains.map(\.name).forEach(visit)
        return ordered
    }

    /// Parses `nft list table inet capstan` output.
    public init(listing: String) {
        chains = []
        otherLines = []
        var current: InstalledChain?
        var depth = 0
        for rawLine in listing.split(separator: "\n") {
            let line = rawLine.trimmingSpaces()
            if line.isEmpty { continue }
            if line.hasPrefix("table ") && line.hasSuffix("{") {
                depth = 1
                continue
            }
            if depth == 1, line.hasPrefix("chain "), line.hasSuffix("{") {
                let name = line.dropFirst("chain ".count).dropLast().trimmingSpaces()
                current = InstalledChain(name: String(name), hookText: nil, rules: [])
                depth = 2
                continue
            }
            if line == "}" {
                if depth == 2, let chain = current { chains.append(chain) }
                current = nil
                depth = max(0, depth - 1)
                continue
            }
            guard depth == 2, current != nil else {
                if depth >= 1 { otherLines.append(String(line)) }
                if line.hasSuffix("{") { depth += 1 }
                continue
            }
            if line.hasPrefix("type ") {
                current!.hookText = String(line)
            } else if line.hasPrefix("comment ") || line.hasPrefix("policy ") {
                continue
            } else {
                current!.rules.append(Self.rule(String(line)))
            }
        }
    }

    static func rule(_ line: String) -> InstalledRule {
        var text = line
        var packets: UInt64 = 0
        var bytes: UInt64 = 0
        if let counter = line.firstRange(of: "counter packets ") {
            // "counter packets N bytes M[ rest]"
            let fields = line[counter.upperBound...].split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
            if fields.count >= 3, fields[1] == "bytes", let p = UInt64(fields[0]), let b = UInt64(fields[2]) {
                packets = p
                bytes = b
                let rest: Substring = fields.count == 4 ? " " + fields[3] : ""
                text = line[..<counter.lowerBound] + "counter packets 0 bytes 0" + rest
            }
        }
        var comment: String?
        if let start = line.firstRange(of: " comment \""), line.hasSuffix("\"") {
            comment = String(line[start.upperBound..<line.index(before: line.endIndex)])
        }
        return InstalledRule(text: text, comment: comment, packets: packets, bytes: bytes)
    }
}
