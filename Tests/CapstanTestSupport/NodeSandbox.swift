import Foundation
import Netfilter
import NodeAgent

/// A throw-away Kubernetes-like node: a "node" network namespace with a bridge the reference CNI plugins
/// build, pod namespaces plugged into it, a scratch directory holding the CNI bin and conf directories,
/// pod metadata and agent state, and `capstan node-agent` running in the node namespace.
///
/// ```
///   node ns: bridge cst0 198.18.0.1/24 ── veth ── pod ns eth0 198.18.0.N/24   (one per pod)
/// ```
/// 198.18.0.0/15 is the benchmarking range; nothing has a default route.
public final class NodeSandbox: @unchecked Sendable {
    public static let gateway = IPAddress("198.18.0.1")!

    public let name: String
    public let nodeNamespaceName: String
    public let node: NetworkNamespace
    public let directory: String
    private var podNamespaces: [String] = []
    private var agent: Process?
    private var destroyed = false
    private let lock = NSLock()

    public var binDirectory: String { "\(directory)/bin" }
    public var confDirectory: String { "\(directory)/net.d" }
    public var metadataDirectory: String { "\(directory)/pods" }
    public var socketPath: String { "\(directory)/agent.sock" }
    public var statePath: String { "\(directory)/state/node-agent.json" }
    public var agentLogPath: String { "\(directory)/agent.log" }
    /// The primary network configuration, as the node's network plugin installed it.
    public var primaryConfPath: String { "\(confDirectory)/10-podnet.conflist" }

    private static let counter = Counter()

    public init() throws {
        name = "cst\(getpid())n\(Self.counter.next())"
        nodeNamespaceName = "\(name)-node"
        node = NetworkNamespace(path: "/run/netns/\(nodeNamespaceName)")
        directory = "/tmp/\(name)"
        do {
            try ChildProcess.require("/usr/sbin/ip", ["netns", "add", nodeNamespaceName])
            try ChildProcess.require("/usr/sbin/ip", ["-n", nodeNamespaceName, "link", "set", "lo", "up"])
            for path in [binDirectory, confDirectory, metadataDirectory] {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            }
            let conflist = """
                {"cniVersion": "1.0.0", "name": "podnet", "plugins": [
                  {"type": "bridge", "bridge": "cst0", "isGateway": true,
                   "ipam": {"type": "host-local", "subnet": "198.18.0.0/24", "dataDir": "\(directory)/ipam"}}]}
                """
            try conflist.write(toFile: primaryConfPath, atomically: true, encoding: .utf8)
        } catch {
            destroy()
            throw error
        }
    }

    deinit {
        destroy()
    }

    /// The runtime that calls the plugin chain of the primary configuration.
    public var runtime: CNIRuntime {
        CNIRuntime(conflistPath: primaryConfPath, binDirectories: [binDirectory, "/usr/lib/cni"], nodeNamespace: nodeNamespaceName)
    }

    /// A new, empty pod namespace (the runtime's sandbox before CNI ADD) and its identity for CNI calls.
    public func makePod(_ podName: String, namespace: String = "default") throws -> CNIRuntime.Pod {
        let index = lock.withLock { podNamespaces.count }
        let nsName = "\(name)-p\(index)"
        try ChildProcess.require("/usr/sbin/ip", ["netns", "add", nsName])
        lock.withLock { podNamespaces.append(nsName) }
        try ChildProcess.require("/usr/sbin/ip", ["-n", nsName, "link", "set", "lo", "up"])
        return CNIRuntime.Pod(containerID: "\(name)c\(index)", netns: "/run/netns/\(nsName)", name: podName, namespace: namespace)
    }

    /// Writes the pod's metadata (annotations, labels) where the agent's metadata directory source reads it.
    public func describePod(_ name: String, namespace: String = "default", annotations: [String: String] = [:],
                            labels: [String: String] = [:], hostNetwork: Bool = false) throws {
        let pod: [String: Any] = [
            "apiVersion": "v1", "kind": "Pod",
            "metadata": ["name": name, "namespace": namespace, "annotations": annotations, "labels": labels],
            "spec": ["hostNetwork": hostNetwork],
        ]
        try FileManager.default.createDirectory(atPath: "\(metadataDirectory)/\(namespace)", withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: pod).write(to: URL(fileURLWithPath: "\(metadataDirectory)/\(namespace)/\(name).json"))
    }

    // MARK: The node agent

    /// Starts `capstan node-agent --install-cni` in the node namespace and waits until it is ready
    /// (the plugin installed and chained).
    public func startAgent(_ extraArguments: [String] = []) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", nodeNamespaceName, Sandbox.capstanExecutable, "node-agent",
                             "--socket", socketPath, "--state-file", statePath, "--pod-metadata-dir", metadataDirectory,
                             "--install-cni", "--cni-bin-dir", binDirectory, "--cni-conf-dir", confDirectory,
                             "--health-port", "18000", "--metrics-port", "18014"] + extraArguments
        FileManager.default.createFile(atPath: agentLogPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: agentLogPath))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        lock.withLock { agent = process }
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if let ready = try? agentEndpoint("/readyz"), ready.status == 200 { return }
            guard process.isRunning else { break }
            usleep(20_000)
        }
        stopAgent()
        throw SandboxError("capstan node-agent did not become ready: \(agentLog)")
    }

    /// Stops the agent with SIGTERM (by its pid) and waits; its exit status.
    @discardableResult
    public func stopAgent(signal number: Int32 = SIGTERM) -> Int32? {
        guard let process = lock.withLock({ agent }) else { return nil }
        if process.isRunning { kill(process.processIdentifier, number) }
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        lock.withLock { agent = nil }
        return process.terminationStatus
    }

    /// The agent's pid (`ip netns exec` execs it), while it runs.
    public var agentPID: Int32? {
        lock.withLock { agent.flatMap { $0.isRunning ? $0.processIdentifier : nil } }
    }

    public var agentLog: String {
        (try? String(contentsOfFile: agentLogPath, encoding: .utf8)) ?? ""
    }

    /// A GET to the agent's health (18000) or metrics (18014) port, from inside the node namespace.
    public func agentEndpoint(_ path: String, port: UInt16 = 18000) throws -> (status: Int, body: String) {
        try HTTPProbe.request("GET", path, to: SocketAddress(.loopbackV4, port), in: node)
    }

    /// Asks the agent over its socket, as `capstan status --node` does.
    public func managedPods() throws -> [ManagedPodStatus] {
        try NodeAgentClient(socketPath: socketPath, timeout: .seconds(5)).send(AgentRequest(.list)).pods ?? []
    }

    // MARK: Clean-up

    /// Stops the agent and removes every namespace and the scratch directory; safe to call twice.
    public func destroy() {
        guard !lock.withLock({ let was = destroyed; destroyed = true; return was }) else { return }
        stopAgent(signal: SIGKILL)
        for namespace in lock.withLock({ podNamespaces }).reversed() + [nodeNamespaceName] {
            _ = try? ChildProcess.run("/usr/sbin/ip", ["netns", "delete", namespace])
        }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Runs `body` with a fresh node sandbox and removes it afterwards, whatever happens.
public func withNodeSandbox<T>(_ body: (NodeSandbox) throws -> T) throws -> T {
    let sandbox = try NodeSandbox()
    defer { sandbox.destroy() }
    return try body(sandbox)
}
