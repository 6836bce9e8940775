import Capture

/// The flags of `capstan init`, parsed the way istio-iptables (Go's pflag) reads them: `--name value`,
/// `--name=value`, `-n value`, `-nvalue`, `-n=value`, and switches as `--name` or `--name=false`.
///
/// `init` runs at every pod start, so it has this small table-driven parser instead of ArgumentParser's
/// reflection (about 70% of the command's instructions), and it accepts the Istio flags that do not
/// apply here instead of refusing an istio-init command line.
struct InitFlags {
    /// What the command line (and the environment, for what it leaves out) asked for.
    var options: [CaptureOption: String] = [:]
    var settings: [Setting: String] = [:]
    var ignored: [String] = []
    var help = false

    /// Flags that steer the run rather than the rules.
    enum Setting: String, CaseIterable {
        case dryRun = "dry-run"
        case cleanupOnly = "cleanup-only"
        case runValidation = "run-validation"
        case skipRuleApply = "skip-rule-apply"
        case networkNamespace = "network-namespace"
        case probePort = "iptables-probe-port"
        case probeTimeout = "probe-timeout"

        var shortName: Character? { self == .dryRun ? "n" : nil }
        var isSwitch: Bool { [.dryRun, .cleanupOnly, .runValidation, .skipRuleApply].contains(self) }
        var environmentName: String { String(rawValue.map { $0 == "-" ? "_" : Character($0.uppercased()) }) }
        var displayName: String { shortName.map { "-\($0)/--\(rawValue)" } ?? "--\(rawValue)" }

        var help: String {
            switch self {
            case .dryRun: "Print the nftables script and policy routing; change nothing."
            case .cleanupOnly: "Remove the capture table and its policy routing."
            case .runValidation: "Check with a real connection that capture works; exit 126 if not."
            case .skipRuleApply: "Do not program rules (with --run-validation: only validate)."
            case .networkNamespace: "Enter this network namespace first (e.g. /var/run/netns/NAME)."
            case .probePort: "Port --run-validation connects to (default 15002)."
            case .probeTimeout: "How long --run-validation tries, e.g. 5s or 500ms (default 5s)."
            }
        }
    }

    /// istio-iptables flags with no effect in Capstan: accepted, reported, ignored.
    static let inapplicable: [String: (isSwitch: Bool, reason: String)] = [
        "dual-stack": (true, "IPv4 and IPv6 are always captured together"),
        "native-nftables": (true, "Capstan always programs nftables natively"),
        "cni-mode": (true, "init works the same in every mode"),
        "reconcile": (true, "re-running init replaces the table atomically"),
        "force-apply": (true, "re-running init replaces the table atomically"),
        "log_as_json": (true, "Capstan has its own output"),
        "log_caller": (false, "Capstan has its own output"),
        "log_output_level": (false, "Capstan has its own output"),
        "log_stacktrace_level": (false, "Capstan has its own output"),
        "log_target": (false, "Capstan has its own output"),
    ]

    static func help(for option: CaptureOption) -> String {
        switch option {
        case .envoyPort: "Outbound capture port (default 15001)."
        case .inboundCapturePort: "Inbound capture port (default 15006)."
        case .inboundTunnelPort: "Tunnel port, never captured (default 15008)."
        case .proxyUID: "Proxy uid(s), comma-separated (default 1337)."
        case .proxyGID: "Proxy gid(s), comma-separated (default: the uids)."
        case .interceptionMode: "REDIRECT or TPROXY (default REDIRECT)."
        case .tproxyMark: "TPROXY packet mark (default 1337)."
        case .tproxyRouteTable: "TPROXY route table (default 133)."
        case .inboundPorts: "Inbound ports to capture, or '*' (default); '' for none."
        case .inboundExcludePorts: "Inbound ports left alone with -b '*' (default 15090,15021,15020)."
        case .outboundCIDRs: "Outbound CIDRs to capture, or '*' (default); '' for none."
        case .outboundExcludeCIDRs: "Outbound CIDRs never captured."
        case .outboundPorts: "Outbound ports always captured."
        case .outboundExcludePorts: "Outbound ports never captured (TCP and UDP)."
        case .kubeVirtInterfaces: "Interfaces whose inbound traffic is captured as outbound."
        case .excludeInterfaces: "Interfaces never captured."
        case .redirectDNS: "Capture DNS to the nameservers to :15053."
        case .captureAllDNS: "With --redirect-dns: capture all port 53 traffic."
        case .dnsServers: "Nameservers --redirect-dns captures (default: /etc/resolv.conf's)."
        case .dropInvalid: "Drop conntrack-invalid packets."
        }
    }

