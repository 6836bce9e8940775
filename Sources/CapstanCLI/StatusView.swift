import Capture
import FoundationEssentials
import HTTPEndpoints
import Netfilter
import Supervisor

/// Human-readable `capstan status`: a summary of intent, the rules with their counters, and drift.
struct StatusView {
    var style: TerminalStyle
    var verbose = false

    func render(_ installed: InstalledCapture, place: String) -> String {
        var out = style.bold("Capture in \(place)") + "  (table \(Ruleset.family) \(Ruleset.tableName))\n"
        guard let table = installed.table else {
            out += row("state", style.bad("not installed") + ": no \(Ruleset.family) \(Ruleset.tableName) table")
            out += routingRows(installed)
            return out
        }
        guard let spec = installed.spec else {
            out += row("state", style.bad("unknown") + ": \(installed.specProblem ?? "no spec record")")
            out += rulesSection(table)
            return out
        }
        let differences = installed.drift?.differences ?? []
        out += row("state", differences.isEmpty ? style.good("intact")
                    : style.bad("drifted") + " (\(differences.count) difference\(differences.count == 1 ? "" : "s"))")
        out += summaryRows(spec, facts: installed.facts)
        out += routingRows(installed)
        out += rulesSection(table)
        if !differences.isEmpty {
            out += "\n" + style.bold("Drift") + " (re-run capstan init with the same flags to repair)\n"
            for difference in differences {
                out += "  " + style.bad("•") + " \(difference)\n"
            }
        }
        return out
    }

    private func row(_ label: String, _ value: String) -> String {
        "  " + label.padded(to: 11) + value + "\n"
    }

    private func summaryRows(_ spec: CaptureSpec, facts: NamespaceFacts) -> String {
        var out = ""
        let mode = spec.interceptionMode == .tproxy
            ? "TPROXY (mark \(spec.tproxyMark), route table \(spec.tproxyRouteTable))" : "REDIRECT"
        out += row("mode", mode)

        var outbound: String
        switch spec.outboundDestinations {
        case .all: outbound = "all TCP → :\(spec.outboundCapturePort)"
        case .only(let prefixes) where prefixes.isEmpty: outbound = "off (-i '')"
        case .only(let prefixes): outbound = "TCP to \(prefixes.map(\.cidrText).joined(separator: ", ")) → :\(spec.outboundCapturePort)"
        }
        if !spec.outboundPorts.isEmpty { outbound += "; ports \(list(spec.outboundPorts)) always (-q)" }
        var outboundExceptions: [String] = []
        if !spec.outboundExcludeCIDRs.isEmpty { outboundExceptions.append("\(spec.outboundExcludeCIDRs.map(\.cidrText).joined(separator: ", ")) (-x)") }
        if !spec.outboundExcludePorts.isEmpty { outboundExceptions.append("ports \(list(spec.outboundExcludePorts)) (-o)") }
        if !outboundExceptions.isEmpty { outbound += "; except " + outboundExceptions.joined(separator: ", ") }
        out += row("outbound", outbound)

        var inbound: String
        switch spec.inboundPorts {
        case .all:
            inbound = "all TCP → :\(spec.inboundCapturePort)"
            if !spec.inboundExcludePorts.isEmpty { inbound += "; except ports \(list(spec.inboundExcludePorts)) (-d)" }
        case .only(let ports) where ports.isEmpty: inbound = "off (-b '')"
        case .only(let ports): inbound = "TCP ports \(list(ports)) → :\(spec.inboundCapturePort)"
        }
        inbound += "; tunnel port \(spec.inboundTunnelPort) never (-e)"
        out += row("inbound", inbound)
        out += row("proxy", "uid \(list(spec.proxyUIDs)), gid \(list(spec.proxyGIDs)): not captured")

        switch spec.dns {
        case .off: out += row("DNS", "not captured")
        case .all: out += row("DNS", "all port 53 → :\(CaptureSpec.dnsCapturePort)")
        case .nameservers(let servers): out += row("DNS", "port 53 to \(servers.map(\.description).joined(separator: ", ")) → :\(CaptureSpec.dnsCapturePort)")
        }
        var interfaces: [String] = []
        if !spec.kubeVirtInterfaces.isEmpty { interfaces.append("\(spec.kubeVirtInterfaces.joined(separator: ", ")) captured as outbound (-k)") }
        if !spec.excludeInterfaces.isEmpty { interfaces.append("\(spec.excludeInterfaces.joined(separator: ", ")) never captured (-c)") }
        if !interfaces.isEmpty { out += row("interfaces", interfaces.joined(separator: "; ")) }
        if spec.dropInvalid { out += row("invalid", "conntrack-invalid packets dropped") }
        out += row("IP", facts.hasIPv6 ? "IPv4 and IPv6" : "IPv4 (the namespace has no IPv6)")

        var listeners: [String] = []
        for (port, role) in [(spec.outboundCapturePort, "outbound"), (spec.inboundCapturePort, "inbound")] {
            listeners.append(facts.listeningTCPPorts.contains(port)
                ? style.good(":\(port) \(role) listening")
                : style.warn(":\(port) \(role): nothing listening"))
        }
        out += row("listeners", listeners.joined(separator: ", "))
        return out
    }

