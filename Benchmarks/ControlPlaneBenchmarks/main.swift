import CapstanTestSupport
import Foundation
import Logging
import Netfilter
import Synchronization
import XDS

// Control-plane benchmarks (run by hack/bench-control-plane.sh, as root), in throw-away namespaces.
//
// 1. PROPAGATION (ROUNDS=30): a captured pod whose proxy is driven by `capstan control-plane`, in front
//    of two HTTP servers (v1 and v2, Hypercorn, answering with `x-upstream-name`); the canary HTTP
//    VirtualService file is rewritten to send everything to the other version, and the time runs from
//    the rename until a new request through the proxy is answered by that version (the route's RDS
//    update in force).
// 2. SCALE (STREAMS=500 ADS streams, SERVICES=1000): the control plane serves a config of SERVICES
//    HTTP services (each a ServiceEntry with two endpoints on an `http` port, a DestinationRule with
//    subsets v1 and v2 and a 90/10 HTTP VirtualService: 3 clusters and 3 assignments per service, one
//    outbound listener for the port, and its RDS route configuration with a virtual host per service)
//    to STREAMS ADS clients, each on its own connection; then every service's port changes (new cluster
//    names, endpoints, listener and route configuration) and the time runs from the rename until every
//    stream has received the new clusters, all their endpoints, the listeners and the new routes.
//    The control plane's memory is read from /proc.

let environment = ProcessInfo.processInfo.environment
let rounds = Int(environment["ROUNDS"] ?? "") ?? 30  // 0 skips part 1
let streamCount = Int(environment["STREAMS"] ?? "") ?? 500
let serviceCount = Int(environment["SERVICES"] ?? "") ?? 1000

let percentile = BenchmarkFigures.percentile
func milliseconds(_ seconds: Double) -> String { BenchmarkFigures.milliseconds(seconds, digits: 1) }
let memory = BenchmarkFigures.memory

// MARK: 1. File change to serving

if rounds > 0 {
    let sandbox = try Sandbox()
    defer { sandbox.destroy() }
    let mesh = try MeshSandbox(sandbox, files: ["workloads.yaml": MeshDocuments.httpWorkloads,
                                                "canary.yaml": MeshDocuments.httpCanary(v1: 100, v2: 0)])
    let peers = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Tests/EndToEndTests/Peers/http_upstream.py")
    var upstreams: [NamespacedProcess] = []
    defer { upstreams.forEach { $0.stop() } }
    for (name, address) in [("v1", "198.51.100.10"), ("v2", "198.51.100.99")] {
        let process = try NamespacedProcess(["python3", peers.path, "--listen", "\(address):8080", "--name", name],
                                            in: sandbox.peer, logPath: "/tmp/\(sandbox.name)-upstream-\(name).log")
        upstreams.append(process)
        guard process.waitUntil(seconds: 20, { process.log.contains("READY") }) else { throw SandboxError("upstream \(name): \(process.log)") }
    }
    try mesh.startControlPlane()
    try mesh.startProxy()
    /// Who answers a new HTTP/1.1 request to the service, from the pod (its proxy captures it).
    func answering() -> String {
        guard let socket = try? ProbeSocket.tcp(MeshSandbox.serviceVIP.family, in: sandbox.pod, uid: 1000, gid: 1000),
              (try? socket.connect(to: SocketAddress(MeshSandbox.serviceVIP, MeshSandbox.servicePort), timeoutMilliseconds: 2000)) != nil,
              (try? socket.sendAll(Array("GET / HTTP/1.1\r\nhost: payments\r\nconnection: close\r\n\r\n".utf8))) != nil,
              let response = try? socket.receive(count: Int.max, timeoutMilliseconds: 5000) else { return "" }
        let text = String(decoding: response, as: UTF8.self).lowercased()
        guard let field = text.range(of: "x-upstream-name: ") else { return text.isEmpty ? "" : "?" + text.prefix(300) }
        return String(text[field.upperBound...].prefix { !$0.isNewline })
    }
    var samples: [Double] = []
    var toV2 = true
    let settled = Date()
    while answering() != "v1" {
        guard Date().timeIntervalSince(settled) < 20 else {
            throw SandboxError("the proxy never served v1: \(answering())")
        }
        usleep(50_000)
    }
    for _ in 0..<rounds {
        let target = toV2 ? "v2" : "v1"
        let start = Date()
        try mesh.write("canary.yaml", toV2 ? MeshDocuments.httpCanary(v1: 0, v2: 100) : MeshDocuments.httpCanary(v1: 100, v2: 0))
        while answering() != target {
            guard Date().timeIntervalSince(start) < 10 else { throw SandboxError("the change never arrived") }
        }
        samples.append(Date().timeIntervalSince(start))
        toV2.toggle()
        usleep(50_000)
    }
    print("""
        file change -> proxy serving the new HTTP route (\(rounds) changes, probing with new requests):
          p50 \(milliseconds(percentile(samples, 0.5)))  p90 \(milliseconds(percentile(samples, 0.9)))  max \(milliseconds(samples.max() ?? .nan))
        """)
}

