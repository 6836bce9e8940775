import ArgumentParser
import Capture
import Netfilter
#if canImport(Glibc)
import Glibc
#endif

/// `capstan init` in `capstan --help`; its flags are parsed by ``InitFlags``, not by ArgumentParser.
struct InitCommandHelp: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Program capture rules (istio-iptables compatible) in a network namespace.",
        discussion: InitCommand.overview + "\n\n" + InitFlags.helpText
    )
}

/// `capstan init`: istio-iptables' flags, programmed as one nftables transaction in-process.
struct InitCommand {
    static let overview = """
        Defaults are the Istio injector's sidecar defaults, so a bare `capstan init` captures like a sidecar. \
        IPv4 and IPv6 are captured together. Exit status: 0 done, 1 the kernel refused, 2 bad input \
        (nothing changed), 126 --run-validation failed.
        """

    var flags: InitFlags

    /// Runs `capstan init ARGUMENTS` and returns the exit status.
    static func main(_ arguments: [String]) -> Int32 {
        do {
            let flags: InitFlags
            do {
                flags = try InitFlags(arguments: arguments)
            } catch {
                throw usageError(error.description)
            }
            if flags.help {
                print("USAGE: capstan init [flags]\n\n\(overview)\n\n\(InitFlags.helpText)")
                return 0
            }
            for name in flags.ignored {
                printError("capstan init: note: --\(name) has no effect: \(InitFlags.inapplicable[name]!.reason)")
            }
            try InitCommand(flags: flags).run()
            return 0
        } catch let exit as ExitCode {
            return exit.rawValue
        } catch {
            printError("capstan: error: \(error)")
            return 1
        }
    }

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
            writeLine("capstan init: removed table \(Ruleset.family) \(Ruleset.tableName) and its policy routing in \(place)")
            return
        }
        if !settings.skipRuleApply {
            let outcome = try runtime { try CaptureEngine.apply(spec, in: namespace) }
            let ruleset = RulesetRenderer.render(spec)
            let count = ruleset.chains.dropFirst().reduce(0) { $0 + $1.rules.count }
            let verb = outcome == .applied ? "applied" : "unchanged:"
            writeLine("capstan init: \(verb) table \(Ruleset.family) \(Ruleset.tableName) (\(count) rules, \(spec.interceptionMode.rawValue)) in \(place)")
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
            writeLine("capstan init: validation passed: \(outcome.detail)")
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
        func text(_ setting: InitFlags.Setting) -> String? {
            flags.settings[setting] ?? environment[setting.environmentName]
        }
        func switchValue(_ setting: InitFlags.Setting) throws -> Bool {
            guard let value = text(setting) else { return false }
            guard let parsed = Bool(switchText: value) else {
                throw usageError("invalid value \"\(value)\" for \(setting.displayName): must be true or false")
            }
            return parsed
        }
        let path = text(.networkNamespace)
        if let path, !path.isEmpty, let problem = NetworkNamespace.problem(with: path) {
            throw usageError("invalid value \"\(path)\" for --network-namespace: \(problem)")
        }
        let portText = text(.probePort) ?? "15002"
        guard let port = UInt16(portText), port > 0 else {
            throw usageError("invalid value \"\(portText)\" for --iptables-probe-port: a port must be 1-65535")
        }
        let timeoutText = text(.probeTimeout) ?? "5s"
        guard let timeout = Self.milliseconds(timeoutText), timeout > 0 else {
            throw usageError("invalid value \"\(timeoutText)\" for --probe-timeout: expected a duration such as 5s or 500ms")
        }
        return Settings(
            dryRun: try switchValue(.dryRun),
            cleanupOnly: try switchValue(.cleanupOnly),
            runValidation: try switchValue(.runValidation),
            skipRuleApply: try switchValue(.skipRuleApply),
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
        var options: [CaptureOption: String] = [:]
        for option in CaptureOption.allCases {
            if let value = flags.options[option] ?? environment.value(for: option) {
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
