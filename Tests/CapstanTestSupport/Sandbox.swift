import Foundation
import Netfilter

/// A throw-away topology of network namespaces for one test, built with iproute2 and removed afterwards:
///
/// ```
///   pod  eth0 192.0.2.1/24, 2001:db8::1/64  ── veth ──  peer eth0 192.0.2.2/24, 2001:db8::2/64
///        routes to the remote ranges via the peer          lo: 198.51.100.10, .53, .99, 2001:db8:100::10
///   (optional) pod kv0 192.0.2.129/25-style link ── veth ── vm eth0, for -k tests
/// ```
///
/// Only documentation address ranges are used, nothing has a default route, and the host namespace is
/// never touched: veth pairs are created directly inside the namespaces.
public final class Sandbox: @unchecked Sendable {
    public static let podV4 = IPAddress("192.0.2.1")!
    public static let peerV4 = IPAddress("192.0.2.2")!
    public static let podV6 = IPAddress("2001:db8::1")!
    public static let peerV6 = IPAddress("2001:db8::2")!
    /// "Remote services" on the peer's loopback, reached from the pod through the veth.
    public static let remoteV4 = IPAddress("198.51.100.10")!
    public static let remoteV6 = IPAddress("2001:db8:100::10")!
    public static let remoteDNSV4 = IPAddress("198.51.100.53")!
    public static let otherRemoteV4 = IPAddress("198.51.100.99")!
    /// The VM behind a kube-virt interface.
    public static let vmV4 = IPAddress("203.0.113.2")!
    public static let podKubeVirtV4 = IPAddress("203.0.113.1")!

    public let name: String
    public let pod: NetworkNamespace
    public let peer: NetworkNamespace
    public private(set) var vm: NetworkNamespace?
    private var namespaceNames: [String]
    private var destroyed = false

    static let counter = Counter()

    /// Builds the pod and peer namespaces; `ipv6: false` disables IPv6 in the pod.
    public init(ipv6: Bool = true, kubeVirt: Bool = false) throws {
        name = "cst\(getpid())x\(Self.counter.next())"
        let podName = "\(name)-pod", peerName = "\(name)-peer"
        namespaceNames = []
        pod = NetworkNamespace(path: "/run/netns/\(podName)")
        peer = NetworkNamespace(path: "/run/netns/\(peerName)")
        do {
            for namespace in [podName, peerName] {
                try ChildProcess.require("/usr/sbin/ip", ["netns", "add", namespace])
                namespaceNames.append(namespace)
                try ip(namespace, "link", "set", "lo", "up")
            }
            if !ipv6 {
                try ChildProcess.require("/usr/sbin/ip", ["netns", "exec", podName, "sysctl", "-qw",
                                                          "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
                                                          "net.ipv6.conf.lo.disable_ipv6=1"])
            }
            try ip(podName, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", peerName)
            try ip(podName, "addr", "add", "192.0.2.1/24", "dev", "eth0")
            try ip(peerName, "addr", "add", "192.0.2.2/24", "dev", "eth0")
            if ipv6 {
                try ip(podName, "addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad")
            }
            try ip(peerName, "addr", "add", "2001:db8::2/64", "dev", "eth0", "nodad")
            for address in ["198.51.100.10/32", "198.51.100.53/32", "198.51.100.99/32"] {
                try ip(peerName, "addr", "add", address, "dev", "lo")
            }
            try ip(peerName, "addr", "add", "2001:db8:100::10/128", "dev", "lo", "nodad")
            try ip(podName, "link", "set", "eth0", "up")
            try ip(peerName, "link", "set", "eth0", "up")
            try ip(podName, "route", "add", "198.51.100.0/24", "via", "192.0.2.2")
            if ipv6 {
                try ip(podName, "-6", "route", "add", "2001:db8:100::/64", "via", "2001:db8::2")
            }
            if kubeVirt {
                let vmName = "\(name)-vm"
                try ChildProcess.require("/usr/sbin/ip", ["netns", "add", vmName])
                namespaceNames.append(vmName)
                vm = NetworkNamespace(path: "/run/netns/\(vmName)")
                try ip(vmName, "link", "set", "lo", "up")
                try ip(podName, "link", "add", "kv0", "type", "veth", "peer", "name", "eth0", "netns", vmName)
                try ip(podName, "addr", "add", "203.0.113.1/24", "dev", "kv0")
                try ip(vmName, "addr", "add", "203.0.113.2/24", "dev", "eth0")
                try ip(podName, "link", "set", "kv0", "up")
                try ip(vmName, "link", "set", "eth0", "up")
                try ip(vmName, "route", "add", "198.51.100.0/24", "via", "203.0.113.1")
            }
        } catch {
            destroy()
            throw error
        }
    }

    deinit {
        destroy()
    }

    /// Removes every namespace (and with them their links); safe to call twice.
    public func destroy() {
        guard !destroyed else { return }
        destroyed = true
        for namespace in namespaceNames.reversed() {
            _ = try? ChildProcess.run("/usr/sbin/ip", ["netns", "delete", namespace])
        }
    }

    private func ip(_ namespace: String, _ arguments: String...) throws {
        try ChildProcess.require("/usr/sbin/ip", ["-n", namespace] + arguments)
    }

    /// Runs the `capstan` binary built next to the tests.
    @discardableResult
    public func capstan(_ arguments: [String], environment: [String: String] = [:]) throws -> ChildProcess.Result {
        try ChildProcess.run(Self.capstanExecutable, arguments, environment: environment)
    }

    /// `capstan init … --network-namespace <pod>`, which must succeed.
    public func initialize(_ flags: [String] = []) throws {
        let result = try capstan(["init"] + flags + ["--network-namespace", pod.path!])
        guard result.status == 0 else { throw SandboxError("capstan init \(flags) failed: \(result)") }
    }

    /// The pod namespace's whole nftables ruleset, as the kernel lists it.
    public func podRuleset() throws -> String {
        try pod.run { try NFTablesSession().run("list ruleset") }
    }

    /// Runs an nftables script in the pod namespace (to break rules by hand in drift tests).
    public func podNFTables(_ script: String) throws {
        try pod.run { _ = try NFTablesSession().run(script) }
    }

    public static var capstanExecutable: String {
        let tests = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = tests.deletingLastPathComponent()
        // Under `swift test` the runner may be inside an .xctest bundle directory.
        while !FileManager.default.fileExists(atPath: directory.appendingPathComponent("capstan").path),
              directory.pathComponents.count > 1 {
            directory = directory.deletingLastPathComponent()
        }
        return directory.appendingPathComponent("capstan").path
    }
}

/// Runs `body` with a fresh sandbox and removes it afterwards, whatever happens.
public func withSandbox<T>(ipv6: Bool = true, kubeVirt: Bool = false, _ body: (Sandbox) throws -> T) throws -> T {
    let sandbox = try Sandbox(ipv6: ipv6, kubeVirt: kubeVirt)
    defer { sandbox.destroy() }
    return try body(sandbox)
}

/// Numbers sandboxes within one test process, for unique names.
final class Counter: @unchecked Sendable {
    private var value = 0
    private let lock = NSLock()

    func next() -> Int {
        lock.lock()
        defer { lock.unlock() }
        value += 1
        return value
    }
}
