import Foundation
import Netfilter

/// A small mesh of pods for agent and mTLS tests: each pod is a network namespace whose eth0 is a veth
/// plugged into one bridge in a "hub" namespace, on 192.0.2.0/24 (documentation addresses, no route out,
/// no uplink). Service VIPs in 198.51.100.0/24 are routed to the hub, where nothing answers: they only
/// exist to be captured.
///
/// Everything it makes (namespaces, files under `/tmp/NAME`, processes) goes in `destroy()`, which the
/// ``withMeshCluster(_:)`` helper calls whatever happens.
public final class MeshCluster: @unchecked Sendable {
    public static let hubV4 = IPAddress("192.0.2.254")!
    public static let controlPlaneV4 = IPAddress("192.0.2.2")!

    /// One pod: its namespace, address, and what runs in it.
    public final class Pod: @unchecked Sendable {
        public let name: String
        public let namespace: NetworkNamespace
        public let address: IPAddress
        public var processes: [NamespacedProcess] = []
        public var servers: [EchoServer] = []

        init(name: String, namespace: NetworkNamespace, address: IPAddress) {
            self.name = name
            self.namespace = namespace
            self.address = address
        }

        /// An HTTP request to 127.0.0.1:`port` inside the pod (admin, status and health endpoints).
        public func http(_ method: String, _ path: String, port: UInt16) throws -> (status: Int, body: String) {
            try HTTPProbe.request(method, path, to: SocketAddress(.loopbackV4, port), in: namespace)
        }
    }

    public let name: String
    /// Files of this cluster (configuration, CA, tokens, logs): `/tmp/NAME`.
    public let directory: String
    private let hub: String
    private var namespaceNames: [String] = []
    public private(set) var pods: [String: Pod] = [:]
    private var destroyed = false

    public init() throws {
        // Numbered with the sandboxes, so hack/test.sh recognizes leftovers of a test process that died.
        name = "cst\(getpid())x\(Sandbox.counter.next())"
        directory = "/tmp/\(name)"
        hub = "\(name)-hub"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        do {
            try ChildProcess.require("/usr/sbin/ip", ["netns", "add", hub])
            namespaceNames.append(hub)
            try ip(hub, "link", "set", "lo", "up")
            try ip(hub, "link", "add", "br0", "type", "bridge")
            try ip(hub, "addr", "add", "\(Self.hubV4)/24", "dev", "br0")
            try ip(hub, "link", "set", "br0", "up")
        } catch {
            destroy()
            throw error
        }
    }

    deinit {
        destroy()
    }

