import Netfilter

/// The nftables table Capstan owns in a namespace, as chains of rules that can be rendered to nftables'
/// own text form and evaluated against a packet (for `status --trace`).
///
/// Rules render exactly as `nft list` prints them back, so the text of a rule read from the kernel can be
/// compared with the text of the rule the spec asks for.
public struct Ruleset: Sendable, Equatable {
    /// One `inet` table covers IPv4 and IPv6.
    public static let family = "inet"
    public static let tableName = "capstan"

    public var chains: [Chain]

    public init(chains: [Chain]) {
        self.chains = chains
    }

    public func chain(named name: String) -> Chain? {
        chains.first { $0.name == name }
    }

    /// The table as one nftables block, chains in dependency order (jump targets first).
    public var tableText: String {
        var text = "table \(Self.family) \(Self.tableName) {\n"
        text += chains.map(\.text).joined(separator: "\n")
        text += "}\n"
        return text
    }

    /// The transaction that replaces whatever table is there with this one, atomically.
    public var replacementScript: String {
        Self.removalScript + tableText
    }

    /// Removes the table if it exists (creating it first makes the delete always valid).
    public static let removalScript = """
        add table \(family) \(tableName)
        delete table \(family) \(tableName)

        """
}

/// A chain: a base chain hooked into netfilter, or a regular chain reached by `jump`.
public struct Chain: Sendable, Equatable {
    public struct Hook: Sendable, Equatable {
        public var type: String
        public var hook: String
        public var priority: String

        /// The header line as nftables lists it.
        public var text: String { "type \(type) hook \(hook) priority \(priority); policy accept;" }
    }

    public var name: String
    public var hook: Hook?
    public var rules: [Rule]

    public init(name: String, hook: Hook? = nil, rules: [Rule] = []) {
        self.name = name
        self.hook = hook
        self.rules = rules
    }

    var text: String {
        var text = "\tchain \(name) {\n"
        if let hook { text += "\t\t\(hook.text)\n" }
        for rule in rules { text += "\t\t\(rule.text)\n" }
        text += "\t}\n"
        return text
    }
}

public enum TransportProtocol: String, Sendable, Hashable, CaseIterable, Codable {
    case tcp, udp
}

/// One condition of a rule.
public enum Match: Sendable, Equatable {
    case transport([TransportProtocol])
    case inputInterface(String, negated: Bool = false)
    case outputInterface(String, negated: Bool = false)
    /// All prefixes of one family.
    case source([IPPrefix], negated: Bool = false)
    case destination([IPPrefix], negated: Bool = false)
    /// `nil` protocol: the port of whichever transport an earlier `.transport` match allowed (`th dport`).
    case destinationPort(TransportProtocol?, [UInt16], negated: Bool = false)
    case sourcePort(TransportProtocol, [UInt16])
    case socketUser([UInt32], negated: Bool = false)
    case socketGroup([UInt32], negated: Bool = false)
    case mark(UInt32, negated: Bool = false)
    case connectionMark(UInt32)
    case connectionState([ConnectionState])

    public enum ConnectionState: String, Sendable, Equatable {
        // In the kernel's bit order, which is the order nftables prints.
        case invalid, established, related, new
    }

    var text: String {
        switch self {
        case .transport(let protocols):
            return "meta l4proto \(Self.set(protocols.map(\.rawValue)))"
        case .inputInterface(let name, let negated):
            return "iifname \(Self.not(negated))\"\(name)\""
        case .outputInterface(let name, let negated):
            return "oifname \(Self.not(negated))\"\(name)\""
        case .source(let prefixes, let negated):
            return "\(Self.family(prefixes)) saddr \(Self.not(negated))\(Self.set(prefixes.sorted().map(\.description)))"
        case .destination(let prefixes, let negated):
            return "\(Self.family(prefixes)) daddr \(Self.not(negated))\(Self.set(prefixes.sorted().map(\.description)))"
        case .destinationPort(let proto, let ports, let negated):
            return "\(proto?.rawValue ?? "th") dport \(Self.not(negated))\(Self.set(ports.sorted().map(String.init)))"
        case .sourcePort(let proto, let ports):
            return "\(proto.rawValue) sport \(Self.set(ports.sorted().map(String.init)))"
        case .socketUser(let ids, let negated):
            return "meta skuid \(Self.not(negated))\(Self.set(ids.sorted().map(String.init)))"
        case .socketGroup(let ids, let negated):
            return "meta skgid \(Self.not(negated))\(Self.set(ids.sorted().map(String.init)))"
        case .mark(let mark, let negated):
            return "meta mark \(Self.not(negated))\(Self.hex(mark))"
        case .connectionMark(let mark):
            return "ct mark \(Self.hex(mark))"
        case .connectionState(let states):
            return "ct state \(states.map(\.rawValue).joined(separator: ","))"
        }
    }