// MARK: 2. 500 streams, a full push of 1,000 services

/// The mesh config: every service on `port`.
func scaleConfig(port: Int) -> String {
    var documents: [String] = []
    for index in 0..<serviceCount {
        let vip = "198.18.\(index / 250).\(index % 250 + 1)"
        let endpoint = "198.19.\(index / 125).\(index % 125 * 2 + 1)"
        let other = "198.19.\(index / 125).\(index % 125 * 2 + 2)"
        documents.append("""
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: svc-\(index), namespace: bench}
            spec:
              hosts: [svc-\(index).bench.svc.cluster.local]
              addresses: [\(vip)]
              ports: [{number: \(port), name: http, protocol: HTTP}]
              resolution: STATIC
              endpoints:
              - {address: \(endpoint), labels: {version: v1}}
              - {address: \(other), labels: {version: v2}}
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: svc-\(index), namespace: bench}
            spec:
              host: svc-\(index)
              trafficPolicy: {connectionPool: {tcp: {maxConnections: 100}}}
              subsets:
              - {name: v1, labels: {version: v1}}
              - {name: v2, labels: {version: v2}}
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: svc-\(index), namespace: bench}
            spec:
              hosts: [svc-\(index)]
              http:
              - route:
                - {destination: {host: svc-\(index), subset: v1}, weight: 90}
                - {destination: {host: svc-\(index), subset: v2}, weight: 10}
            """)
    }
    return documents.joined(separator: "\n---\n") + "\n"
}

func clusterNames(port: Int) -> [String] {
    (0..<serviceCount).flatMap { index in
        ["", "v1", "v2"].map { "outbound|\(port)|\($0)|svc-\(index).bench.svc.cluster.local" }
    }
}

/// One benchmark stream, standing in for a proxy: ACKs everything, asks for the endpoints of the
/// clusters of the port it expects (as Envoy asks after CDS), and notes when it holds clusters,
/// every assignment and listeners of at least the version it waits for. Resources are counted, not
/// decoded, so the clients spend little of the two cores the control plane also needs.
final class CountingProxy: ADSResponseHandler {
    struct State {
        var port: Int
        var version: Int
        var clusters = false
        var endpoints = false
        var listeners = false
        var routes = false
        var completedAt: ContinuousClock.Instant?
    }
    let state: Mutex<State>

    init(port: Int) {
        state = Mutex(State(port: port, version: 1))
    }

    func expect(port: Int, version: Int) {
        state.withLock { $0 = State(port: port, version: version) }
    }

    func apply(_ response: DiscoveryResponse, type: XDSResourceType, client: ADSClient) async -> ADSVerdict {
        let fresh = (Int(response.versionInfo) ?? 0) >= state.withLock { $0.version }
        let port = state.withLock { state -> Int? in
            switch type {
            case .cluster:
                guard fresh, !state.clusters else { return nil }
                state.clusters = true
                return state.port
            case .endpoint:
                if fresh && response.resources.count == serviceCount * 3 { state.endpoints = true }
            case .listener:
                if fresh { state.listeners = true }
            case .route:
                // The port's route configuration: a virtual host per service.
                if fresh && response.resources.count == 1 { state.routes = true }
            case .secret, .nameTable:
                break
            }
            if state.completedAt == nil && state.clusters && state.endpoints && state.listeners && state.routes { state.completedAt = .now }
            return nil
        }
        if let port {
            // As Envoy asks: endpoints for the clusters, and the route configuration the listener names.
            client.subscribe(.endpoint, to: clusterNames(port: port))
            client.subscribe(.listener, to: [])
            client.subscribe(.route, to: [String(port)])
        }
        return .accept
    }

    func connectionChanged(connected: Bool) {}
}

