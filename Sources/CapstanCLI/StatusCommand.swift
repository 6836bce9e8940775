import ArgumentParser
import Capture
import FoundationEssentials
import Glibc
import HTTPEndpoints
import Netfilter
import NodeAgent

/// `capstan status`: what the kernel holds, what it means, whether it drifted, and what it does with a
/// given connection; and, when a sidecar agent answers in the namespace, what the sidecar reports.
struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show and explain the capture rules of a network namespace, and find drift.",
        discussion: """
            When `capstan agent` answers on 127.0.0.1:15020 in the namespace, a Sidecar section follows: \
            readiness, the workload identity and its certificate, the xDS state and accepted versions, the \
            proxy's state, restarts and listeners (from the proxy's admin API on 127.0.0.1:15000). \
            Exit status: 0 when the rules are present and match their recorded spec, 1 when they are missing \
            or drifted, 2 on a usage error; the sidecar does not change it. With --trace: 0 when the trace ran.
            """
    )

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, json
    }

    @Option(name: .customLong("network-namespace"), help: "Read this network namespace (e.g. /var/run/netns/NAME).")
    var networkNamespace: String?
    @Option(name: [.customShort("o"), .customLong("output")], help: "text or json.")
    var format: Format = .text
    @Flag(name: [.customShort("v"), .customLong("verbose")], help: "Show each rule's nftables text.")
    var verbose = false

    @Option(name: .customLong("trace"), help: "Explain a connection: tcp|udp:ADDR:PORT (IPv6 as [ADDR]:PORT).")
    var trace: String?
    @Option(name: .customLong("uid"), help: "Trace: uid of the connecting process (default 0).")
    var uid: UInt32 = 0
    @Option(name: .customLong("gid"), help: "Trace: gid of the connecting process (default 0).")
    var gid: UInt32 = 0
    @Flag(name: .customLong("inbound"), help: "Trace: the connection arrives from outside the pod.")
    var inbound = false
    @Option(name: .customLong("source"), help: "Trace: source address (default: an address outside the pod).")
    var source: String?
    @Option(name: .customLong("interface"), help: "Trace, inbound: the interface it arrives on.")
    var interface: String?

    @Flag(name: .customLong("node"), help: "List the pods the node agent manages, and their health.")
    var node = false
    @Option(name: .customLong("agent-socket"), help: "With --node: the node agent's socket.")
    var agentSocket = CNIPluginConfig.defaultAgentSocket

    func run() async throws {
        if node {
            try NodeStatus(socket: agentSocket, format: format).show()
            return
        }
        let path = networkNamespace ?? ProcessEnvironment()["NETWORK_NAMESPACE"]
        if let path, let problem = NetworkNamespace.problem(with: path) {
            throw usageError("invalid value \"\(path)\" for --network-namespace: \(problem)")
        }
        let namespace = NetworkNamespace(path: path)
        let place = path ?? "current network namespace"
        let style = TerminalStyle(enabled: format == .text && TerminalStyle.standardOutputIsColourTerminal)

        if let trace {
            let query = try traceQuery(trace)
            let result = try runtime { try CaptureEngine.trace(query, in: namespace) }
            switch format {
            case .text: print(StatusView(style: style).render(result), terminator: "")
            case .json: print(try StatusDocument.Trace(result).json())
            }
            return
        }

        let installed = try runtime { try CaptureEngine.inspect(in: namespace) }
        let reader = SidecarStatusReader(connector: NamespaceConnector(namespace: namespace).connector)
        let sidecar: Result<SidecarStatus, OneShotHTTPClient.Failure>
        do {
            sidecar = .success(try await reader.read())
        } catch {
            sidecar = .failure(error)
        }
        let now = Date()
        switch format {
        case .text:
            let view = StatusView(style: style, verbose: verbose)
            print(view.render(installed, place: place) + view.render(sidecar: sidecar, reader: reader, now: now), terminator: "")
        case .json:
            print(try StatusDocument(installed, namespace: place,
                                     sidecar: StatusDocument.Sidecar(sidecar, reader: reader, now: now)).json())
        }
        if !installed.isIntact { throw ExitCode(1) }
    }

    func traceQuery(_ text: String) throws -> TraceQuery {
        guard let (transport, address, port) = TraceQuery.parseTarget(text) else {
            throw usageError("invalid value \"\(text)\" for --trace: expected tcp|udp:ADDR:PORT, e.g. tcp:10.0.0.5:8080")
        }
        var sourceAddress: IPAddress?
        if let source {
            guard let parsed = IPAddress(source), parsed.family == address.family else {
                throw usageError("invalid value \"\(source)\" for --source: expected an \(address.family == .ipv4 ? "IPv4" : "IPv6") address")
            }
            sourceAddress = parsed
        }
        return TraceQuery(transport: transport, destination: address, destinationPort: port, uid: uid, gid: gid,
                          inbound: inbound, source: sourceAddress, interface: interface)
    }
}

#if canImport(Glibc)
import Supervisor
#endif