    /// Whether the match needs a transport header that it names itself (so `meta l4proto` is implied).
    var impliedTransport: TransportProtocol? {
        switch self {
        case .destinationPort(let proto?, _, _): proto
        case .sourcePort(let proto, _): proto
        default: nil
        }
    }

    static func not(_ negated: Bool) -> String { negated ? "!= " : "" }

    static func set(_ items: [String]) -> String {
        items.count == 1 ? items[0] : "{ \(items.joined(separator: ", ")) }"
    }

    static func family(_ prefixes: [IPPrefix]) -> String {
        prefixes.first?.family == .ipv6 ? "ip6" : "ip"
    }

    static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }
}

/// What a rule does when it matches.
public enum Action: Sendable, Equatable {
    /// Leave this chain: the packet is not captured by it.
    case `return`
    case jump(String)
    /// NAT to a local port.
    case redirect(UInt16)
    /// Assign the packet to the local socket on `port`, mark it, and accept.
    case tproxy(AddressFamily, port: UInt16, mark: UInt32)
    case markAndAccept(UInt32)
    case setMark(UInt32)
    /// Copy the packet mark into the connection (`CONNMARK --save-mark`).
    case saveMarkToConnection
    /// Copy the connection mark into the packet (`CONNMARK --restore-mark`).
    case restoreMarkFromConnection
    case conntrackZone(UInt16)
    case drop
    /// No statement beyond the counter: a record-keeping rule in an unhooked chain.
    case none

    var text: String {
        switch self {
        case .return: "return"
        case .jump(let chain): "jump \(chain)"
        case .redirect(let port): "redirect to :\(port)"
        case .tproxy(let family, let port, let mark):
            "tproxy \(family == .ipv4 ? "ip" : "ip6") to :\(port) meta mark set \(Match.hex(mark)) accept"
        case .markAndAccept(let mark): "meta mark set \(Match.hex(mark)) accept"
        case .setMark(let mark): "meta mark set \(Match.hex(mark))"
        case .saveMarkToConnection: "ct mark set meta mark"
        case .restoreMarkFromConnection: "meta mark set ct mark"
        case .conntrackZone(let zone): "ct zone set \(zone)"
        case .drop: "drop"
        case .none: ""
        }
    }
}

/// A rule: conditions, a counter, an action, and a comment that says why it exists.
public struct Rule: Sendable, Equatable {
    public var matches: [Match]
    public var action: Action
    public var comment: String

    public init(_ matches: [Match], _ action: Action, comment: String) {
        precondition(comment.utf8.count <= 128 && !comment.utf8.contains(UInt8(ascii: "\"")),
                     "nftables comments: 128 bytes, no quotes")
        self.matches = matches
        self.action = action
        self.comment = comment
    }

    /// The rule as `nft list` prints it, with its counter at zero.
    public var text: String { text(counter: "counter packets 0 bytes 0") }

    /// The rule with the counter statement as given (the kernel listing carries live counts).
    func text(counter: String) -> String {
        var parts: [String] = []
        let implied = matches.compactMap(\.impliedTransport)
        for match in matches {
            // nftables drops `meta l4proto tcp` when a `tcp …` match follows: it is implied.
            if case .transport(let protocols) = match, protocols.count == 1, implied.contains(protocols[0]) { continue }
            parts.append(match.text)
        }
        parts.append(counter)
        if action != .none { parts.append(action.text) }
        parts.append("comment \"\(comment)\"")
        return parts.joined(separator: " ")
    }
}
