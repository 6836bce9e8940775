import Netfilter

/// What `capstan status` reads from a namespace: the table, the spec it records, the policy routing and
/// the listeners, plus the drift against a fresh rendering of that spec.
public struct InstalledCapture: Sendable {
    public var table: InstalledTable?
    /// The spec recovered from the table's record; nil when there is no table or no record.
    public var spec: CaptureSpec?
    /// Set when the table has a record that does not parse.
    public var specProblem: String?
    public var routing: PolicyRoutingPlan
    public var facts: NamespaceFacts
    /// What the recovered spec asks for (nil without a spec).
    public var expected: Ruleset?
    public var expectedRouting: PolicyRoutingPlan
    public var drift: CaptureDrift?

    /// Rules present and as their spec asks.
    public var isIntact: Bool { table != nil && spec != nil && drift?.isClean == true }
}

/// The outcome of `capstan init`.
public enum ApplyOutcome: Sendable, Equatable {
    /// The table and routing were written.
    case applied
    /// The kernel already held exactly this capture; nothing was written (counters kept).
    case unchanged
}

/// Programs, reads and removes capture in a network namespace. Each call enters the namespace on a
/// thread of its own and creates its libnftables and rtnetlink handles there.
public enum CaptureEngine {
    /// Replaces whatever capture the namespace has with `spec`, as one nftables transaction; policy routing
    /// is added first and rolled back if the transaction fails, so a failure leaves the kernel as it was.
    public static func apply(_ spec: CaptureSpec, in namespace: NetworkNamespace) throws -> ApplyOutcome {
        try applyKeepingHandles(spec, in: namespace).outcome
    }

    /// ``apply(_:in:)`` that hands back the libnftables and rtnetlink handles instead of closing them.
    ///
    /// Closing them waits for the kernel to free the committed transaction (an RCU grace period, about
    /// 10 ms); the rules are in force before that. A long-running agent releases them off its request path.
    public static func applyKeepingHandles(_ spec: CaptureSpec, in namespace: NetworkNamespace) throws -> (outcome: ApplyOutcome, handles: KernelHandles) {
        try namespace.run { try applyHere(spec) }
    }

    /// The apply, on a thread already inside the namespace.
    private static func applyHere(_ spec: CaptureSpec) throws -> (outcome: ApplyOutcome, handles: KernelHandles) {
        let facts = NamespaceFacts.current()
        let ruleset = RulesetRenderer.render(spec)
        let plan = PolicyRoutingPlan(spec: spec, families: facts.families)
        let nft = try session()
        let routing = try routingSocket()
        let handles = KernelHandles(nft, routing)
        let added = try addMissingRouting(plan, with: routing)
        let outcome: ApplyOutcome
        do {
            // Most namespaces have no table yet: create it in one go, which fails if one exists.
            outcome = try createTable(ruleset, with: nft) ? .applied
                : try replaceTable(ruleset, routing: plan, routingAdded: !added.isEmpty, nft: nft, routingSocket: routing)
        } catch {
            remove(added, with: routing)
            throw CaptureError("programming capture", error)
        }
        if outcome == .applied && facts.hasIPv6 {
            // The proxy binds ::6 for inbound passthrough over IPv6, as Istio does.
            try? routing.addLoopbackAddress(IPAddress.inboundPassthroughV6)
        }
        return (outcome, handles)
    }

    /// Adds the rules and routes of `plan` that are missing; returns what it added (for rollback).
    static func addMissingRouting(_ plan: PolicyRoutingPlan, with routing: RoutingSocket) throws -> PolicyRoutingPlan {
        let present = try installedRouting(routing, like: plan)
        var added = PolicyRoutingPlan.none
        do {
            for rule in plan.rules where !present.rules.contains(where: rule.sameSelector) {
                try routing.add(rule)
                added.rules.append(rule)
            }
            for route in plan.routes where !present.routes.contains(route) {
                try routing.add(route)
                added.routes.append(route)
            }
        } catch {
            remove(added, with: routing)
            throw CaptureError("programming policy routing", error)
        }
        return added
    }

    /// Replaces an existing table unless it already is `ruleset`, and removes routing the previous spec
    /// needed and this one does not.
    static func replaceTable(_ ruleset: Ruleset, routing plan: PolicyRoutingPlan, routingAdded: Bool,
                             nft: NFTablesSession, routingSocket: RoutingSocket) throws -> ApplyOutcome {
        let previous = try listTable(nft)
        let previousSpec = previous.flatMap { try? RulesetRenderer.recoverSpec(fromComments: $0.specComments) }
        let stale = previousSpec.map { PolicyRoutingPlan(spec: $0, families: AddressFamily.allCases).subtracting(plan) } ?? .none
        let sameTable = previous.map {
            CaptureDrift(expected: ruleset, installed: $0, expectedRouting: .none, installedRouting: .none).isClean
        } ?? false
        let staleRouting = try installedRouting(routingSocket, like: stale)
        if sameTable && staleRouting.isEmpty && !routingAdded {
            return .unchanged
        }
        if !sameTable {
            try nft.run(ruleset.replacementScript)
        }
        remove(staleRouting, with: routingSocket)
        return .applied
    }

    /// Creates the table if the namespace has none; false if one exists already.
    static func createTable(_ ruleset: Ruleset, with nft: NFTablesSession) throws -> Bool {
        do {
            try nft.run("create table \(Ruleset.family) \(Ruleset.tableName)\n" + ruleset.tableText)
        } catch {
            if error.message.contains("File exists") { return false }
            throw error
        }
        return true
    }