    static var helpText: String {
        func line(_ names: String, _ value: Bool, _ help: String, _ environment: String) -> String {
            let flag = names + (value ? " <value>" : "")
            return "  " + flag.padded(to: 46) + help + " [\(environment)]"
        }
        var lines = ["Flags (each also read from the environment variable in brackets; a flag wins):"]
        for option in CaptureOption.allCases {
            lines.append(line(option.displayName, !option.isSwitch, help(for: option), option.environmentName))
        }
        for setting in Setting.allCases {
            lines.append(line(setting.displayName, !setting.isSwitch, setting.help, setting.environmentName))
        }
        lines.append("Also accepted and ignored: " + inapplicable.keys.sorted().map { "--\($0)" }.joined(separator: ", ") + ".")
        return lines.joined(separator: "\n")
    }

    private enum Flag {
        case option(CaptureOption)
        case setting(Setting)
        case inapplicable(String)
        case help

        var isSwitch: Bool {
            switch self {
            case .option(let option): option.isSwitch
            case .setting(let setting): setting.isSwitch
            case .inapplicable(let name): InitFlags.inapplicable[name]?.isSwitch ?? false
            case .help: true
            }
        }
    }

    private static func flag(named name: Substring, short: Bool) -> Flag? {
        if short {
            if name == "h" { return .help }
            if let option = CaptureOption.allCases.first(where: { $0.shortName.map { String($0) } == String(name) }) {
                return .option(option)
            }
            return Setting.allCases.first { $0.shortName.map { String($0) } == String(name) }.map(Flag.setting)
        }
        if name == "help" { return .help }
        if let option = CaptureOption(rawValue: String(name)) { return .option(option) }
        if let setting = Setting(rawValue: String(name)) { return .setting(setting) }
        return inapplicable[String(name)] != nil ? .inapplicable(String(name)) : nil
    }

    /// A command line `init` cannot read.
    struct ParseError: Error, CustomStringConvertible {
        let description: String
    }

    /// Parses `arguments` (after `init`); a refusal names the offending argument.
    init(arguments: [String]) throws(ParseError) {
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("-"), argument != "-" else {
                throw ParseError(description: "unexpected argument \"\(argument)\": init takes only flags")
            }
            if argument == "--" {
                guard index == arguments.count else {
                    throw ParseError(description: "unexpected argument \"\(arguments[index])\": init takes only flags")
                }
                break
            }
            let short = !argument.hasPrefix("--")
            let body = argument.drop { $0 == "-" }
            var name: Substring
            var inline: Substring?
            if let equals = body.firstIndex(of: "=") {
                name = body[..<equals]
                inline = body[body.index(after: equals)...]
            } else {
                name = body
            }
            // pflag also reads `-p15001`.
            if short, inline == nil, name.count > 1 {
                inline = name.dropFirst()
                name = name.prefix(1)
            }
            guard let flag = Self.flag(named: name, short: short) else {
                throw ParseError(description: "unknown flag \"\(argument)\" (see capstan init --help)")
            }
            let value: String
            if let inline {
                value = String(inline)
            } else if flag.isSwitch {
                value = "true"
            } else {
                guard index < arguments.count else {
                    throw ParseError(description: "flag \(argument) needs a value")
                }
                value = arguments[index]
                index += 1
            }
            switch flag {
            case .option(let option): options[option] = value
            case .setting(let setting): settings[setting] = value
            case .inapplicable(let name): ignored.append(name)
            case .help: help = true
            }
        }
    }
}