    /// A new pod at `address` on the bridge; `short` is its name in the cluster (and in its namespace's name).
    @discardableResult
    public func addPod(_ short: String, address: IPAddress) throws -> Pod {
        let namespace = "\(name)-\(short)"
        try ChildProcess.require("/usr/sbin/ip", ["netns", "add", namespace])
        namespaceNames.append(namespace)
        let port = "p\(pods.count)"
        try ip(namespace, "link", "set", "lo", "up")
        try ip(namespace, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", hub)
        try ip(hub, "link", "set", port, "master", "br0")
        try ip(hub, "link", "set", port, "up")
        try ip(namespace, "addr", "add", "\(address)/24", "dev", "eth0")
        try ip(namespace, "link", "set", "eth0", "up")
        try ip(namespace, "route", "add", "198.51.100.0/24", "via", "\(Self.hubV4)")
        let pod = Pod(name: short, namespace: NetworkNamespace(path: "/run/netns/\(namespace)"), address: address)
        pods[short] = pod
        return pod
    }

    /// A namespace reachable from `gateway` only, standing in for the internet behind an egress gateway:
    /// a veth from the gateway pod's `eth1` (`gatewayAddress`/24) to the new namespace's `eth0`
    /// (`addresses`, each /24 on one subnet no other pod has a route to). Nothing in it routes anywhere
    /// else, so only the gateway's connections reach it (and it sees the gateway's `gatewayAddress`).
    @discardableResult
    public func addNetwork(_ short: String, beyond gateway: Pod, gatewayAddress: IPAddress, addresses: [IPAddress]) throws -> Pod {
        let namespace = "\(name)-\(short)"
        try ChildProcess.require("/usr/sbin/ip", ["netns", "add", namespace])
        namespaceNames.append(namespace)
        let gatewayNamespace = "\(name)-\(gateway.name)"
        try ip(namespace, "link", "set", "lo", "up")
        try ip(gatewayNamespace, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", namespace)
        try ip(gatewayNamespace, "addr", "add", "\(gatewayAddress)/24", "dev", "eth1")
        try ip(gatewayNamespace, "link", "set", "eth1", "up")
        for address in addresses { try ip(namespace, "addr", "add", "\(address)/24", "dev", "eth0") }
        try ip(namespace, "link", "set", "eth0", "up")
        let pod = Pod(name: short, namespace: NetworkNamespace(path: "/run/netns/\(namespace)"), address: addresses[0])
        pods[short] = pod
        return pod
    }

    /// Istio's sidecar capture in `pod`, with the injector's flags (inbound: every port but the agent's and
    /// the proxy's own).
    public func capture(_ pod: Pod, extraFlags: [String] = []) throws {
        let result = try ChildProcess.run(Sandbox.capstanExecutable, [
            "init", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "",
            "-b", "*", "-d", "15090,15021,15020", "--network-namespace", pod.namespace.path!,
        ] + extraFlags)
        guard result.status == 0 else { throw SandboxError("capstan init in \(pod.name) failed: \(result)") }
    }

    /// Runs `capstan ARGUMENTS` in `pod` with `environment` added, logging to `DIRECTORY/POD-LABEL.log`.
    @discardableResult
    public func run(_ arguments: [String], in pod: Pod, label: String, environment: [String: String] = [:]) throws -> NamespacedProcess {
        let env = environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let command = env.isEmpty ? [Sandbox.capstanExecutable] + arguments : ["/usr/bin/env"] + env + [Sandbox.capstanExecutable] + arguments
        let process = try NamespacedProcess(command, in: pod.namespace, logPath: "\(directory)/\(pod.name)-\(label).log")
        pod.processes.append(process)
        return process
    }

    /// Writes `text` to `DIRECTORY/relativePath` (directories made as needed) with `mode`; its path.
    @discardableResult
    public func write(_ relativePath: String, _ text: String, mode: Int = 0o644, owner: uid_t? = nil) throws -> String {
        let path = "\(directory)/\(relativePath)"
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, mode_t(mode))
        if let owner { chown(path, owner, gid_t(owner)) }
        return path
    }

    /// A directory under this cluster's, owned by `owner` (the proxy uid, for an agent's sockets).
    @discardableResult
    public func makeDirectory(_ relativePath: String, owner: uid_t = 0) throws -> String {
        let path = "\(directory)/\(relativePath)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        chown(path, owner, gid_t(owner))
        return path
    }

    /// Stops every process (by its pid), removes every namespace and the files; safe to call twice.
    /// Processes our processes started (an agent's proxy) are found by the namespace they run in, which
    /// this cluster made, and ended by pid too, so none outlives the test.
    public func destroy() {
        guard !destroyed else { return }
        destroyed = true
        for pod in pods.values {
            for process in pod.processes.reversed() { process.stop() }
            pod.servers.removeAll()
        }
        for namespace in namespaceNames {
            let pids = (try? ChildProcess.run("/usr/sbin/ip", ["netns", "pids", namespace]))?.standardOutput ?? ""
            for pid in pids.split(separator: "\n").compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
        }
        for namespace in namespaceNames.reversed() {
            _ = try? ChildProcess.run("/usr/sbin/ip", ["netns", "delete", namespace])
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func ip(_ namespace: String, _ arguments: String...) throws {
        try ChildProcess.require("/usr/sbin/ip", ["-n", namespace] + arguments)
    }
}

extension MeshCluster {
    /// The service accounts of namespace `shop` the CA knows, each with its token.
    public static let serviceAccounts = ["client", "payments", "reviews", "billing", "istio-ingressgateway", "istio-egressgateway"]
    public static func token(for serviceAccount: String) -> String { "token-shop-\(serviceAccount)-0123456789abcdef" }
    public static let xdsAddress = "192.0.2.2:15010"
    public static let secureAddress = "192.0.2.2:15012"

    /// The control plane's pod (192.0.2.2) serving `files` (Istio YAML) on 15010, and ADS plus the CA over
    /// TLS on 15012; the CA's root is published in `DIRECTORY/root-cert.pem`.
    @discardableResult
    public func startControlPlane(files: [String: String], arguments: [String] = []) throws -> Pod {
        let pod = try addPod("istiod", address: Self.controlPlaneV4)
        for (name, text) in files { try write("mesh/\(name)", text) }
        let tokens = Self.serviceAccounts.map { "\(Self.token(for: $0)) shop/\($0)" }.joined(separator: "\n")
        try write("ca-tokens", tokens + "\n", mode: 0o600)
        let process = try run(["control-plane", "--config-dir", "\(directory)/mesh", "--xds-address", Self.xdsAddress,
                               "--ca-dir", "\(directory)/ca", "--ca-tokens", "\(directory)/ca-tokens",
                               "--secure-xds-address", Self.secureAddress] + arguments, in: pod, label: "control-plane")
        guard process.waitUntil(seconds: 10, { process.log.contains("serving ADS and the CA over TLS") }) else {
            throw SandboxError("control plane did not start: \(process.log)")
        }
        // The CA's directory is private; the root is published, as istiod's istio-ca-root-cert ConfigMap.
        try write("root-cert.pem", try String(contentsOfFile: "\(directory)/ca/root-cert.pem", encoding: .utf8))
        return pod
    }

    /// A sidecar-injected workload: a pod with capture, an echo server on `appPort` (if any) and
    /// `capstan agent` for `serviceAccount` in namespace shop, started and (unless `untilReady` is false)
    /// ready. `environment` adds to or overrides the agent's Istio variables.
    @discardableResult
    public func addWorkload(_ short: String, address: IPAddress, serviceAccount: String, appPort: UInt16? = 80,
                            environment: [String: String] = [:], untilReady: Bool = true) throws -> Pod {
        let pod = try addPod(short, address: address)
        try capture(pod)
        if let appPort { pod.servers.append(try EchoServer(in: pod.namespace, port: appPort)) }
        let agent = try startAgent(in: pod, serviceAccount: serviceAccount, environment: environment)
        if untilReady { try waitReady(pod, agent: agent) }
        return pod
    }

    /// Starts `capstan agent` in `pod` (as root; it becomes uid 1337 itself), with `arguments` after its
    /// own (`["proxy", "router"]` for a gateway).
    @discardableResult
    public func startAgent(in pod: Pod, serviceAccount: String, environment: [String: String] = [:],
                           label: String = "agent", arguments: [String] = []) throws -> NamespacedProcess {
        let sockets = try makeDirectory("\(pod.name)/sockets", owner: 1337)
        let certificates = try makeDirectory("\(pod.name)/certs", owner: 1337)
        let token = try write("\(pod.name)/token", Self.token(for: serviceAccount) + "\n", mode: 0o600, owner: 1337)
        var variables = [
            "POD_NAME": "\(pod.name)-7d9f", "POD_NAMESPACE": "shop", "INSTANCE_IP": "\(pod.address)",
            "SERVICE_ACCOUNT": serviceAccount, "PROXY_CONFIG": #"{"discoveryAddress": "\#(Self.secureAddress)"}"#,
            "OUTPUT_CERTS": certificates, "MINIMUM_DRAIN_DURATION": "1s", "TERMINATION_DRAIN_DURATION_SECONDS": "5",
        ]
        variables.merge(environment) { $1 }
        return try run(["agent", "--socket-dir", sockets, "--token-path", token, "--root-cert", "\(directory)/root-cert.pem"] + arguments,
                       in: pod, label: label, environment: variables)
    }

    /// Waits until the agent in `pod` answers 200 on :15021/healthz/ready.
    public func waitReady(_ pod: Pod, agent: NamespacedProcess, seconds: Double = 10) throws {
        guard agent.waitUntil(seconds: seconds, { (try? pod.http("GET", "/healthz/ready", port: 15021))?.status == 200 }) else {
            throw SandboxError("the agent in \(pod.name) did not become ready: \((try? pod.http("GET", "/healthz/ready", port: 15021).body) ?? "no answer")\n\(agent.log)")
        }
    }

    /// The value of the first Prometheus sample in `pod`'s merged :15020/stats/prometheus whose line
    /// starts with `prefix` (name and, if given, labels).
    public func metric(_ prefix: String, in pod: Pod) throws -> String? {
        try pod.http("GET", "/stats/prometheus", port: 15020).body.split(separator: "\n")
            .first { $0.hasPrefix(prefix) }.map { String($0.split(separator: " ").last ?? "") }
    }
}

/// Runs `body` with a fresh mesh cluster and removes it afterwards, whatever happens.
public func withMeshCluster<T>(_ body: (MeshCluster) throws -> T) throws -> T {
    let cluster = try MeshCluster()
    defer { cluster.destroy() }
    return try body(cluster)
}
