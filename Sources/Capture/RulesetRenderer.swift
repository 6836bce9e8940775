import Netfilter

/// Turns a ``CaptureSpec`` into the `inet capstan` table, rule for rule after istio-iptables' sidecar
/// capture, for IPv4 and IPv6 at once.
///
/// Chain names follow Istio's (`ISTIO_OUTPUT` is `outbound`, `ISTIO_IN_REDIRECT` is `inbound_redirect`, …).
/// The table is a pure function of the spec, so re-rendering a recovered spec shows what the kernel
/// should hold.
public enum RulesetRenderer {
    // Regular chains.
    static let specChain = "capture_spec"
    static let inboundRedirect = "inbound_redirect"
    static let outboundRedirect = "outbound_redirect"
    static let divert = "divert"
    static let tproxy = "inbound_tproxy"
    static let inbound = "inbound"
    static let outboundDNS = "outbound_dns"
    static let outbound = "outbound"

    public static func render(_ spec: CaptureSpec) -> Ruleset {
        var chains: [Chain] = [specRecord(spec)]
        let tproxyMode = spec.interceptionMode == .tproxy
        let dnsServers = spec.dnsServersByFamily

        chains.append(Chain(name: inboundRedirect, rules: [
            Rule([.transport([.tcp])], .redirect(spec.inboundCapturePort),
                 comment: "to the inbound capture port (-z)"),
        ]))
        chains.append(Chain(name: outboundRedirect, rules: [
            Rule([.transport([.tcp])], .redirect(spec.outboundCapturePort),
                 comment: "to the outbound capture port (-p)"),
        ]))
        if tproxyMode {
            chains.append(Chain(name: divert, rules: [
                Rule([], .markAndAccept(spec.tproxyMark),
                     comment: "established inbound connection: mark for local delivery"),
            ]))
            if spec.capturesInbound {
                chains.append(Chain(name: tproxy, rules: AddressFamily.allCases.map { family in
                    Rule([.transport([.tcp]), .destination([family.loopback], negated: true)],
                         .tproxy(family, port: spec.inboundCapturePort, mark: spec.tproxyMark),
                         comment: "new inbound connection: to the inbound capture port (-z) unchanged\(family.suffix)")
                }))
            }
        }
        if spec.capturesInbound || tproxyMode {
            chains.append(Chain(name: inbound, rules: inboundRules(spec)))
        }
        if spec.dns != .off {
            chains.append(Chain(name: outboundDNS, rules: dnsRedirectRules(spec, servers: dnsServers)))
        }
        chains.append(Chain(name: outbound, rules: outboundRules(spec)))

        // Base chains: the hooks.
        chains.append(Chain(name: "prerouting",
                            hook: .init(type: "nat", hook: "prerouting", priority: "dstnat"),
                            rules: natPreroutingRules(spec)))
        chains.append(Chain(name: "output",
                            hook: .init(type: "nat", hook: "output", priority: "-100"),
                            rules: excludedInterfaceRules(spec, output: true) + [
                                Rule([], .jump(outbound), comment: "locally originated traffic: outbound capture"),
                            ]))
        if tproxyMode || spec.dropInvalid {
            chains.append(Chain(name: "mangle_prerouting",
                                hook: .init(type: "filter", hook: "prerouting", priority: "mangle"),
                                rules: manglePreroutingRules(spec)))
        }
        if tproxyMode {
            chains.append(Chain(name: "mangle_output",
                                hook: .init(type: "route", hook: "output", priority: "mangle"),
                                rules: mangleOutputRules(spec)))
        }
        if spec.dns != .off {
            chains.append(Chain(name: "raw_prerouting",
                                hook: .init(type: "filter", hook: "prerouting", priority: "raw"),
                                rules: dnsZoneInboundRules(spec, servers: dnsServers)))
            chains.append(Chain(name: "raw_output",
                                hook: .init(type: "filter", hook: "output", priority: "raw"),
                                rules: dnsZoneOutboundRules(spec, servers: dnsServers)))
        }
        return Ruleset(chains: chains)
    }

    // MARK: The recorded spec

    static let specMarker = "capstan/v1 spec"
    private static let specChunkBytes = 100

    /// An unhooked chain whose rule comments carry the spec, so `status` can recover intent from the kernel.
    private static func specRecord(_ spec: CaptureSpec) -> Chain {
        let chunks = chunk(spec.recordedArguments.joined(separator: " "))
        let rules = chunks.enumerated().map { index, chunk in
            Rule([], .none, comment: "\(specMarker) \(index + 1)/\(chunks.count): \(chunk)")
        }
        return Chain(name: specChain, rules: rules)
    }

