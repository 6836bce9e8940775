import Atomics
import HTTPTypes
import NIOCore
import Routing

/// `envoy.filters.http.fault` as configured on a listener: its ``FaultPolicy`` (which a route's own
/// `typed_per_filter_config` replaces) and the faults active now, which every event loop's requests
/// count against `max_active_faults`.
public final class FaultFilterConfig: Sendable {
    public let policy: FaultPolicy
    let activeFaults = ManagedAtomic<Int>(0)

    public init(policy: FaultPolicy) { self.policy = policy }

    /// Faults in progress from this configuration.
    public var active: Int { activeFaults.load(ordering: .relaxed) }
}

/// Envoy's fault filter: for a request its policy makes eligible, a delay (a timer on the stream's event
/// loop, after which the request goes on, or is aborted if the abort is drawn then), else an abort, a
/// local reply `fault filter abort` with the policy's HTTP status, or HTTP 200 with its gRPC status.
/// Flags `DI` and `FI`. A request counts as one active fault from its first fault to its end (a delay
/// alone, to the delay's end); past `max_active_faults`, no fault is injected. Made by the registry for a
/// request whose configuration injects something.
final class FaultFilter: HTTPFilter {
    static let abortBody = "fault filter abort"

    /// The request's configuration: its route's, else the listener's.
    private let policy: FaultPolicy
    private let config: FaultFilterConfig
    private let observer: (any HTTPStreamObserver)?
    private var delayTimer: Scheduled<Void>?
    /// This request counts in `config`'s active faults.
    private var counted = false

    init(policy: FaultPolicy, config: FaultFilterConfig, observer: (any HTTPStreamObserver)?) {
        self.policy = policy
        self.config = config
        self.observer = observer
    }

    func decodeHeaders(_ request: inout HTTPRequest, route: RouteDecision?, stream: any HTTPFilterCallbacks) -> HTTPFilterStatus {
        guard policy.isEligible(request, cluster: route?.cluster) else { return .proceed }
        let request = request
        var random = RequestRandomness()
        if let delay = policy.delay(for: request, randomValue: random.next()), count(within: policy) {
            stream.addFlags(.delayInjected)
            delayTimer = stream.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(delay)) { [self] in
                delayTimer = nil
                // A delay can be followed by an abort, drawn now.
                if let abort = abortReply(policy, request) {
                    stream.reply(abort)
                } else {
                    uncount()
                    stream.resume()
                }
            }
            return .hold
        }
        if let abort = abortReply(policy, request) { return .reply(abort) }
        return .proceed
    }

    func requestEnded() {
        delayTimer?.cancel()
        delayTimer = nil
        uncount()
    }

    /// The abort drawn for `request`, if any and the limit allows it.
    private func abortReply(_ policy: FaultPolicy, _ request: HTTPRequest) -> HTTPLocalReply? {
        var random = RequestRandomness()
        guard let status = policy.abort(for: request, randomValue: random.next()), count(within: policy) else { return nil }
        switch status {
        case .http(let code):
            return HTTPLocalReply(status: .init(code: code), body: Self.abortBody, flags: .faultInjected, grpcStatus: nil)
        case .grpc(let code):
            return HTTPLocalReply(status: .ok, body: Self.abortBody, flags: .faultInjected, grpcStatus: code)
        }
    }

    /// Counts this request as an active fault (once), unless `max_active_faults` are active already.
    private func count(within policy: FaultPolicy) -> Bool {
        if counted { return true }
        let before = config.activeFaults.loadThenWrappingIncrement(ordering: .relaxed)
        if let limit = policy.maxActiveFaults, before >= limit {
            config.activeFaults.wrappingDecrement(ordering: .relaxed)
            return false
        }
        counted = true
        observer?.activeFaultsChanged(by: 1)
        return true
    }

    private func uncount() {
        guard counted else { return }
        counted = false
        config.activeFaults.wrappingDecrement(ordering: .relaxed)
        observer?.activeFaultsChanged(by: -1)
    }
}
