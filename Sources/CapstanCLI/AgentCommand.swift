import ArgumentParser
import DataPlane
import Dispatch
import Logging
import NodeAgent
import Supervisor
#if canImport(Glibc)
import Glibc
#endif

/// `capstan agent`: the pod's sidecar supervisor, configured by Istio's environment variables.
struct AgentCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the sidecar: workload certificate, xDS relay, the proxy, readiness and drain (pilot-agent's job).",
        discussion: """
            Reads Istio's environment (POD_NAME, POD_NAMESPACE, INSTANCE_IP, SERVICE_ACCOUNT, TRUST_DOMAIN, CA_ADDR, \
            PROXY_CONFIG, SECRET_TTL, SECRET_GRACE_PERIOD_RATIO, OUTPUT_CERTS, ISTIO_META_*, MINIMUM_DRAIN_DURATION, \
            TERMINATION_DRAIN_DURATION_SECONDS, …). Order: status server (:15020, :15021), first certificate from the \
            CA, SDS and the xDS relay on unix sockets in the socket directory, then the proxy (this binary's `proxy`) \
            with a generated bootstrap. Ready when the proxy is LIVE with accepted listeners and clusters and the \
            certificate is valid. SIGTERM drains inbound, keeps outbound working, and exits 0 once inbound \
            connections are gone (after MINIMUM_DRAIN_DURATION) or at TERMINATION_DRAIN_DURATION_SECONDS. \
            Started as root, the agent becomes the proxy's uid first (1337), as istio-proxy runs, so its own \
            traffic to the control plane is not captured.

            As a gateway (--type router, or Istio's `proxy router` arguments) the node id is router~…, nothing \
            is captured, the control plane's listeners bind the Gateway's ports, and SIGTERM makes readiness \
            fail while those listeners keep serving for TERMINATION_DRAIN_DURATION_SECONDS, so a load balancer \
            can take the pod out before the proxy stops.
            """
    )

    @Argument(help: ArgumentHelp("Istio's form: `proxy sidecar` or `proxy router` (as pilot-agent is invoked).", valueName: "proxy TYPE"))
    var istioArguments: [String] = []
    @Option(name: .customLong("type"), help: "sidecar (default) or router: a gateway, with no capture, its listeners on the Gateway's ports (pilot-agent's `proxy router`).")
    var type: String?
    @Option(name: .customLong("domain"), help: "Istio's --domain (POD_NAMESPACE.svc.cluster.local); only that value is accepted.")
    var domain: String?
    @Option(name: .customLong("socket-dir"), help: "Directory for the XDS and SDS sockets and the bootstrap (default /etc/istio/proxy).")
    var socketDirectory: String?
    @Option(name: .customLong("token-path"), help: "The bearer token for the CA and control plane (default per JWT_POLICY).")
    var tokenPath: String?
    @Option(name: .customLong("root-cert"), help: "Root certificate the control plane and CA are verified against (default XDS_ROOT_CA, /var/run/secrets/istio/root-cert.pem).")
    var rootCert: String?
    @Flag(name: .customLong("plaintext-control-plane"), help: "Talk to the CA and control plane without TLS (tests only).")
    var plaintext = false
    @Option(name: .customLong("status-port"), help: "Status port (default 15020).")
    var statusPort: Int?
    @Option(name: .customLong("readiness-port"), help: "Readiness port for kubelet probes (default 15021).")
    var readinessPort: Int?
    @Option(name: .customLong("proxy-binary"), help: "The proxy to run (default: this binary's `proxy`).")
    var proxyBinary: String?
    @Option(name: .customLong("log-level"), help: "debug, info, warning or error.")
    var logLevel = "info"

    /// The proxy type from `--type` or Istio's `proxy TYPE` arguments, refused when they disagree.
    func proxyType() throws -> ProxyType {
        var fromArguments: ProxyType?
        if !istioArguments.isEmpty {
            guard istioArguments.count == 2, istioArguments[0] == "proxy", let parsed = ProxyType(rawValue: istioArguments[1]) else {
                throw ValidationError("invalid arguments \"\(istioArguments.joined(separator: " "))\": expected `proxy sidecar` or `proxy router`")
            }
            fromArguments = parsed
        }
        var fromFlag: ProxyType?
        if let type {
            guard let parsed = ProxyType(rawValue: type) else {
                throw ValidationError("invalid value \"\(type)\" for --type: must be sidecar or router")
            }
            fromFlag = parsed
        }
        if let fromFlag, let fromArguments, fromFlag != fromArguments {
            throw ValidationError("--type \(fromFlag.rawValue) and `proxy \(fromArguments.rawValue)` disagree")
        }
        return fromFlag ?? fromArguments ?? .sidecar
    }

    func validate() throws {
        _ = try proxyType()
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("invalid value \"\(logLevel)\" for --log-level: must be debug, info, warning or error")
        }
    }

    func run() throws {
        var settings: AgentSettings
        do {
            settings = try AgentSettings(environment: ProcessEnvironmentReader.all)
            if let socketDirectory { settings.socketDirectory = socketDirectory }
            if let tokenPath { settings.tokenPath = tokenPath }
            if let rootCert {
                settings.xdsRootCertPath = rootCert
                settings.caRootCertPath = rootCert
            }
            if plaintext { settings.plaintextControlPlane = true }
            settings.proxyType = try proxyType()
            if let domain, domain != settings.nodeID.dnsDomain {
                throw ValidationError("invalid value \"\(domain)\" for --domain: the node id's domain is \(settings.nodeID.dnsDomain)")
            }
            if let statusPort { settings.statusPort = statusPort }
            if let readinessPort { settings.readinessPort = readinessPort }
            try settings.validate()
        } catch {
            throw usageError("\(error)")
        }
        for warning in settings.warnings { printError("capstan agent: warning: \(warning)") }

        // Before any thread exists, as the proxy does: the agent's own connections (CA, control plane)
        // then leave the pod uncaptured, like pilot-agent's as uid 1337.
        let tproxy = settings.nodeMetadata["INTERCEPTION_MODE"] == "TPROXY"
        do {
            try ProxyIdentity(uid: settings.proxyUID, gid: settings.proxyGID).adopt(keepNetAdmin: tproxy)
        } catch {
            printError("capstan agent: error: \(error)")
            throw ExitCode(1)
        }

        var logger = Logger(label: "capstan.agent")
        logger.logLevel = Logger.Level(rawValue: logLevel)!
        let proxyArguments = ["--admin-port", String(settings.proxyAdminPort), "--stats-port", String(settings.proxyStatsPort),
                              "--concurrency", String(settings.proxyConcurrency),
                              "--drain-time-s", String(max(1, settings.proxyDrainDuration.components.seconds)),
                              "--inbound-interception-mode", tproxy ? "TPROXY" : "REDIRECT"]
        let agent = Agent(settings: settings, proxyExecutable: proxyBinary ?? Self.ownExecutable,
                          proxyArguments: proxyArguments, logger: logger)
        let signals = AgentSignals(agent: agent)
        printError("capstan agent: \(settings.proxyType.rawValue) \(settings.identity) on \(settings.instanceIPs.joined(separator: ",")), control plane \(settings.discoveryAddress), CA \(settings.caAddress)")
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var ending = Agent.Ending.stopped
        Task.detached {
            ending = await agent.run()
            done.signal()
        }
        done.wait()
        withExtendedLifetime(signals) {}
        switch ending {
        case .stopped:
            printError("capstan agent: stopped")
        case .proxyGaveUp(let reason):
            printError("capstan agent: error: \(reason)")
            throw ExitCode(1)
        case .failedToStart(let reason):
            printError("capstan agent: error: \(reason)")
            throw ExitCode(1)
        }
    }

    /// The running binary, which is also the proxy.
    private static var ownExecutable: String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return count > 0 ? String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }
}

/// SIGTERM and SIGINT: drain and stop (Kubernetes sends SIGTERM to the container's first process).
private final class AgentSignals: @unchecked Sendable {
    private let sources: [DispatchSourceSignal]

    init(agent: Agent) {
        sources = [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { agent.terminate() }
            source.resume()
            return source
        }
    }
}
