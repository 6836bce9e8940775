import Netfilter

/// A connection to explain: `capstan status --trace tcp:10.0.0.5:8080 --uid 1000`.
public struct TraceQuery: Sendable, Equatable {
    public var transport: TransportProtocol
    public var destination: IPAddress
    public var destinationPort: UInt16
    /// The owner of the connecting socket (outbound only).
    public var uid: UInt32
    public var gid: UInt32
    /// Arriving from outside the pod rather than made inside it.
    public var inbound: Bool
    /// nil: some address outside the pod.
    public var source: IPAddress?
    /// Inbound: the interface the packet arrives on; nil: the kernel's route toward the source, or some
    /// interface other than `lo` and the ones the rules name.
    public var interface: String?

    public init(transport: TransportProtocol, destination: IPAddress, destinationPort: UInt16,
                uid: UInt32 = 0, gid: UInt32 = 0, inbound: Bool = false, source: IPAddress? = nil,
                interface: String? = nil) {
        self.transport = transport
        self.destination = destination
        self.destinationPort = destinationPort
        self.uid = uid
        self.gid = gid
        self.inbound = inbound
        self.source = source
        self.interface = interface
    }

    /// Parses `tcp:ADDR:PORT`, `udp:[ADDR6]:PORT` or `tcp:ADDR6:PORT`.
    public static func parseTarget(_ text: String) -> (TransportProtocol, IPAddress, UInt16)? {
        guard let colon = text.firstIndex(of: ":"),
              let transport = TransportProtocol(rawValue: text[..<colon].lowercased()) else { return nil }
        let rest = text[text.index(after: colon)...]
        guard let portColon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: portColon)...]), port > 0
        else { return nil }
        var host = rest[..<portColon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        guard let address = IPAddress(host) else { return nil }
        return (transport, address, port)
    }
}

/// What the installed rules do with a connection: where it ends up and which rules decided.
public struct PacketTrace: Sendable, Equatable {
    public enum Verdict: Sendable, Equatable {
        /// Redirected or TPROXY'd to a local port (the proxy's).
        case captured(port: UInt16, tproxy: Bool)
        /// No capture: the connection reaches its destination unchanged.
        case passes
        case dropped
        /// The kernel has no route: `connect` fails before any rule sees a packet.
        case noRoute
    }

    /// One rule that matched, in the order evaluation met them.
    public struct Step: Sendable, Equatable {
        public var chain: String
        public var rule: String
        public var comment: String
    }

    public var query: TraceQuery
    public var verdict: Verdict
    public var steps: [Step]
    /// The interface the packet leaves by (outbound) or arrives on (inbound).
    public var interface: String?
    /// Rules in the kernel that Capstan did not write: the trace cannot evaluate them and assumes no match.
    public var unrecognizedRules: [String]

    /// The rule that settled the outcome: the capture rule, or the last rule that let the packet go.
    public var decidingStep: Step? { steps.last { !$0.rule.contains("ct zone set") } }
}

extension CaptureEngine {
    /// Explains `query` against the rules installed in `namespace`.
    public static func trace(_ query: TraceQuery, in namespace: NetworkNamespace) throws -> PacketTrace {
        try namespace.run {
            let nft = try session()
            let routing = try routingSocket()
            guard let table = try listTable(nft) else {
                throw CaptureError("no \(Ruleset.family) \(Ruleset.tableName) table in this namespace: nothing is captured")
            }
            let spec = try? RulesetRenderer.recoverSpec(fromComments: table.specComments)
            var interface: String?
            do {
                if query.inbound {
                    interface = try query.interface
                        ?? query.source.flatMap { try routing.outputInterface(toward: $0) }
                } else {
                    interface = try routing.outputInterface(toward: query.destination)
                }
            } catch {
                throw CaptureError("route lookup", error)
            }
            if !query.inbound && interface == nil {
                return PacketTrace(query: query, verdict: .noRoute, steps: [], interface: nil, unrecognizedRules: [])
            }
            var evaluator = TraceEvaluator(table: table, model: spec.map(RulesetRenderer.render), query: query,
                                           interface: interface)
            return evaluator.run()
        }
    }
}