do {
    let sandbox = try Sandbox()
    defer { sandbox.destroy() }
    let directory = "/tmp/\(sandbox.name)-scale"
    let socket = "/tmp/\(sandbox.name)-xds.sock"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer {
        try? FileManager.default.removeItem(atPath: directory)
        try? FileManager.default.removeItem(atPath: socket)
        try? FileManager.default.removeItem(atPath: "\(directory).log")
    }
    /// Written beside and renamed into place: the watcher sees one complete file.
    func writeConfig(port: Int) throws {
        try scaleConfig(port: port).write(toFile: "\(directory)/.mesh.tmp", atomically: false, encoding: .utf8)
        guard rename("\(directory)/.mesh.tmp", "\(directory)/mesh.yaml") == 0 else { throw SandboxError("rename failed") }
    }
    try writeConfig(port: 9000)
    let controlPlane = try NamespacedProcess(capstan: ["control-plane", "--config-dir", directory, "--xds-address", "unix://\(socket)"],
                                             in: sandbox.peer, logPath: "\(directory).log")
    defer { controlPlane.stop() }
    guard controlPlane.waitUntil(seconds: 30, { controlPlane.log.contains("serving ADS") }) else {
        throw SandboxError("control plane did not start: \(controlPlane.log)")
    }
    let idle = memory(controlPlane.pid)
    let clustersPerPush = serviceCount * 3 + 2 + 1
    var logger = Logger(label: "bench")
    logger.logLevel = Logger.Level(rawValue: environment["LOG_LEVEL"] ?? "") ?? .error
    var handlers: [CountingProxy] = []
    var tasks: [Task<Void, Never>] = []
    let connectStart = ContinuousClock.now
    for index in 0..<streamCount {
        var node = Envoy_Config_Core_V3_Node()
        node.id = "sidecar~198.51.\(index / 250).\(index % 250 + 1)~bench-\(index).bench~bench.svc.cluster.local"
        let client = ADSClient(server: .unixSocket(path: socket), node: node, logger: logger)
        let handler = CountingProxy(port: 9000)
        client.subscribe(.cluster, to: [])
        handlers.append(handler)
        // Detached: the main thread blocks below while it waits, and top-level code is main-actor code.
        tasks.append(Task.detached { await client.run(handler: handler) })
    }
    func waitForAll(_ what: String) throws -> Duration {
        let start = ContinuousClock.now
        while handlers.contains(where: { $0.state.withLock { $0.completedAt == nil } }) {
            guard ContinuousClock.now - start < .seconds(Int64(environment["TIMEOUT"] ?? "") ?? 120) else {
                let done = handlers.filter { $0.state.withLock { $0.completedAt != nil } }.count
                throw SandboxError("\(what): only \(done) of \(streamCount) streams complete; control plane: \(controlPlane.log)")
            }
            usleep(5_000)
        }
        return handlers.map { $0.state.withLock { $0.completedAt! } }.max()! - start
    }
    _ = try waitForAll("initial sync")
    let initialSync = ContinuousClock.now - connectStart
    let synced = memory(controlPlane.pid)
    for handler in handlers { handler.expect(port: 9001, version: 2) }
    let pushStart = ContinuousClock.now
    try writeConfig(port: 9001)
    _ = try waitForAll("full push")
    let latest = handlers.map { $0.state.withLock { $0.completedAt! } }.max()!
    let pushed = memory(controlPlane.pid)
    for task in tasks { task.cancel() }
    let buildLine = controlPlane.log.split(separator: "\n").last { $0.contains("pushed") }.map(String.init) ?? ""
    print("""
        \(streamCount) ADS streams, \(serviceCount) HTTP services (\(clustersPerPush) clusters, \(serviceCount * 3) assignments, a route configuration of \(serviceCount) virtual hosts):
          connect + initial sync of every stream: \(initialSync)
          full push (every service's port changed) until every stream had it all: \(latest - pushStart)
          memory per stream: \(String(format: "%.2f", (synced.resident - idle.resident) / Double(streamCount))) MB
          control plane memory: idle \(String(format: "%.1f", idle.resident)) MB, \(streamCount) streams synced \(String(format: "%.1f", synced.resident)) MB, after the push \(String(format: "%.1f", pushed.resident)) MB (peak \(String(format: "%.1f", pushed.peak)) MB)
          control plane: \(buildLine)
        """)
}