    /// Splits `text` into pieces of at most `specChunkBytes`, preferring to break after a space.
    /// The record is ASCII (validated flags), so bytes and characters coincide.
    private static func chunk(_ text: String) -> [String] {
        let bytes = Array(text.utf8)
        var chunks: [String] = []
        var start = 0
        while bytes.count - start > specChunkBytes {
            let limit = start + specChunkBytes
            var cut = limit
            if let space = bytes[start..<limit].lastIndex(of: UInt8(ascii: " ")) { cut = space + 1 }
            chunks.append(String(decoding: bytes[start..<cut], as: UTF8.self))
            start = cut
        }
        chunks.append(String(decoding: bytes[start...], as: UTF8.self))
        return chunks
    }

    /// Reassembles the spec from the comments of the spec chain's rules.
    static func recoverSpec(fromComments comments: [String]) throws(CaptureSpecError) -> CaptureSpec? {
        let pieces = comments.compactMap { comment -> Substring? in
            guard comment.hasPrefix(specMarker + " "), let colon = comment.firstIndex(of: ":") else { return nil }
            return comment.index(colon, offsetBy: 2, limitedBy: comment.endIndex).map { comment[$0...] } ?? ""
        }
        guard !pieces.isEmpty else { return nil }
        let text = pieces.joined()
        return try CaptureSpec(canonicalArguments: text.split(separator: " ").map(String.init))
    }

    // MARK: Inbound

    private static func natPreroutingRules(_ spec: CaptureSpec) -> [Rule] {
        var rules: [Rule] = []
        // -k: traffic arriving on these interfaces is outbound traffic of the VMs behind them.
        for name in spec.kubeVirtInterfaces {
            switch spec.outboundDestinations {
            case .all:
                rules.append(Rule([.inputInterface(name)], .jump(outboundRedirect),
                                  comment: "-k \(name): traffic from this interface is captured as outbound"))
            case .only(let prefixes):
                for prefix in prefixes {
                    rules.append(Rule([.inputInterface(name), .destination([prefix])], .jump(outboundRedirect),
                                      comment: "-k \(name), -i \(prefix.cidrText): captured as outbound"))
                }
            }
        }
        for name in spec.kubeVirtInterfaces {
            rules.append(Rule([.inputInterface(name)], .return,
                              comment: "-k \(name): not inbound traffic of this pod"))
        }
        rules += excludedInterfaceRules(spec, output: false)
        if spec.interceptionMode == .redirect && spec.capturesInbound {
            rules.append(Rule([.transport([.tcp])], .jump(inbound), comment: "inbound TCP: inbound capture"))
        }
        return rules
    }

    private static func excludedInterfaceRules(_ spec: CaptureSpec, output: Bool) -> [Rule] {
        spec.excludeInterfaces.map { name in
            Rule([output ? .outputInterface(name) : .inputInterface(name)], .return,
                 comment: "-c \(name): interface never captured")
        }
    }

    private static func inboundRules(_ spec: CaptureSpec) -> [Rule] {
        let mark = spec.tproxyMark
        var rules: [Rule] = []
        if spec.interceptionMode == .tproxy {
            rules.append(Rule([.mark(mark)], .return, comment: "already marked by TPROXY: no second capture"))
            for family in AddressFamily.allCases {
                rules.append(Rule([.source([family.inboundPassthrough]), .inputInterface("lo")], .return,
                                  comment: "from the proxy's inbound passthrough source: to the application\(family.suffix)"))
            }
            rules.append(Rule([.inputInterface("lo"), .mark(CaptureSpec.proxyToSelfMark, negated: true)], .return,
                              comment: "loopback traffic other than the proxy's own pod-IP calls is not inbound"))
        }
        // -e: the tunnel port is never captured (Capstan also keeps this rule in TPROXY mode).
        rules.append(Rule([.destinationPort(.tcp, [spec.inboundTunnelPort])], .return,
                          comment: "-e: tunnel port never captured"))
        let capture: (([Match]) -> [Rule]) = { selector in
            if spec.interceptionMode == .tproxy {
                return [
                    Rule(selector + [.connectionState([.established, .related])], .jump(divert),
                         comment: "established inbound connection: keep it on the proxy socket"),
                    Rule(selector, .jump(tproxy), comment: "new inbound connection: TPROXY to the proxy"),
                ]
            }
            return [Rule(selector, .jump(inboundRedirect), comment: "inbound connection: to the proxy")]
        }
        switch spec.inboundPorts {
        case .all:
            if !spec.inboundExcludePorts.isEmpty {
                rules.append(Rule([.destinationPort(.tcp, spec.inboundExcludePorts)], .return,
                                  comment: "-d: inbound ports excluded from capture"))
            }
            rules += capture([])
        case .only(let ports) where !ports.isEmpty:
            rules += capture([.destinationPort(.tcp, ports)])
        case .only:
            break
        }
        return rules
    }