    private func routingRows(_ installed: InstalledCapture) -> String {
        let expected = installed.expectedRouting
        guard !expected.isEmpty || !installed.routing.isEmpty else { return "" }
        var items: [String] = []
        for rule in expected.rules {
            let present = installed.routing.rules.contains(where: rule.sameSelector)
            let text = "fwmark \(rule.mark) → table \(rule.table) (\(rule.family.label))"
            items.append(present ? style.good("✓ ") + text : style.bad("✗ ") + text + " missing")
        }
        for route in expected.routes {
            let present = installed.routing.routes.contains(route)
            let text = "local default dev lo table \(route.table) (\(route.family.label))"
            items.append(present ? style.good("✓ ") + text : style.bad("✗ ") + text + " missing")
        }
        for rule in installed.routing.rules where !expected.rules.contains(where: rule.sameSelector) {
            items.append(style.warn("! ") + "fwmark \(rule.mark) → table \(rule.table) (\(rule.family.label)) not expected")
        }
        for route in installed.routing.routes where !expected.routes.contains(route) {
            items.append(style.warn("! ") + "local default dev lo table \(route.table) (\(route.family.label)) not expected")
        }
        var out = ""
        for (index, item) in items.enumerated() {
            out += row(index == 0 ? "routing" : "", item)
        }
        return out
    }

    private func rulesSection(_ table: InstalledTable) -> String {
        let rows = table.chainsInTraversalOrder.filter { $0.name != "capture_spec" }.flatMap { chain in
            chain.rules.map { (chain.name, $0) }
        }
        let chainWidth = max(5, rows.map(\.0.count).max() ?? 0)
        let packetWidth = max(7, rows.map { String($0.1.packets).count }.max() ?? 0)
        let byteWidth = max(5, rows.map { String($0.1.bytes).count }.max() ?? 0)
        var out = "\n" + style.bold("Rules") + "\n"
        out += "  " + style.dim("CHAIN".padded(to: chainWidth) + "  " + "PACKETS".leftPadded(to: packetWidth) + "  "
                                + "BYTES".leftPadded(to: byteWidth) + "  WHY") + "\n"
        var lastChain = ""
        for (chain, rule) in rows {
            let chainLabel = chain == lastChain ? "" : chain
            lastChain = chain
            let packets = String(rule.packets).leftPadded(to: packetWidth)
            out += "  " + chainLabel.padded(to: chainWidth) + "  " + (rule.packets > 0 ? packets : style.dim(packets)) + "  "
                + String(rule.bytes).leftPadded(to: byteWidth) + "  " + (rule.comment ?? style.warn("(no comment: not Capstan's)")) + "\n"
            if verbose {
                out += "  " + String(repeating: " ", count: chainWidth + packetWidth + byteWidth + 6)
                    + style.dim(rule.text.replacingFirst("counter packets 0 bytes 0 ", with: "")) + "\n"
            }
        }
        return out
    }

    private func list(_ values: [some CustomStringConvertible]) -> String {
        values.map(\.description).joined(separator: ",")
    }

    // MARK: Sidecar