/// Walks the installed chains in hook order with the rule semantics of the rendered model.
struct TraceEvaluator {
    let table: InstalledTable
    let rulesByText: [String: Rule]
    let query: TraceQuery
    let interface: String?
    var mark: UInt32 = 0
    var connectionMark: UInt32 = 0
    var steps: [PacketTrace.Step] = []
    var unrecognized: [String] = []

    init(table: InstalledTable, model: Ruleset?, query: TraceQuery, interface: String?) {
        self.table = table
        var rules: [String: Rule] = [:]
        for chain in model?.chains ?? [] {
            for rule in chain.rules { rules[chain.name + "\u{0}" + rule.text] = rule }
        }
        self.rulesByText = rules
        self.query = query
        self.interface = interface
    }

    private enum Flow { case next, leave, verdict(PacketTrace.Verdict) }

    mutating func run() -> PacketTrace {
        // Netfilter priorities: raw (-300), mangle (-150), then nat (-100).
        let hooks = query.inbound ? ["raw_prerouting", "mangle_prerouting", "prerouting"]
                                  : ["raw_output", "mangle_output", "output"]
        var verdict = PacketTrace.Verdict.passes
        for hook in hooks {
            guard table.chain(named: hook) != nil else { continue }
            if case .verdict(let final) = evaluate(chain: hook), final != .passes {
                verdict = final
                break
            }
        }
        return PacketTrace(query: query, verdict: verdict, steps: steps, interface: interface, unrecognizedRules: unrecognized)
    }

    private mutating func evaluate(chain name: String) -> Flow {
        guard let chain = table.chain(named: name) else { return .next }
        for installed in chain.rules {
            guard let rule = rulesByText[name + "\u{0}" + installed.text] else {
                unrecognized.append("\(name): \(installed.text)")
                continue
            }
            guard rule.matches.allSatisfy(matches) else { continue }
            steps.append(.init(chain: name, rule: installed.text, comment: rule.comment))
            switch rule.action {
            case .return: return .leave
            case .jump(let target):
                if case .verdict(let verdict) = evaluate(chain: target) { return .verdict(verdict) }
            case .redirect(let port): return .verdict(.captured(port: port, tproxy: false))
            case .tproxy(_, let port, let newMark):
                mark = newMark
                return .verdict(.captured(port: port, tproxy: true))
            case .markAndAccept(let newMark):
                mark = newMark
                return .verdict(.passes)
            case .setMark(let newMark): mark = newMark
            case .saveMarkToConnection: connectionMark = mark
            case .restoreMarkFromConnection: mark = connectionMark
            case .conntrackZone, .none: break
            case .drop: return .verdict(.dropped)
            }
        }
        return .leave
    }

    private func matches(_ match: Match) -> Bool {
        let family = query.destination.family
        switch match {
        case .transport(let protocols):
            return protocols.contains(query.transport)
        case .inputInterface(let name, let negated):
            return ((query.inbound ? interface : nil) == name) != negated
        case .outputInterface(let name, let negated):
            return ((query.inbound ? nil : interface) == name) != negated
        case .source(let prefixes, let negated):
            guard prefixes.first?.family == family else { return false }
            return (query.source.map { address in prefixes.contains { $0.contains(address) } } ?? false) != negated
        case .destination(let prefixes, let negated):
            guard prefixes.first?.family == family else { return false }
            return prefixes.contains { $0.contains(query.destination) } != negated
        case .destinationPort(let proto, let ports, let negated):
            guard proto == nil || proto == query.transport else { return false }
            return ports.contains(query.destinationPort) != negated
        case .sourcePort:
            // A traced connection comes from an ephemeral port; Capstan's source-port rules name only
            // the DNS ports (53, 15053), which an ephemeral port never is.
            return false
        case .socketUser(let ids, let negated):
            // Packets from outside have no local socket: `meta skuid` never matches them.
            return !query.inbound && ids.contains(query.uid) != negated
        case .socketGroup(let ids, let negated):
            return !query.inbound && ids.contains(query.gid) != negated
        case .mark(let value, let negated):
            return (mark == value) != negated
        case .connectionMark(let value):
            return connectionMark == value
        case .connectionState(let states):
            return states.contains(.new)
        }
    }
}