    private static func manglePreroutingRules(_ spec: CaptureSpec) -> [Rule] {
        var rules = excludedInterfaceRules(spec, output: false)
        if spec.dropInvalid {
            rules.append(Rule([.connectionState([.invalid])], .drop, comment: "--drop-invalid: conntrack-invalid packets"))
        }
        if spec.interceptionMode == .tproxy {
            rules.append(Rule([.transport([.tcp])], .jump(inbound), comment: "inbound TCP: TPROXY capture"))
            rules.append(Rule([.transport([.tcp]), .mark(spec.tproxyMark)], .saveMarkToConnection,
                              comment: "remember the TPROXY mark on the connection"))
        }
        return rules
    }

    private static func mangleOutputRules(_ spec: CaptureSpec) -> [Rule] {
        var rules = excludedInterfaceRules(spec, output: true)
        rules.append(Rule([.transport([.tcp]), .outputInterface("lo"), .mark(spec.tproxyMark)], .return,
                          comment: "already marked for TPROXY"))
        for family in AddressFamily.allCases {
            rules.append(Rule([.transport([.tcp]), .outputInterface("lo"), .destination([family.loopback], negated: true),
                               .socketUser(spec.proxyUIDs)], .setMark(CaptureSpec.proxyToSelfMark),
                              comment: "proxy uid to its own pod address: mark to tell it from the application\(family.suffix)"))
        }
        for family in AddressFamily.allCases {
            rules.append(Rule([.transport([.tcp]), .outputInterface("lo"), .destination([family.loopback], negated: true),
                               .socketGroup(spec.proxyGIDs)], .setMark(CaptureSpec.proxyToSelfMark),
                              comment: "proxy gid to its own pod address: mark to tell it from the application\(family.suffix)"))
        }
        rules.append(Rule([.transport([.tcp]), .connectionMark(spec.tproxyMark)], .restoreMarkFromConnection,
                          comment: "replies on TPROXY connections: route back to the proxy"))
        return rules
    }

    // MARK: Outbound

    private static func outboundRules(_ spec: CaptureSpec) -> [Rule] {
        var rules: [Rule] = []
        let dnsOn = spec.dns != .off
        if spec.interceptionMode == .tproxy {
            // The proxy reaches the application from the client's own address with the TPROXY mark; its
            // uid would otherwise send that connection straight back to the inbound port.
            rules.append(Rule([.mark(spec.tproxyMark)], .return,
                              comment: "TPROXY: the proxy's transparent connection to the application"))
        }
        if !spec.outboundExcludePorts.isEmpty {
            rules.append(Rule([.transport([.tcp, .udp]), .destinationPort(nil, spec.outboundExcludePorts)], .return,
                              comment: "-o: outbound ports excluded from capture (TCP and UDP)"))
        }
        for family in AddressFamily.allCases {
            rules.append(Rule([.outputInterface("lo"), .source([family.inboundPassthrough])], .return,
                              comment: "proxy's inbound passthrough to the application\(family.suffix)"))
        }
        let selfPorts = dnsOn ? [53, spec.inboundTunnelPort] : [spec.inboundTunnelPort]
        let keepLoopbackReturn = !spec.outboundIncludesLoopback
        for (ids, owner, label) in [(spec.proxyUIDs, Match.socketUser, "uid"), (spec.proxyGIDs, Match.socketGroup, "gid")] {
            for family in AddressFamily.allCases {
                rules.append(Rule([.outputInterface("lo"), .destination([family.loopback], negated: true),
                                   .destinationPort(.tcp, selfPorts, negated: true), owner(ids, false)],
                                  .jump(inboundRedirect),
                                  comment: "proxy \(label) to its own pod address: through the inbound capture\(family.suffix)"))
            }
            if keepLoopbackReturn {
                var matches: [Match] = [.outputInterface("lo")]
                if dnsOn { matches.append(.destinationPort(.tcp, [53], negated: true)) }
                matches.append(owner(ids, true))
                rules.append(Rule(matches, .return, comment: "application to itself over loopback: not captured"))
            }
            rules.append(Rule([owner(ids, false)], .return, comment: "proxy \(label): its own traffic is not captured"))
        }
        if dnsOn {
            rules.append(Rule([], .jump(outboundDNS), comment: "DNS: to the agent's DNS proxy"))
        }
        for family in AddressFamily.allCases {
            rules.append(Rule([.destination([family.loopback])], .return, comment: "to localhost: not captured\(family.suffix)"))
        }
        for prefix in spec.outboundExcludeCIDRs {
            rules.append(Rule([.destination([prefix])], .return, comment: "-x \(prefix.cidrText): excluded from capture"))
        }
        if !spec.outboundPorts.isEmpty {
            rules.append(Rule([.destinationPort(.tcp, spec.outboundPorts)], .jump(outboundRedirect),
                              comment: "-q: outbound ports captured"))
        }
        switch spec.outboundDestinations {
        case .all:
            rules.append(Rule([], .jump(outboundRedirect), comment: "-i *: all other outbound TCP captured"))
        case .only(let prefixes):
            for prefix in prefixes {
                rules.append(Rule([.destination([prefix])], .jump(outboundRedirect),
                                  comment: "-i \(prefix.cidrText): captured"))
            }
        }
        return rules
    }