    /// The Sidecar section: what the agent and its proxy report, or one line when no agent answers.
    func render(sidecar outcome: Result<SidecarStatus, OneShotHTTPClient.Failure>, reader: SidecarStatusReader, now: Date) -> String {
        let status: SidecarStatus
        switch outcome {
        case .failure(let failure):
            return "\n" + style.bold("Sidecar") + ": no agent answering on :\(reader.statusPort) " + style.dim("(\(failure.reason))") + "\n"
        case .success(let read):
            status = read
        }
        let unknown = style.warn("unknown")
        var out = "\n" + style.bold("Sidecar") + "  (agent :\(reader.statusPort), proxy admin :\(reader.adminPort))\n"
        switch status.ready {
        case true?: out += row("readiness", style.good("ready"))
        case false?: out += row("readiness", style.bad("not ready") + (status.unmetConditions.isEmpty ? "" : ": " + status.unmetConditions.joined(separator: "; ")))
        case nil: out += row("readiness", unknown)
        }

        switch status.certificate {
        case .certificate(let certificate)?:
            out += row("identity", certificate.identity ?? style.warn("none") + " (the certificate has no SPIFFE ID)")
            let left = certificate.expiry.timeIntervalSince(now)
            let expiry = "expires \(certificate.expiry.formatted(.iso8601)) "
                + (left > 0 ? "(\(Self.approximately(seconds: left)) left)" : style.bad("(expired \(Self.approximately(seconds: -left)) ago)"))
            out += row("cert", "serial \(certificate.serialNumber), " + expiry)
        case .nothing?:
            out += row("identity", style.warn("none") + " (the proxy presents no certificate)")
        case nil:
            out += row("identity", unknown)
        }

        let upstream = switch status.upstreamConnected {
        case true?: style.good("upstream connected")
        case false?: style.bad("upstream not connected")
        case nil: "upstream " + unknown
        }
        let accepted: String
        if let versions = status.acceptedVersions {
            accepted = "accepted " + SidecarStatus.services.map { "\($0) " + (versions[$0] ?? style.dim("none")) }.joined(separator: ", ")
        } else {
            accepted = "accepted versions " + unknown
        }
        out += row("xDS", upstream + "; " + accepted)

        let restarts = status.proxyRestarts.map { "\($0) restart\($0 == 1 ? "" : "s")" } ?? "restarts " + unknown
        let state = switch status.proxyState {
        case "LIVE"?: style.good("LIVE")
        case let other?: style.warn(other)
        case nil: unknown
        }
        out += row("proxy", state + ", " + restarts)

        if let listeners = status.listeners {
            if listeners.isEmpty { out += row("listeners", style.dim("none")) }
            let width = listeners.map(\.name.count).max() ?? 0
            for (index, listener) in listeners.enumerated() {
                out += row(index == 0 ? "listeners" : "", listener.name.padded(to: width) + "  " + listener.address)
            }
        } else {
            out += row("listeners", unknown)
        }
        for problem in status.problems {
            out += "  " + style.warn("! ") + style.dim(problem) + "\n"
        }
        return out
    }

    /// `2d3h`, `23h59m`, `4m10s`, `12s`: the two largest units of a duration.
    static func approximately(seconds: Double) -> String {
        let total = Int(seconds.rounded(.down))
        let (days, hours, minutes, rest) = (total / 86_400, total % 86_400 / 3600, total % 3600 / 60, total % 60)
        if days > 0 { return "\(days)d\(hours)h" }
        if hours > 0 { return "\(hours)h\(minutes)m" }
        if minutes > 0 { return "\(minutes)m\(rest)s" }
        return "\(rest)s"
    }

    // MARK: Trace

    func render(_ trace: PacketTrace) -> String {
        let query = trace.query
        let target = SocketAddress(query.destination, query.destinationPort)
        var who = query.inbound
            ? "inbound from \(query.source.map(\.description) ?? "outside the pod")"
                + (trace.interface.map { " on \($0)" } ?? "")
            : "outbound from uid \(query.uid) gid \(query.gid)" + (trace.interface.map { ", leaves via \($0)" } ?? "")
        if let source = query.source, !query.inbound { who += ", source \(source)" }
        var out = style.bold("Trace \(query.transport.rawValue) \(target)") + " (\(who))\n"
        let chainWidth = max(5, trace.steps.map(\.chain.count).max() ?? 0)
        for step in trace.steps {
            out += "  " + step.chain.padded(to: chainWidth) + "  " + step.comment + "\n"
            if verbose { out += "  " + String(repeating: " ", count: chainWidth + 2) + style.dim(step.rule) + "\n" }
        }
        switch trace.verdict {
        case .captured(let port, let tproxy):
            out += style.good("Captured") + " → :\(port) (\(tproxy ? "TPROXY: the proxy sees \(target) as its local address" : "REDIRECT: the proxy reads \(target) with SO_ORIGINAL_DST"))\n"
        case .passes:
            let why = trace.decidingStep.map { "let through by \($0.chain): \($0.comment)" } ?? "no capture rule matched"
            out += style.warn("Not captured") + ": \(why)\n"
        case .dropped:
            out += style.bad("Dropped") + " by \(trace.decidingStep.map { "\($0.chain): \($0.comment)" } ?? "a rule")\n"
        case .noRoute:
            out += style.bad("No route") + " to \(query.destination): connect fails before any rule sees a packet\n"
        }
        for rule in trace.unrecognizedRules {
            out += style.warn("  ! skipped a rule Capstan did not write: ") + rule + "\n"
        }
        return out
    }
}

extension AddressFamily {
    var label: String { self == .ipv4 ? "IPv4" : "IPv6" }
}

extension String {
    func padded(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }

    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
