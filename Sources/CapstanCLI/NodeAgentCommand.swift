import ArgumentParser
import Capture
import Configuration
import Dispatch
import Logging
import Netfilter
import NodeAgent

/// `capstan node-agent`: programs capture into pods' namespaces from the node, so pods need no NET_ADMIN.
struct NodeAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node-agent",
        abstract: "Capture pods' traffic from a privileged node agent, driven by the capstan-cni plugin.",
        discussion: """
            Pod annotations come from the Kubernetes API when running in a cluster (the service account's \
            token and CA), or from --pod-metadata-dir (DIR/NAMESPACE/NAME.json, a Pod object each). \
            SIGTERM or SIGINT stops the agent; managed pods are recorded in --state-file and taken up again \
            at the next start.
            """
    )

    @Option(help: "Unix socket the CNI plugin talks to.")
    var socket = CNIPluginConfig.defaultAgentSocket
    @Option(help: "Where managed pods are recorded (0600).")
    var stateFile = "/var/lib/capstan/node-agent.json"
    @Option(help: "Node defaults: JSON with exclude_namespaces and capture (istio-iptables options).")
    var nodeDefaults: String?
    @Option(help: "Read pod metadata from this directory instead of the Kubernetes API.")
    var podMetadataDir: String?
    @Option(help: "Seconds between sweeps that re-check every managed pod.")
    var sweepInterval: Double = 10
    @Option(help: "Address of the health and metrics endpoints.")
    var healthAddress = "0.0.0.0"
    @Option(help: "Port of /healthz and /readyz.")
    var healthPort = 8000
    @Option(help: "Port of /metrics.")
    var metricsPort = 15014

    @Flag(help: "Install the capstan-cni binary and chain it into the CNI configuration, and keep it there.")
    var installCni = false
    @Option(help: "CNI binary directory.")
    var cniBinDir = "/opt/cni/bin"
    @Option(help: "CNI configuration directory.")
    var cniConfDir = "/etc/cni/net.d"
    @Option(help: "Primary CNI configuration file to chain into (default: the first, as runtimes read them).")
    var cniConfName: String?
    @Option(help: "Chain into the primary configuration (true) or write a configuration list of its own (false).")
    var chained = true
    @Option(help: "Seconds the CNI plugin waits for this agent before failing the pod's ADD.")
    var cniAgentTimeout: Double = 5
    @Flag(help: "Leave the plugin installed on exit (upgrades in place).")
    var keepCniOnExit = false

    func validate() throws {
        if sweepInterval <= 0 { throw ValidationError("invalid value \"\(sweepInterval)\" for --sweep-interval: must be positive") }
        if cniAgentTimeout <= 0 { throw ValidationError("invalid value \"\(cniAgentTimeout)\" for --cni-agent-timeout: must be positive") }
        for (name, port) in [("--health-port", healthPort), ("--metrics-port", metricsPort)] where !(1...65535).contains(port) {
            throw ValidationError("invalid value \"\(port)\" for \(name): expected a port number 1-65535")
        }
        if socket.utf8.count > 107 { throw ValidationError("invalid value \"\(socket)\" for --socket: longer than 107 bytes") }
        if let podMetadataDir, SystemFile.names(in: podMetadataDir) == nil {
            throw ValidationError("invalid value \"\(podMetadataDir)\" for --pod-metadata-dir: cannot read the directory")
        }
    }

    func run() async throws {
        var logger = Logger(label: "capstan.node-agent")
        logger.logLevel = .info
        let defaults = try loadNodeDefaults()
        let metadata: any PodMetadataSource
        if let podMetadataDir {
            metadata = PodMetadataDirectory(directory: podMetadataDir)
        } else {
            do {
                metadata = try KubernetesPodSource.inCluster()
            } catch {
                throw usageError("no pod metadata: \(error); outside a cluster, give --pod-metadata-dir")
            }
        }
        let stateDirectory = String(stateFile[..<(stateFile.lastIndex(of: "/") ?? stateFile.startIndex)])
        if !stateDirectory.isEmpty { try SystemFile.makeDirectory(stateDirectory, mode: 0o700) }

        var settings = NodeAgentDaemon.Settings()
        settings.socketPath = socket
        settings.sweepInterval = .milliseconds(Int64(sweepInterval * 1000))
        settings.healthAddress = healthAddress
        settings.healthPort = healthPort
        settings.metricsPort = metricsPort
        settings.uninstallOnExit = !keepCniOnExit
        if installCni {
            settings.installer = CNIInstaller(
                binDirectory: cniBinDir, confDirectory: cniConfDir, primaryConfName: cniConfName, chained: chained,
                pluginSettings: [
                    "agent_socket": .string(socket),
                    "agent_timeout": .string("\(cniAgentTimeout)s"),
                    "exclude_namespaces": .array(defaults.excludeNamespaces.sorted().map(ConfigValue.string)),
                ],
                sourceBinary: "/proc/self/exe")
        }
        let daemon = NodeAgentDaemon(
            settings: settings,
            configuration: NodeAgent.Configuration(policy: PodCapturePolicy(defaults: defaults), metadata: metadata,
                                                   store: ManagedPodStore(path: stateFile)),
            logger: logger)
        let termination = TerminationSignal()
        try await daemon.run { await termination.wait() }
    }

    private func loadNodeDefaults() throws -> NodeDefaults {
        guard let nodeDefaults else { return NodeDefaults() }
        guard let text = SystemFile.read(nodeDefaults) else {
            throw usageError("invalid value \"\(nodeDefaults)\" for --node-defaults: cannot read the file")
        }
        do {
            return try NodeDefaults(json: text)
        } catch {
            throw usageError("invalid node defaults \(nodeDefaults): \(error)")
        }
    }
}

/// Waits for SIGTERM or SIGINT.
final class TerminationSignal: @unchecked Sendable {
    private let stream: AsyncStream<Int32>
    private let sources: [any DispatchSourceSignal]

    init() {
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        self.stream = stream
        sources = [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            return source
        }
    }

    func wait() async {
        for await _ in stream { return }
    }
}

#if canImport(Glibc)
import Glibc
#endif