    // MARK: DNS

    private static func dnsRedirectRules(_ spec: CaptureSpec, servers: [AddressFamily: [IPPrefix]]) -> [Rule] {
        let port = CaptureSpec.dnsCapturePort
        guard spec.dns != .all else {
            return [Rule([.transport([.tcp, .udp]), .destinationPort(nil, [53])], .redirect(port),
                         comment: "--capture-all-dns: all DNS to the DNS proxy")]
        }
        return AddressFamily.allCases.compactMap { family in
            servers[family].map {
                Rule([.transport([.tcp, .udp]), .destinationPort(nil, [53]), .destination($0)], .redirect(port),
                     comment: "--redirect-dns: DNS to the resolv.conf nameservers to the DNS proxy\(family.suffix)")
            }
        }
    }

    /// Conntrack zones keep the application's query and the DNS proxy's upstream query apart.
    private static func dnsZoneOutboundRules(_ spec: CaptureSpec, servers: [AddressFamily: [IPPrefix]]) -> [Rule] {
        var rules: [Rule] = []
        for (ids, owner) in [(spec.proxyUIDs, Match.socketUser), (spec.proxyGIDs, Match.socketGroup)] {
            rules.append(Rule([.destinationPort(.udp, [53]), owner(ids, false)], .conntrackZone(1),
                              comment: "DNS proxy's upstream queries: conntrack zone 1"))
            rules.append(Rule([.sourcePort(.udp, [CaptureSpec.dnsCapturePort]), owner(ids, false)], .conntrackZone(2),
                              comment: "DNS proxy's answers to the application: conntrack zone 2"))
        }
        if spec.dns == .all {
            rules.append(Rule([.destinationPort(.udp, [53])], .conntrackZone(2), comment: "application DNS queries: conntrack zone 2"))
        } else {
            for family in AddressFamily.allCases {
                guard let prefixes = servers[family] else { continue }
                rules.append(Rule([.destinationPort(.udp, [53]), .destination(prefixes)], .conntrackZone(2),
                                  comment: "application DNS queries: conntrack zone 2\(family.suffix)"))
            }
        }
        return rules
    }

    private static func dnsZoneInboundRules(_ spec: CaptureSpec, servers: [AddressFamily: [IPPrefix]]) -> [Rule] {
        if spec.dns == .all {
            return [Rule([.sourcePort(.udp, [53])], .conntrackZone(1), comment: "DNS answers from upstream: conntrack zone 1")]
        }
        return AddressFamily.allCases.compactMap { family in
            servers[family].map {
                Rule([.sourcePort(.udp, [53]), .source($0)], .conntrackZone(1),
                     comment: "DNS answers from upstream: conntrack zone 1\(family.suffix)")
            }
        }
    }
}

extension AddressFamily {
    var loopback: IPPrefix {
        IPPrefix(host: self == .ipv4 ? .loopbackV4 : .loopbackV6)
    }

    /// Tells apart the comments of rules that come in IPv4/IPv6 pairs.
    var suffix: String { self == .ipv4 ? " (IPv4)" : " (IPv6)" }

    var inboundPassthrough: IPPrefix {
        IPPrefix(host: self == .ipv4 ? .inboundPassthroughV4 : .inboundPassthroughV6)
    }
}

extension CaptureSpec {
    /// The nameservers DNS capture covers, as host prefixes by family (none for `.all` or `.off`).
    var dnsServersByFamily: [AddressFamily: [IPPrefix]] {
        guard case .nameservers(let servers) = dns else { return [:] }
        return Dictionary(grouping: servers.map { IPPrefix(host: $0) }, by: \.family)
    }

    /// Istio drops the "application to itself over loopback" exemption when `-i` names a loopback range.
    var outboundIncludesLoopback: Bool {
        guard case .only(let prefixes) = outboundDestinations else { return false }
        return prefixes.contains { $0.address.isLoopback }
    }
}
