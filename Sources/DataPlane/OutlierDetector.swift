import Atomics
import HTTPProxy
import NIOConcurrencyHelpers
import NIOCore

/// Envoy's outlier detection for one cluster's endpoints: the router reports each attempt's outcome,
/// consecutive failures are counted per host, and a host whose count reaches its threshold is ejected
/// from load balancing (if `enforcing_*` says so and `max_ejection_percent` allows) for
/// `base_ejection_time` × its ejection multiplier, capped by `max_ejection_time`. Every `interval`
/// ``sweep(now:)`` brings back hosts whose time is up and lowers the multiplier of hosts that stayed in.
///
/// Reports come from every event loop: counters and the ejected flags are atomics, and the request path
/// takes no lock. The lock guards the ejection bookkeeping, taken only when a counter reaches its
/// threshold and by the sweep.
final class OutlierDetector: Sendable {
    /// Why a host was found to be an outlier, with Envoy's stat name.
    enum Detection: String, Sendable, CaseIterable {
        case consecutive5xx = "consecutive_5xx"
        case consecutiveGatewayFailure = "consecutive_gateway_failure"
        case consecutiveLocalOriginFailure = "consecutive_local_origin_failure"
    }

    /// A host's counters, written by the request path.
    private final class HostCounters: Sendable {
        let consecutive5xx = ManagedAtomic(0)
        let consecutiveGatewayFailure = ManagedAtomic(0)
        let consecutiveLocalOriginFailure = ManagedAtomic(0)
        let ejected = ManagedAtomic(false)

        func counter(_ detection: Detection) -> ManagedAtomic<Int> {
            switch detection {
            case .consecutive5xx: consecutive5xx
            case .consecutiveGatewayFailure: consecutiveGatewayFailure
            case .consecutiveLocalOriginFailure: consecutiveLocalOriginFailure
            }
        }

        func resetAll() {
            for detection in Detection.allCases { counter(detection).store(0, ordering: .relaxed) }
        }
    }

    /// A host's ejection history, under the lock.
    struct Ejection: Sendable, Equatable {
        /// Multiplies `base_ejection_time`: up by one per ejection (until the cap is reached), down by one
        /// per interval the host stays in after an ejection.
        var multiplier = 0
        var ejectedAt: NIODeadline?
        var unejectedAt: NIODeadline?
        /// The length of the ejection in progress, jitter included.
        var length = Duration.zero
        /// How many times the host was ejected.
        var count = 0
    }

    let config: OutlierDetectionConfig
    let stats: OutlierDetectionStats
    /// The hosts, by their index in the cluster's endpoints.
    let addresses: [SocketAddress]
    private let hosts: [HostCounters]
    /// Hosts ejected now: the request path's one check when none is, and the count that
    /// `max_ejection_percent` is applied to (the detector's own, never a stat's: Istio's #20135).
    private let ejectedCount = ManagedAtomic(0)
    /// Set once a newer detector for the cluster took over: this one no longer counts, ejects or sweeps,
    /// so that it cannot move the statistics the two share.
    private let retired = ManagedAtomic(false)
    private let ejections: NIOLockedValueBox<[Ejection]>
    /// A number in 0..<100 per detection, compared with `enforcing_*` (tests fix it).
    private let roll: @Sendable () -> Int
    /// The jitter added to an ejection, up to the given maximum (tests fix it).
    private let jitter: @Sendable (Duration) -> Duration

    init(config: OutlierDetectionConfig, addresses: [SocketAddress], stats: OutlierDetectionStats,
         roll: @escaping @Sendable () -> Int = { Int.random(in: 0..<100) },
         jitter: @escaping @Sendable (Duration) -> Duration = OutlierDetector.randomJitter) {
        self.config = config
        self.addresses = addresses
        self.stats = stats
        self.roll = roll
        self.jitter = jitter
        hosts = addresses.map { _ in HostCounters() }
        ejections = NIOLockedValueBox(addresses.map { _ in Ejection() })
        stats.markConfigured()
        stats.ejectionsActive.set(0)
    }

    /// A newer detector took over (requests still in flight through the old cluster report nowhere).
    func retire() { retired.store(true, ordering: .relaxed) }

