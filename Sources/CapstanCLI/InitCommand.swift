import ArgumentParser
import Capture
import Netfilter
#if canImport(Glibc)
import Glibc
#endif

/// `capstan init`: istio-iptables' flags, programmed as one nftables transaction in-process.
struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Program capture rules (istio-iptables compatible) in a network namespace.",
        discussion: """
            Every flag can also be set by the environment variable that is its long name in UPPER_SNAKE \
            (ENVOY_PORT, ISTIO_SERVICE_CIDR, …); a flag on the command line wins. Defaults are the Istio \
            injector's sidecar defaults. IPv4 and IPv6 are captured together.
            """
    )

    @Option(name: [.customShort("p"), .customLong("envoy-port")], help: "Outbound capture port (default 15001).")
    var envoyPort: String?
    @Option(name: [.customShort("z"), .customLong("inbound-capture-port")], help: "Inbound capture port (default 15006).")
    var inboundCapturePort: String?
    @Option(name: [.customShort("e"), .customLong("inbound-tunnel-port")], help: "Tunnel port, never captured (default 15008).")
    var inboundTunnelPort: String?
    @Option(name: [.customShort("u"), .customLong("proxy-uid")], help: "Proxy uid(s), comma-separated (default 1337).")
    var proxyUID: String?
    @Option(name: [.customShort("g"), .customLong("proxy-gid")], help: "Proxy gid(s), comma-separated (default: the uid).")
    var proxyGID: String?
    @Option(name: [.customShort("m"), .customLong("istio-inbound-interception-mode")], help: "REDIRECT or TPROXY (default REDIRECT).")
    var interceptionMode: String?
    @Option(name: [.customShort("t"), .customLong("istio-inbound-tproxy-mark")], help: "TPROXY packet mark (default 1337).")
    var tproxyMark: String?
    @Option(name: [.customShort("r"), .customLong("istio-inbound-tproxy-route-table")], help: "TPROXY route table (default 133).")
    var tproxyRouteTable: String?
    @Option(name: [.customShort("b"), .customLong("istio-inbound-ports")], help: "Inbound ports to capture, or '*' (default); '' for none.")
    var inboundPorts: String?
    @Option(name: [.customShort("d"), .customLong("istio-local-exclude-ports")], help: "Inbound ports not captured with -b '*' (default 15090,15021,15020).")
    var inboundExcludePorts: String?
    @Option(name: [.customShort("i"), .customLong("istio-service-cidr")], help: "Outbound CIDRs to capture, or '*' (default); '' for none.")
    var outboundCIDRs: String?
    @Option(name: [.customShort("x"), .customLong("istio-service-exclude-cidr")], help: "Outbound CIDRs never captured.")
    var outboundExcludeCIDRs: String?
    @Option(name: [.customShort("q"), .customLong("istio-outbound-ports")], help: "Outbound ports always captured.")
    var outboundPorts: String?
    @Option(name: [.customShort("o"), .customLong("istio-local-outbound-ports-exclude")], help: "Outbound ports never captured (TCP and UDP).")
    var outboundExcludePorts: String?
    @Option(name: [.customShort("k"), .customLong("kube-virt-interfaces")], help: "Interfaces whose inbound traffic is captured as outbound.")
    var kubeVirtInterfaces: String?
    @Option(name: [.customShort("c"), .customLong("istio-exclude-interfaces")], help: "Interfaces never captured.")
    var excludeInterfaces: String?
    @Flag(name: .customLong("redirect-dns"), inversion: .prefixedNo, help: "Capture DNS to the resolv.conf nameservers to :15053.")
    var redirectDNS: Bool?
    @Flag(name: .customLong("capture-all-dns"), inversion: .prefixedNo, help: "With --redirect-dns: capture all port 53 traffic.")
    var captureAllDNS: Bool?
    @Option(name: .customLong("dns-servers"), help: "Nameservers --redirect-dns captures (default: those in /etc/resolv.conf).")
    var dnsServers: String?
    @Flag(name: .customLong("drop-invalid"), inversion: .prefixedNo, help: "Drop conntrack-invalid packets.")
    var dropInvalid: Bool?

    @Flag(name: [.customShort("n"), .customLong("dry-run")], help: "Print the nftables script and policy routing; change nothing.")
    var dryRun = false
    @Flag(name: .customLong("cleanup-only"), help: "Remove the capture table and its policy routing.")
    var cleanupOnly = false
    @Flag(name: .customLong("run-validation"), help: "Check with a real connection that capture works; exit 126 if not.")
    var runValidation = false
    @Flag(name: .customLong("skip-rule-apply"), help: "Do not program rules (with --run-validation: only validate).")
    var skipRuleApply = false
    @Option(name: .customLong("network-namespace"), help: "Enter this network namespace first (e.g. /var/run/netns/NAME).")
    var networkNamespace: String?
    @Option(name: .customLong("iptables-probe-port"), help: "Port --run-validation connects to (default 15002).")
    var probePort: String?
    @Option(name: .customLong("probe-timeout"), help: "How long --run-validation tries, e.g. 5s or 500ms (default 5s).")
    var probeTimeout: String?

    func run() throws {
        let environment = ProcessEnvironment()
        let settings = try resolveSettings(environment)
        let spec = try resolveSpec(environment)
        let namespace = NetworkNamespace(path: settings.namespacePath)
        let place = settings.namespacePath ?? "the current network namespace"

        if settings.dryRun {
            printDryRun(spec, namespace: namespace, cleanup: settings.cleanupOnly)
            return
        }
        if settings.cleanupOnly {
            try runtime { try CaptureEngine.remove(spec, in: namespace) }
            print("capstan init: removed table \(Ruleset.family) \(Ruleset.tableName) and its policy routing in \(place)")
            return
        }
        if !settings.skipRuleApply {
            let outcome = try runtime { try CaptureEngine.apply(spec, in: namespace) }
            let ruleset = RulesetRenderer.render(spec)
            let count = ruleset.chains.dropFirst().reduce(0) { $0 + $1.rules.count }
            let verb = outcome == .applied ? "applied" : "unchanged:"
            print("capstan init: \(verb) table \(Ruleset.family) \(Ruleset.tableName) (\(count) rules, \(spec.interceptionMode.rawValue)) in \(place)")
        }
        if settings.runValidation {
            let outcome = try runtime {
                try CaptureValidation.run(spec, in: namespace, probePort: settings.probePort,
                                          timeoutMilliseconds: settings.probeTimeoutMilliseconds)
            }
            guard outcome.passed else {
                printError("capstan init: validation failed: \(outcome.detail)")
                throw ExitCode(126)
            }
            print("capstan init: validation passed: \(outcome.detail)")
        }
    }

    // MARK: Input

    /// The non-rule settings, flags first, then environment.
    struct Settings {
        var dryRun: Bool
        var cleanupOnly: Bool
        var runValidation: Bool
        var skipRuleApply: Bool
        var namespacePath: String?
        var probePort: UInt16
        var probeTimeoutMilliseconds: Int
    }

    func resolveSettings(_ environment: ProcessEnvironment) throws -> Settings {
        func switchValue(_ flag: Bool, _ name: String, _ variable: String) throws -> Bool {
            if flag { return true }
            guard let text = environment[variable] else { return false }
            guard let value = Bool(switchText: text) else {
                throw usageError("invalid value \"\(text)\" for \(name) (from \(variable)): must be true or false")
            }
            return value
        }
        let path = networkNamespace ?? environment["NETWORK_NAMESPACE"]
        if let path, !path.isEmpty, access(path, F_OK) != 0 {
            throw usageError("invalid value \"\(path)\" for --network-namespace: no such file")
        }
        let portText = probePort ?? environment["IPTABLES_PROBE_PORT"] ?? "15002"
        guard let port = UInt16(portText), port > 0 else {
            throw usageError("invalid value \"\(portText)\" for --iptables-probe-port: a port must be 1-65535")
        }
        let timeoutText = probeTimeout ?? environment["PROBE_TIMEOUT"] ?? "5s"
        guard let timeout = Self.milliseconds(timeoutText), timeout > 0 else {
            throw usageError("invalid value \"\(timeoutText)\" for --probe-timeout: expected a duration such as 5s or 500ms")
        }
        return Settings(
            dryRun: try switchValue(dryRun, "-n/--dry-run", "DRY_RUN"),
            cleanupOnly: try switchValue(cleanupOnly, "--cleanup-only", "CLEANUP_ONLY"),
            runValidation: try switchValue(runValidation, "--run-validation", "RUN_VALIDATION"),
            skipRuleApply: try switchValue(skipRuleApply, "--skip-rule-apply", "SKIP_RULE_APPLY"),
            namespacePath: path?.isEmpty == false ? path : nil,
            probePort: port,
            probeTimeoutMilliseconds: timeout)
    }

    /// `5s`, `500ms`, `1m`, or plain seconds.
    static func milliseconds(_ text: String) -> Int? {
        for (suffix, scale) in [("ms", 1), ("s", 1000), ("m", 60_000)] where text.hasSuffix(suffix) {
            return Int(text.dropLast(suffix.count)).map { $0 * scale }
        }
        return Int(text).map { $0 * 1000 }
    }

    func resolveSpec(_ environment: ProcessEnvironment) throws -> CaptureSpec {
        let flags: [CaptureOption: String?] = [
            .envoyPort: envoyPort, .inboundCapturePort: inboundCapturePort, .inboundTunnelPort: inboundTunnelPort,
            .proxyUID: proxyUID, .proxyGID: proxyGID, .interceptionMode: interceptionMode,
            .tproxyMark: tproxyMark, .tproxyRouteTable: tproxyRouteTable, .inboundPorts: inboundPorts,
            .inboundExcludePorts: inboundExcludePorts, .outboundCIDRs: outboundCIDRs,
            .outboundExcludeCIDRs: outboundExcludeCIDRs, .outboundPorts: outboundPorts,
            .outboundExcludePorts: outboundExcludePorts, .kubeVirtInterfaces: kubeVirtInterfaces,
            .excludeInterfaces: excludeInterfaces, .redirectDNS: redirectDNS.map(String.init),
            .captureAllDNS: captureAllDNS.map(String.init), .dnsServers: dnsServers,
            .dropInvalid: dropInvalid.map(String.init),
        ]
        var options: [CaptureOption: String] = [:]
        for option in CaptureOption.allCases {
            let flag: String? = flags[option] ?? nil
            if let value = flag ?? environment.value(for: option) {
                options[option] = value
            }
        }
        let wantsDNS = options[.redirectDNS].flatMap { Bool(switchText: $0) } ?? false
        let allDNS = options[.captureAllDNS].flatMap { Bool(switchText: $0) } ?? false
        if wantsDNS && !allDNS && options[.dnsServers] == nil {
            let servers = SystemFile.read(ResolvConf.defaultPath).map { ResolvConf.nameservers(in: $0) } ?? []
            if servers.isEmpty {
                printError("capstan init: warning: no nameservers in \(ResolvConf.defaultPath); DNS capture is off")
            }
            options[.dnsServers] = servers.map(\.description).joined(separator: ",")
        }
        do {
            return try CaptureSpec(options: options)
        } catch {
            throw usageError(error.description)
        }
    }

    // MARK: Output

    func printDryRun(_ spec: CaptureSpec, namespace: NetworkNamespace, cleanup: Bool) {
        if cleanup {
            print("# nftables transaction")
            print(Ruleset.removalScript, terminator: "")
            print("# policy routing removed if present")
            for line in PolicyRoutingPlan(routingOf: spec).commandLines { print(line.replacingFirst(" add ", with: " del ")) }
            return
        }
        // Reading /proc needs no privilege for the current namespace; entering another one does.
        let facts = (try? namespace.run { NamespaceFacts.current() })
        let families: [AddressFamily] = facts.map { $0.hasIPv6 ? [.ipv4, .ipv6] : [.ipv4] } ?? AddressFamily.allCases
        print("# nftables transaction")
        print(RulesetRenderer.render(spec).replacementScript, terminator: "")
        let routing = PolicyRoutingPlan(spec: spec, families: families)
        print("# policy routing")
        if routing.isEmpty { print("# none (\(spec.interceptionMode == .tproxy ? "no inbound capture" : "REDIRECT mode"))") }
        for line in routing.commandLines { print(line) }
    }
}

/// Prints a usage error and returns the exit-2 error to throw.
func usageError(_ message: String) -> ExitCode {
    printError("capstan: error: \(message)")
    return ExitCode(2)
}

/// Runs kernel work; a failure is printed and exits 1.
func runtime<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let exit as ExitCode {
        throw exit
    } catch {
        printError("capstan: error: \(error)")
        throw ExitCode(1)
    }
}

extension String {
    func replacingFirst(_ target: String, with replacement: String) -> String {
        guard let range = firstRange(of: target) else { return self }
        return self[..<range.lowerBound] + replacement + self[range.upperBound...]
    }
}
