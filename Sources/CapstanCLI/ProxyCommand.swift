import ArgumentParser
import DataPlane
import Netfilter
import Dispatch
import XDS
#if canImport(Glibc)
import Glibc
#endif

/// `capstan proxy`: the packaged data plane, as the agent launches it (or by hand).
struct ProxyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract: "Run the transparent proxy: outbound :15001, inbound :15006, admin 127.0.0.1:15000, metrics :15090.",
        discussion: """
            Without configuration it is a passthrough, as Istio's PassthroughCluster. SIGTERM drains all \
            listeners gracefully and exits 0 when their connections are done (or at --drain-time-s); SIGINT \
            exits at once.
            """
    )

    @Option(name: .customLong("config"), help: "Bootstrap file, an Envoy bootstrap in YAML (.yaml, .yml) or JSON (.json): static listeners and clusters, and dynamic_resources over ADS.")
    var config: String?
    @Option(name: .customLong("service-node"), help: "The node id the control plane knows this proxy by (overrides the bootstrap's node.id), e.g. sidecar~10.0.0.7~pod.ns~ns.svc.cluster.local.")
    var serviceNode: String?
    @Option(name: .customLong("outbound-port"), help: "Outbound capture port.")
    var outboundPort = 15001
    @Option(name: .customLong("inbound-port"), help: "Inbound capture port.")
    var inboundPort = 15006
    @Option(name: .customLong("inbound-interception-mode"), help: "REDIRECT or TPROXY, as given to capstan init -m.")
    var interception = "REDIRECT"
    @Option(name: .customLong("tproxy-mark"), help: "The TPROXY mark (capstan init -t).")
    var tproxyMark: UInt32 = 1337
    @Option(name: .customLong("admin-port"), help: "Admin API port, on 127.0.0.1.")
    var adminPort = 15000
    @Option(name: .customLong("stats-port"), help: "Prometheus port (/stats/prometheus).")
    var statsPort = 15090
    @Option(name: .customLong("concurrency"), help: "Event loops.")
    var concurrency = 2
    @Option(name: .customLong("drain-time-s"), help: "Graceful drain deadline, seconds.")
    var drainTime = 45
    @Option(name: .customLong("connect-timeout-ms"), help: "Upstream connect timeout, milliseconds.")
    var connectTimeout = 10_000
    @Option(name: .customLong("idle-timeout-s"), help: "Close connections idle this long, seconds.")
    var idleTimeout = 3600
    @Option(name: .customLong("proxy-uid"), help: "Run as this uid (capstan init -u); started as root, the proxy switches before serving.")
    var proxyUID: UInt32 = 1337
    @Option(name: .customLong("proxy-gid"), help: "Run as this gid (capstan init -g).")
    var proxyGID: UInt32 = 1337

    func validate() throws {
        for (name, port) in [("--outbound-port", outboundPort), ("--inbound-port", inboundPort),
                             ("--admin-port", adminPort), ("--stats-port", statsPort)] where !(1...65535).contains(port) {
            throw ValidationError("invalid value \"\(port)\" for \(name): a port must be 1-65535")
        }
        guard ProxyOptions.InboundInterception(rawValue: interception.uppercased()) != nil else {
            throw ValidationError("invalid value \"\(interception)\" for --inbound-interception-mode: must be REDIRECT or TPROXY")
        }
        if let serviceNode, ProxyNodeID(serviceNode) == nil {
            throw ValidationError("invalid value \"\(serviceNode)\" for --service-node: expected TYPE~IP~POD.NAMESPACE~DOMAIN")
        }
        guard (1...256).contains(concurrency) else {
            throw ValidationError("invalid value \"\(concurrency)\" for --concurrency: must be 1-256")
        }
        for (name, value) in [("--drain-time-s", drainTime), ("--connect-timeout-ms", connectTimeout),
                              ("--idle-timeout-s", idleTimeout)] where value <= 0 {
            throw ValidationError("invalid value \"\(value)\" for \(name): must be positive")
        }
    }

    func run() throws {
        var options = ProxyOptions()
        options.outboundPort = outboundPort
        options.inboundPort = inboundPort
        options.inboundInterception = ProxyOptions.InboundInterception(rawValue: interception.uppercased())!
        options.tproxyMark = tproxyMark
        options.adminPort = adminPort
        options.statsPort = statsPort
        options.concurrency = concurrency
        options.drainTime = .seconds(Int64(drainTime))
        options.connectTimeout = .milliseconds(Int64(connectTimeout))
        options.idleTimeout = .seconds(Int64(idleTimeout))
        if let config {
            options.bootstrap = try loadBootstrap(config)
            if let serviceNode {
                options.bootstrap?.dynamicResources?.node.id = serviceNode
            }
        }

        // Before any thread exists: the event loops inherit the identity and capabilities.
        do {
            try ProxyIdentity(uid: proxyUID, gid: proxyGID).adopt(keepNetAdmin: options.inboundInterception == .tproxy)
        } catch {
            printError("capstan proxy: error: \(error)")
            throw ExitCode(1)
        }
        let proxy = Proxy(options: options)
        let signals = SignalHandlers(proxy: proxy)
        do {
            try proxy.start()
        } catch {
            printError("capstan proxy: error: cannot start: \(error)")
            proxy.stop()
            throw ExitCode(1)
        }
        let waiting = options.bootstrap?.dynamicResources.map { " (LIVE once the first listeners from \($0.server) are in force)" } ?? ""
        printError("capstan proxy: started\(waiting): outbound :\(outboundPort), inbound :\(inboundPort) (\(options.inboundInterception.rawValue)), admin 127.0.0.1:\(adminPort), metrics :\(statsPort)")
        try proxy.waitUntilStopped()
        withExtendedLifetime(signals) {}
    }
}

/// Reads and checks a bootstrap file, YAML or JSON by its name (or its first character); a bad one is a
/// usage error naming the field. Fields ignored, and those accepted but not acted on, are warnings.
private func loadBootstrap(_ path: String) throws -> BootstrapConfig {
    guard let text = SystemFile.read(path) else {
        throw usageError("invalid value \"\(path)\" for --config: cannot read the file")
    }
    let format = BootstrapConfig.Format(path: path, text: text)
    do {
        let bootstrap = try BootstrapConfig.parse(text, format: format)
        for warning in bootstrap.warnings + bootstrap.allFieldsNotActedOn {
            printError("capstan proxy: warning: \(path): \(warning)")
        }
        return bootstrap
    } catch {
        throw usageError("invalid bootstrap \(path) (\(format.rawValue)): \(error)")
    }
}

/// SIGTERM: graceful drain of every listener, then exit. SIGINT: exit now.
private final class SignalHandlers: @unchecked Sendable {
    private let sources: [DispatchSourceSignal]

    init(proxy: Proxy) {
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        let terminate = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
        terminate.setEventHandler { proxy.drain(inboundOnly: false, graceful: true) }
        let interrupt = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        interrupt.setEventHandler { proxy.stop() }
        sources = [terminate, interrupt]
        sources.forEach { $0.resume() }
    }
}
