import CapstanTestSupport
import Capture
import Foundation
import Netfilter

// Node mode benchmarks (run by hack/bench-node.sh, as root). Everything happens in a throw-away node
// sandbox: a node namespace with the reference bridge + host-local plugins and capstan-cni chained
// after them, and `capstan node-agent` in the node namespace.
//
// 1. PODS (110) pod namespaces added through the plugin chain at once: wall time until every ADD
//    returned, then a check that every pod's capture is in place. Per-plugin process times beside.
// 2. SEQUENTIAL (40) more pods added one at a time: capstan-cni's ADD as a whole process, with the
//    reference bridge plugin's ADD (which runs host-local) from the same chain calls as the peer.
// 3. REPAIRS (50): the capture rules of the output chain deleted by hand; time from the deletion's commit to the agent's
//    repair transaction, as a netlink subscriber in the pod sees them.

let environment = ProcessInfo.processInfo.environment
let podCount = Int(environment["PODS"] ?? "") ?? 110
let sequentialCount = Int(environment["SEQUENTIAL"] ?? "") ?? 40
let repairCount = Int(environment["REPAIRS"] ?? "") ?? 50

let percentile = BenchmarkFigures.percentile
func milliseconds(_ seconds: Double) -> String { BenchmarkFigures.milliseconds(seconds) }

func durations(_ runtime: CNIRuntime, _ plugin: String, from start: Int) -> [Double] {
    runtime.timings.dropFirst(start).filter { $0.plugin == plugin && $0.command == "ADD" }.map(\.seconds)
}

func residentMegabytes(_ pid: Int32) -> Double { BenchmarkFigures.memory(of: pid).resident }

let sandbox = try NodeSandbox()
defer { sandbox.destroy() }
var pods: [CNIRuntime.Pod] = []
for index in 0..<(podCount + sequentialCount) {
    pods.append(try sandbox.makePod("bench-\(index)"))
}
try sandbox.startAgent(["--sweep-interval", "600"])
let runtime = sandbox.runtime
let idleMemory = residentMegabytes(sandbox.agentPID ?? 0)

// 1. All at once.
/// ADDs that failed, from any thread.
final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var messages: [String] = []
    func record(_ message: String) { lock.withLock { messages.append(message) } }
    var all: [String] { lock.withLock { messages } }
}
let failures = Failures()
let group = DispatchGroup()
let start = Date()
for pod in pods.prefix(podCount) {
    group.enter()
    Thread.detachNewThread {
        do { try runtime.add(pod) } catch { failures.record("\(pod.name): \(error)") }
        group.leave()
    }
}
group.wait()
let concurrentTotal = Date().timeIntervalSince(start)
guard failures.all.isEmpty else { fatalError("ADD failed: \(failures.all.prefix(3))") }
let intact = try pods.prefix(podCount).filter { try CaptureEngine.inspect(in: NetworkNamespace(path: $0.netns)).isIntact }.count
let managed = try sandbox.managedPods().count
guard intact == podCount, managed == podCount else { fatalError("captured \(intact), managed \(managed) of \(podCount)") }
let concurrentCNI = durations(runtime, "capstan-cni", from: 0)
let concurrentBridge = durations(runtime, "bridge", from: 0)
let loadedMemory = residentMegabytes(sandbox.agentPID ?? 0)
print("\(podCount) pods added concurrently through bridge + host-local + capstan-cni: all captured in \(milliseconds(concurrentTotal)) (target ≤ 2000 ms)")
print("  under that load, per ADD: capstan-cni p50 \(milliseconds(percentile(concurrentCNI, 0.5))) p99 \(milliseconds(percentile(concurrentCNI, 0.99))); "
      + "bridge p50 \(milliseconds(percentile(concurrentBridge, 0.5))) p99 \(milliseconds(percentile(concurrentBridge, 0.99)))")
print("  node agent resident memory: \(String(format: "%.1f", idleMemory)) MB idle, \(String(format: "%.1f", loadedMemory)) MB managing \(podCount) pods")

// 2. One at a time.
let mark = runtime.timings.count
for pod in pods.dropFirst(podCount) {
    try runtime.add(pod)
}
let sequentialCNI = durations(runtime, "capstan-cni", from: mark)
let sequentialBridge = durations(runtime, "bridge", from: mark)
let cniMedian = percentile(sequentialCNI, 0.5), bridgeMedian = percentile(sequentialBridge, 0.5)
// Where a sequential ADD's time goes: the agent's own handling (its log's elapsed_us for these pods),
// and the plugin process on its own (VERSION: start, read stdin, answer; no agent).
let sequentialNames = Set(pods.dropFirst(podCount).map { "pod=default/\($0.name) " })
let agentTimes = sandbox.agentLog.split(separator: "\n").filter { line in
    line.contains("captured pod") && sequentialNames.contains { line.contains($0) }
}.compactMap { line -> Double? in
    guard let field = line.split(separator: " ").first(where: { $0.hasPrefix("elapsed_us=") }) else { return nil }
    return Double(field.dropFirst("elapsed_us=".count)).map { $0 / 1_000_000 }
}
var versionTimes: [Double] = []
for _ in 0..<sequentialCount {
    let start = Date()
    let result = try runtime.runPlugin("capstan-cni", environment: ["CNI_COMMAND": "VERSION"], input: #"{"cniVersion":"1.0.0"}"#)
    guard result.status == 0 else { fatalError("capstan-cni VERSION failed: \(result)") }
    versionTimes.append(Date().timeIntervalSince(start))
}
print("capstan-cni ADD, whole process, \(sequentialCount) pods one at a time: p50 \(milliseconds(cniMedian)) p90 \(milliseconds(percentile(sequentialCNI, 0.9))) (target p50 ≤ 10 ms)")
print("  peer in the same calls: reference bridge plugin ADD (with host-local) p50 \(milliseconds(bridgeMedian)); ratio capstan-cni/bridge \(String(format: "%.2f", cniMedian / bridgeMedian))")
print("  of which: the agent's handling p50 \(milliseconds(percentile(agentTimes, 0.5))) (\(agentTimes.count) log lines); "
      + "the plugin process alone (VERSION) p50 \(milliseconds(percentile(versionTimes, 0.5)))")

// 3. Repairs.
var repairs: [Double] = []
for index in 0..<repairCount {
    let namespace = NetworkNamespace(path: pods[index % podCount].netns)
    let subscription = try namespace.run { try KernelChangeSubscription() }
    let deleted = try namespace.run {
        try NFTablesSession().run("flush chain inet capstan output")
        return Date()
    }
    _ = subscription.drain()  // our own deletion
    var descriptors = subscription.descriptors.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
    guard poll(&descriptors, nfds_t(descriptors.count), 3000) > 0 else { fatalError("no repair within 3 s") }
    repairs.append(Date().timeIntervalSince(deleted))
    // Let the repair finish and the agent's follow-up check settle before the next round.
    var settled = false
    for _ in 0..<100 where !settled {
        usleep(5_000)
        settled = try CaptureEngine.inspect(in: namespace).isIntact
    }
    guard settled else { fatalError("pod \(index % podCount) not intact after repair") }
    _ = subscription.drain()
}
print("repair, rule deleted → agent's repair committed, \(repairCount) times: p50 \(milliseconds(percentile(repairs, 0.5))) p90 \(milliseconds(percentile(repairs, 0.9))) max \(milliseconds(repairs.max() ?? 0)) (target p50 ≤ 500 ms)")