    /// Takes over the state of the hosts `previous` also had (by address): an endpoint update keeps
    /// ejections and multipliers, as Envoy keeps its hosts across EDS updates.
    func inherit(from previous: OutlierDetector) {
        let byAddress = Dictionary(previous.addresses.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { first, _ in first })
        let old = previous.ejections.withLockedValue { $0 }
        ejections.withLockedValue { state in
            for (index, address) in addresses.enumerated() {
                guard let from = byAddress[address] else { continue }
                state[index] = old[from]
                let source = previous.hosts[from], target = hosts[index]
                for detection in Detection.allCases {
                    target.counter(detection).store(source.counter(detection).load(ordering: .relaxed), ordering: .relaxed)
                }
                if source.ejected.load(ordering: .relaxed) {
                    target.ejected.store(true, ordering: .relaxed)
                    ejectedCount.wrappingIncrement(ordering: .relaxed)
                }
            }
            stats.ejectionsActive.set(Int64(ejectedCount.load(ordering: .relaxed)))
        }
    }

    // MARK: The request path

    /// Whether any host is ejected: when none is, endpoint choice is as without a detector.
    var anyEjected: Bool { ejectedCount.load(ordering: .relaxed) > 0 }

    /// How many hosts are ejected now.
    var ejectedHosts: Int { ejectedCount.load(ordering: .relaxed) }

    func isEjected(_ index: Int) -> Bool { hosts[index].ejected.load(ordering: .relaxed) }

    /// The outcome of an attempt at the host at `index`. Unless `split_external_local_origin_errors`,
    /// local-origin failures count as the status the router answers for them (a connect failure or reset
    /// 503, a timeout 504), as Envoy maps them.
    /// `now` (tests give it) is read only when a host is detected, not for every request.
    func record(_ outcome: UpstreamOutcome, host index: Int, now: NIODeadline? = nil) {
        guard hosts.indices.contains(index), !retired.load(ordering: .relaxed) else { return }
        let host = hosts[index]
        switch outcome {
        case .response(let status):
            // The connection worked: with the split, that ends a run of local-origin failures.
            if config.splitExternalLocalOriginErrors { reset(host.consecutiveLocalOriginFailure) }
            response(status, host: host, index: index, now: now)
        case .connectFailure, .reset, .timeout:
            if config.splitExternalLocalOriginErrors {
                count(.consecutiveLocalOriginFailure, host: host, index: index, now: now)
            } else {
                response(outcome == .timeout ? 504 : 503, host: host, index: index, now: now)
            }
        }
    }

    private func response(_ status: Int, host: HostCounters, index: Int, now: NIODeadline?) {
        guard (500..<600).contains(status) else {
            reset(host.consecutive5xx)
            reset(host.consecutiveGatewayFailure)
            return
        }
        if (502...504).contains(status) {
            count(.consecutiveGatewayFailure, host: host, index: index, now: now)
        } else {
            reset(host.consecutiveGatewayFailure)
        }
        count(.consecutive5xx, host: host, index: index, now: now)
    }

    /// One more failure of `detection`'s kind; exactly at the threshold (0: never) the host is detected.
    private func count(_ detection: Detection, host: HostCounters, index: Int, now: NIODeadline?) {
        let count = host.counter(detection).wrappingIncrementThenLoad(ordering: .relaxed)
        if count == threshold(detection) { detected(detection, index: index, now: now) }
    }

    /// Writes only when there is something to reset, so that successes do not bounce the cache line.
    private func reset(_ counter: ManagedAtomic<Int>) {
        if counter.load(ordering: .relaxed) != 0 { counter.store(0, ordering: .relaxed) }
    }

    private func threshold(_ detection: Detection) -> Int {
        switch detection {
        case .consecutive5xx: config.consecutive5xx
        case .consecutiveGatewayFailure: config.consecutiveGatewayFailure
        case .consecutiveLocalOriginFailure: config.consecutiveLocalOriginFailure
        }
    }

    private func enforcing(_ detection: Detection) -> Int {
        switch detection {
        case .consecutive5xx: config.enforcingConsecutive5xx
        case .consecutiveGatewayFailure: config.enforcingConsecutiveGatewayFailure
        case .consecutiveLocalOriginFailure: config.enforcingConsecutiveLocalOriginFailure
        }
    }