    /// Removes the table and the policy routing of both the recorded spec and `spec` (the flags given).
    /// Removing what is not there is not an error.
    public static func remove(_ spec: CaptureSpec, in namespace: NetworkNamespace) throws {
        try namespace.run {
            let nft = try session()
            let routing = try routingSocket()
            let recorded = try listTable(nft).flatMap { try? RulesetRenderer.recoverSpec(fromComments: $0.specComments) }
            do {
                try nft.run(Ruleset.removalScript)
            } catch {
                throw CaptureError("removing table \(Ruleset.family) \(Ruleset.tableName)", error)
            }
            for candidate in [recorded, spec].compactMap({ $0 }) {
                remove(try installedRouting(routing, like: PolicyRoutingPlan(routingOf: candidate)), with: routing)
            }
        }
    }

    /// Reads the capture a namespace holds and checks it against its own recorded spec.
    public static func inspect(in namespace: NetworkNamespace, fallback: CaptureSpec = CaptureSpec()) throws -> InstalledCapture {
        try namespace.run {
            let facts = NamespaceFacts.current(includingListeners: true)
            let nft = try session()
            let routing = try routingSocket()
            let table = try listTable(nft)
            var spec: CaptureSpec?
            var specProblem: String?
            if let table {
                do {
                    spec = try RulesetRenderer.recoverSpec(fromComments: table.specComments)
                    if spec == nil { specProblem = "the table has no capstan spec record" }
                } catch {
                    specProblem = "the table's spec record does not parse: \(error)"
                }
            }
            // Routing is looked up for the recorded mark and table, or the defaults when nothing is recorded.
            let probe = PolicyRoutingPlan(routingOf: spec ?? fallback)
            let installed = try installedRouting(routing, like: probe)
            let expected = spec.map(RulesetRenderer.render)
            let expectedRouting = spec.map { PolicyRoutingPlan(spec: $0, families: facts.families) } ?? .none
            var drift: CaptureDrift?
            if let expected, let table {
                drift = CaptureDrift(expected: expected, installed: table, expectedRouting: expectedRouting,
                                     installedRouting: installed)
            }
            return InstalledCapture(table: table, spec: spec, specProblem: specProblem, routing: installed, facts: facts,
                                    expected: expected, expectedRouting: expectedRouting, drift: drift)
        }
    }

    // MARK: Steps

    static func session() throws -> NFTablesSession {
        do { return try NFTablesSession() } catch { throw CaptureError("opening libnftables", error) }
    }

    static func routingSocket() throws -> RoutingSocket {
        do { return try RoutingSocket() } catch { throw CaptureError("opening rtnetlink", error) }
    }

    /// The current table, or nil when the namespace has none.
    static func listTable(_ nft: NFTablesSession) throws -> InstalledTable? {
        do {
            return InstalledTable(listing: try nft.run("list table \(Ruleset.family) \(Ruleset.tableName)"))
        } catch where error.message.contains("No such file or directory") {
            return nil
        } catch {
            throw CaptureError("reading table \(Ruleset.family) \(Ruleset.tableName)", error)
        }
    }

    /// The rules and routes present in the kernel with the marks and tables `plan` names.
    static func installedRouting(_ routing: RoutingSocket, like plan: PolicyRoutingPlan) throws -> PolicyRoutingPlan {
        var found = PolicyRoutingPlan.none
        do {
            for family in AddressFamily.allCases where plan.rules.contains(where: { $0.family == family }) {
                found.rules += try routing.firewallMarkRules(family: family).filter { rule in
                    plan.rules.contains(where: rule.sameSelector)
                }
            }
            for route in plan.routes where try !routing.localDefaultRoutes(family: route.family, table: route.table).isEmpty {
                found.routes.append(route)
            }
        } catch {
            throw CaptureError("reading policy routing", error)
        }
        return found
    }

    /// Best effort: used for rollback and for removing routing the new spec no longer needs.
    static func remove(_ plan: PolicyRoutingPlan, with routing: RoutingSocket) {
        for rule in plan.rules { try? routing.delete(rule) }
        for route in plan.routes { try? routing.delete(route) }
    }
}

/// The kernel sockets one capture operation used, still open; see ``CaptureEngine/applyKeepingHandles(_:in:)``.
public final class KernelHandles: @unchecked Sendable {
    private var nft: NFTablesSession?
    private var routing: RoutingSocket?

    init(_ nft: NFTablesSession, _ routing: RoutingSocket) {
        self.nft = nft
        self.routing = routing
    }

    /// Closes the sockets now (also happens when the handles are dropped).
    public func release() {
        nft = nil
        routing = nil
    }
}

extension NamespaceFacts {
    var families: [AddressFamily] { hasIPv6 ? [.ipv4, .ipv6] : [.ipv4] }
}

extension InstalledTable {
    var specComments: [String] {
        chain(named: RulesetRenderer.specChain)?.rules.compactMap(\.comment) ?? []
    }
}

extension PolicyRoutingPlan {
    /// The routing `spec`'s mark and table would use in TPROXY mode, in both families: what cleanup looks for.
    public init(routingOf spec: CaptureSpec) {
        var tproxy = spec
        tproxy.interceptionMode = .tproxy
        tproxy.inboundPorts = .all
        self.init(spec: tproxy, families: AddressFamily.allCases)
    }

    func subtracting(_ other: PolicyRoutingPlan) -> PolicyRoutingPlan {
        PolicyRoutingPlan(rules: rules.filter { rule in !other.rules.contains(where: rule.sameSelector) },
                          routes: routes.filter { !other.routes.contains($0) })
    }
}
