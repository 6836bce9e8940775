import Capture
import Logging
import NIOPosix
import Netfilter

/// The node agent's core: captures pods the CNI plugin reports, remembers them across restarts, and
/// repairs their rules when they go missing or drift.
///
/// Kernel work (entering a namespace, libnftables, rtnetlink) runs on a small pool of threads; the
/// actor keeps the set of managed pods.
public actor NodeAgent {
    public struct Configuration: Sendable {
        public var policy: PodCapturePolicy
        public var metadata: any PodMetadataSource
        public var store: ManagedPodStore

        public init(policy: PodCapturePolicy, metadata: any PodMetadataSource, store: ManagedPodStore) {
            self.policy = policy
            self.metadata = metadata
            self.store = store
        }
    }

    private struct ManagedPod {
        var record: ManagedPodRecord
        /// The record's line in the state file, encoded once.
        var line: [UInt8]
        var spec: CaptureSpec
        var health = "intact"
        var repairs = 0
        var lastChecked: ContinuousClock.Instant?
    }

    private let configuration: Configuration
    private let workers: NIOThreadPool
    private let logger: Logger
    public nonisolated let metrics = NodeAgentMetrics()
    private var pods: [String: ManagedPod] = [:]
    /// Pods with a check running, and whether another change arrived meanwhile.
    private var checking: [String: Bool] = [:]
    private nonisolated(unsafe) var monitor: RuleChangeMonitor!

    public init(configuration: Configuration, workers: NIOThreadPool, logger: Logger) {
        self.configuration = configuration
        self.workers = workers
        self.logger = logger
        let monitor = RuleChangeMonitor { [weak self] containerID in
            guard let self else { return }
            Task { await self.check(containerID, reason: "rules changed") }
        }
        self.monitor = monitor
        monitor.start()
    }

    /// Stops watching for changes; managed pods stay recorded for the next start.
    public func shutdown() {
        monitor.stop()
    }

    // MARK: Requests from the CNI plugin and status

    public func handle(_ request: AgentRequest) async -> AgentReply {
        let reply: AgentReply
        switch (request.operation, request.pod) {
        case (.add, let pod?): reply = await add(pod)
        case (.delete, let pod?): reply = forget(pod.containerID, reason: "CNI DEL")
        case (.check, let pod?): reply = await verify(pod)
        case (.list, _): reply = AgentReply(outcome: .listed, pods: status())
        case (.ping, _): reply = .success(.ready)
        default: reply = .failure("\(request.operation.rawValue) needs a pod")
        }
        metrics.countRequest(request.operation, succeeded: reply.outcome != nil)
        return reply
    }

    private func add(_ pod: PodAttachment) async -> AgentReply {
        let started = ContinuousClock.now
        if let problem = NetworkNamespace.problem(with: pod.netns) {
            return .failure("network namespace \(pod.netns): \(problem)")
        }
        let decision: PodCaptureDecision
        do {
            decision = try await decide(pod)
        } catch let error as CaptureSpecError {
            logger.warning("refusing pod", metadata: ["pod": "\(pod.podKey)", "error": "\(error)"])
            return .failure("\(error)", refused: true)
        } catch {
            return .failure("reading pod metadata from \(configuration.metadata.description): \(error)")
        }
        let spec: CaptureSpec
        switch decision {
        case .capture(let decided):
            spec = decided
        case .skip(let reason):
            if let previous = pods[pod.containerID] {
                // A repeated ADD for a pod that is no longer to be captured: forget it first (so the
                // removal is not "repaired"), then take its rules out.
                _ = forget(pod.containerID, reason: "no longer captured: \(reason)")
                do {
                    try await workers.runIfActive { try CaptureEngine.remove(previous.spec, in: NetworkNamespace(path: pod.netns)) }
                } catch {
                    return .failure("removing capture from pod \(pod.podKey): \(error)")
                }
            }
            logger.info("not capturing pod", metadata: ["pod": "\(pod.podKey)", "reason": "\(reason)"])
            return .success(.skipped, reason)
        }
        do {
            let outcome = try await program(spec, in: pod.netns)
            let subscription = try await subscribe(pod.netns)
            let record = ManagedPodRecord(pod: pod, spec: spec)
            pods[pod.containerID] = ManagedPod(record: record, line: try ManagedPodStore.line(for: record), spec: spec,
                                               lastChecked: .now)
            monitor.watch(pod.containerID, subscription)
            try persist()
            logger.info("captured pod", metadata: ["pod": "\(pod.podKey)", "netns": "\(pod.netns)",
                                                   "mode": "\(spec.interceptionMode.rawValue)",
                                                   "elapsed_us": "\(Int((ContinuousClock.now - started).seconds * 1_000_000))"])
            return .success(outcome == .unchanged ? .unchanged : .captured, spec.interceptionMode.rawValue)
        } catch {
            logger.error("capturing pod failed", metadata: ["pod": "\(pod.podKey)", "error": "\(error)"])
            return .failure("capturing pod \(pod.podKey): \(error)")
        }
    }

    private func decide(_ pod: PodAttachment) async throws -> PodCaptureDecision {
        let metadata = try await configuration.metadata.metadata(namespace: pod.podNamespace, name: pod.podName)
        return try configuration.policy.decide(for: metadata ?? PodMetadata(namespace: pod.podNamespace, name: pod.podName))
    }

    private func forget(_ containerID: String, reason: String) -> AgentReply {
        guard let pod = pods.removeValue(forKey: containerID) else { return .success(.forgotten) }
        monitor.unwatch(containerID)
        do { try persist() } catch {
            logger.error("writing state failed", metadata: ["error": "\(error)"])
        }
        logger.info("forgot pod", metadata: ["pod": "\(pod.record.pod.podKey)", "reason": "\(reason)"])
        return .success(.forgotten)
    }

    private func verify(_ pod: PodAttachment) async -> AgentReply {
        guard pods[pod.containerID] != nil else {
            // A pod the agent skipped is fine; one it should capture but does not know is not.
            switch try? await decide(pod) {
            case .skip(let reason)?: return .success(.intact, reason)
            default: return .failure("pod \(pod.podKey) is not managed by this node agent")
            }
        }
        await check(pod.containerID, reason: "CNI CHECK")
        guard let managed = pods[pod.containerID] else { return .failure("pod \(pod.podKey) went away") }
        return managed.health == "intact" ? .success(.intact) : .failure(managed.health)
    }

    private func status() -> [ManagedPodStatus] {
        let now = ContinuousClock.now
        return pods.values.sorted { $0.record.pod.podKey < $1.record.pod.podKey }.map { pod in
            ManagedPodStatus(pod: pod.record.pod, mode: pod.spec.interceptionMode.rawValue, health: pod.health,
                             repairs: pod.repairs, lastChecked: pod.lastChecked.map { (now - $0).seconds })
        }
    }

    // MARK: Repair

    /// Re-checks one pod's capture and re-applies it if it is missing or drifted. Changes that arrive
    /// during a check cause one more check after it.
    public func check(_ containerID: String, reason: String) async {
        guard pods[containerID] != nil else { return }
        if checking[containerID] != nil {
            checking[containerID] = true
            return
        }
        checking[containerID] = false
        defer { checking[containerID] = nil }
        repeat {
            checking[containerID] = false
            await checkOnce(containerID, reason: reason)
        } while checking[containerID] == true
    }

    private func checkOnce(_ containerID: String, reason: String) async {
        guard let pod = pods[containerID] else { return }
        let netns = pod.record.pod.netns
        if let problem = NetworkNamespace.problem(with: netns) {
            _ = forget(containerID, reason: "network namespace \(netns) is gone (\(problem))")
            return
        }
        let spec = pod.spec
        let namespace = NetworkNamespace(path: netns)
        let drift: [String]
        do {
            drift = try await workers.runIfActive {
                let installed = try CaptureEngine.inspect(in: namespace, fallback: spec)
                if installed.table == nil { return ["the capstan table is missing"] }
                if installed.spec != spec { return ["the table records a different spec"] }
                return installed.drift?.differences.map(\.description) ?? []
            }
        } catch {
            pods[containerID]?.health = "check failed: \(error)"
            return
        }
        // The pod may have been forgotten while the kernel was read: then its rules are not ours to repair.
        guard pods[containerID] != nil else { return }
        pods[containerID]?.lastChecked = .now
        guard !drift.isEmpty else {
            if pods[containerID]?.health != "intact" { pods[containerID]?.health = "intact" }
            return
        }
        do {
            _ = try await program(spec, in: netns)
            pods[containerID]?.repairs += 1
            pods[containerID]?.health = "intact"
            metrics.countRepair(succeeded: true)
            logger.notice("repaired capture", metadata: ["pod": "\(pod.record.pod.podKey)", "trigger": "\(reason)",
                                                         "drift": "\(drift.prefix(3).joined(separator: "; "))"])
        } catch {
            pods[containerID]?.health = "repair failed: \(error)"
            metrics.countRepair(succeeded: false)
            logger.error("repair failed", metadata: ["pod": "\(pod.record.pod.podKey)", "error": "\(error)"])
        }
    }

    /// Checks every managed pod: catches what notifications cannot show (and forgets vanished namespaces).
    public func sweep() async {
        for containerID in pods.keys.sorted() {
            await check(containerID, reason: "periodic sweep")
        }
    }

    /// Takes up the pods a previous run recorded: those whose namespace still exists are watched and
    /// checked (and repaired if needed); the rest are dropped.
    public func restore() async throws {
        let records = try configuration.store.load()
        for record in records {
            guard NetworkNamespace.problem(with: record.pod.netns) == nil else {
                logger.info("dropping pod whose namespace is gone", metadata: ["pod": "\(record.pod.podKey)"])
                continue
            }
            do {
                let spec = try record.captureSpec()
                let subscription = try await subscribe(record.pod.netns)
                pods[record.pod.containerID] = ManagedPod(record: record, line: try ManagedPodStore.line(for: record), spec: spec)
                monitor.watch(record.pod.containerID, subscription)
            } catch {
                logger.error("cannot take up recorded pod", metadata: ["pod": "\(record.pod.podKey)", "error": "\(error)"])
            }
        }
        try persist()
        logger.info("took up recorded pods", metadata: ["count": "\(pods.count)", "recorded": "\(records.count)"])
        await sweep()
    }

    // MARK: Kernel work

    private func program(_ spec: CaptureSpec, in netns: String) async throws -> ApplyOutcome {
        let workers = self.workers
        let (outcome, handles) = try await workers.runIfActive {
            try CaptureEngine.applyKeepingHandles(spec, in: NetworkNamespace(path: netns))
        }
        // Closing the handles waits for the kernel to free the old ruleset; not on the request's path.
        workers.submit { _ in handles.release() }
        return outcome
    }

    private func subscribe(_ netns: String) async throws -> KernelChangeSubscription {
        try await workers.runIfActive {
            try NetworkNamespace(path: netns).run { try KernelChangeSubscription() }
        }
    }

    private func persist() throws {
        metrics.setManagedPods(pods.count)
        try configuration.store.save(lines: pods.keys.sorted().map { pods[$0]!.line })
    }
}

extension Duration {
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