    // MARK: Ejection (under the lock)

    /// A host reached a threshold. An ejected host is left as it is; otherwise the detection is counted,
    /// its counter starts again, and the host is ejected if the share of hosts ejected after it stays
    /// within `max_ejection_percent` (as Envoy since 1.27: no host is ejected when even one is too many,
    /// Envoy's #27909) and the roll falls within `enforcing_*`.
    private func detected(_ detection: Detection, index: Int, now given: NIODeadline?) {
        let host = hosts[index]
        let now = given ?? .now()
        ejections.withLockedValue { state in
            guard !host.ejected.load(ordering: .relaxed), !retired.load(ordering: .relaxed) else { return }
            stats.detected(detection)
            host.counter(detection).store(0, ordering: .relaxed)
            let after = Double(ejectedCount.load(ordering: .relaxed) + 1) * 100 / Double(hosts.count)
            guard after <= Double(config.maxEjectionPercent) else {
                stats.overflows.increment()
                return
            }
            guard roll() < enforcing(detection) else { return }
            var ejection = state[index]
            // The multiplier grows until base × multiplier reaches the cap.
            if config.baseEjectionTime * ejection.multiplier < config.ejectionTimeCap { ejection.multiplier += 1 }
            ejection.count += 1
            ejection.ejectedAt = now
            ejection.length = min(config.baseEjectionTime * ejection.multiplier, config.ejectionTimeCap) + jitter(config.maxEjectionTimeJitter)
            state[index] = ejection
            host.ejected.store(true, ordering: .relaxed)
            let active = ejectedCount.wrappingIncrementThenLoad(ordering: .relaxed)
            stats.enforced(detection)
            stats.ejectionsActive.set(Int64(active))
        }
    }

    /// Envoy's interval timer: hosts whose ejection time is up come back with their counters at zero;
    /// a host that stayed in for an interval since it came back has its multiplier lowered by one.
    func sweep(now: NIODeadline = .now()) {
        guard !retired.load(ordering: .relaxed) else { return }
        ejections.withLockedValue { state in
            for index in hosts.indices {
                let host = hosts[index]
                var ejection = state[index]
                if host.ejected.load(ordering: .relaxed) {
                    guard let since = ejection.ejectedAt, now - since >= TimeAmount(ejection.length) else { continue }
                    host.resetAll()
                    host.ejected.store(false, ordering: .relaxed)
                    ejectedCount.wrappingDecrement(ordering: .relaxed)
                    ejection.unejectedAt = now
                } else if let back = ejection.unejectedAt, now - back >= TimeAmount(config.interval), ejection.multiplier > 0 {
                    ejection.multiplier -= 1
                }
                state[index] = ejection
            }
            stats.ejectionsActive.set(Int64(ejectedCount.load(ordering: .relaxed)))
        }
    }

    /// An active health check of the host at `index` passed: with `successful_active_health_check_uneject_host`
    /// (Envoy's default), an ejected host comes back now, its counters at zero.
    func healthCheckPassed(_ index: Int, now: NIODeadline = .now()) {
        guard config.unejectsOnHealthCheck, !retired.load(ordering: .relaxed), hosts.indices.contains(index),
              hosts[index].ejected.load(ordering: .relaxed) else { return }
        ejections.withLockedValue { state in
            let host = hosts[index]
            guard host.ejected.load(ordering: .relaxed) else { return }
            host.resetAll()
            host.ejected.store(false, ordering: .relaxed)
            ejectedCount.wrappingDecrement(ordering: .relaxed)
            state[index].unejectedAt = now
            stats.ejectionsActive.set(Int64(ejectedCount.load(ordering: .relaxed)))
        }
    }

    /// Up to `maximum`, in whole milliseconds as Envoy draws it.
    @Sendable static func randomJitter(upTo maximum: Duration) -> Duration {
        let (seconds, attoseconds) = maximum.components
        let milliseconds = seconds.multipliedReportingOverflow(by: 1000).partialValue + attoseconds / 1_000_000_000_000_000
        return milliseconds > 0 ? .milliseconds(Int64.random(in: 0...milliseconds)) : .zero
    }

    /// Each host's ejection history (tests, and `/clusters`).
    var history: [Ejection] { ejections.withLockedValue { $0 } }
}
