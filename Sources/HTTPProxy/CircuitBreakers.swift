import Atomics

/// A cluster's circuit breakers: Envoy's `circuit_breakers` threshold of priority DEFAULT, limits on
/// what every event loop together has open to the cluster at once. Counts are atomics shared by the
/// loops (no lock on the request path); a resource over its limit is refused and the refusal counted,
/// as Envoy's overflow statistics.
///
/// One object per cluster name, kept across updates of the cluster: a new version brings new limits
/// (``limits``), and what the old one opened is counted where it will be closed.
public final class CircuitBreakers: Sendable {
    /// What the thresholds limit.
    public enum Resource: Int, CaseIterable, Sendable {
        /// Upstream connections, open or being opened (`max_connections`).
        case connections
        /// Requests waiting for a connection to be ready (`max_pending_requests`).
        case pendingRequests
        /// Requests in flight upstream (`max_requests`).
        case requests
        /// Retries waiting for their back-off to pass (`max_retries`).
        case retries

        /// The statistic's name in Envoy's `circuit_breakers.default.*` gauges.
        var statName: String {
            switch self {
            case .connections: "cx"
            case .pendingRequests: "rq_pending"
            case .requests: "rq"
            case .retries: "rq_retry"
            }
        }

        /// Envoy's `remaining_*` gauge.
        var remainingName: String {
            switch self {
            case .connections: "remaining_cx"
            case .pendingRequests: "remaining_pending"
            case .requests: "remaining_rq"
            case .retries: "remaining_retries"
            }
        }
    }

    /// The limits of one threshold; Envoy's defaults where the configuration gives none.
    public struct Limits: Sendable, Equatable {
        public var maxConnections = 1024
        public var maxPendingRequests = 1024
        public var maxRequests = 1024
        public var maxRetries = 3
        /// `track_remaining`: whether the `remaining_*` gauges are published.
        public var tracksRemaining = false

        public init() {}

        public subscript(resource: Resource) -> Int {
            get {
                switch resource {
                case .connections: maxConnections
                case .pendingRequests: maxPendingRequests
                case .requests: maxRequests
                case .retries: maxRetries
                }
            }
            set {
                switch resource {
                case .connections: maxConnections = newValue
                case .pendingRequests: maxPendingRequests = newValue
                case .requests: maxRequests = newValue
                case .retries: maxRetries = newValue
                }
            }
        }
    }

    private let open: [ManagedAtomic<Int>] = Resource.allCases.map { _ in ManagedAtomic(0) }
    private let maxima: [ManagedAtomic<Int>]
    private let tracksRemaining: ManagedAtomic<Bool>
    /// Refusals, by resource.
    private let overflows: [ManagedAtomic<UInt64>] = Resource.allCases.map { _ in ManagedAtomic(0) }

    public init(_ limits: Limits = Limits()) {
        maxima = Resource.allCases.map { ManagedAtomic(limits[$0]) }
        tracksRemaining = ManagedAtomic(limits.tracksRemaining)
    }

    /// The limits in force: those of the cluster's newest version.
    public var limits: Limits {
        get {
            var limits = Limits()
            for resource in Resource.allCases { limits[resource] = maxima[resource.rawValue].load(ordering: .relaxed) }
            limits.tracksRemaining = tracksRemaining.load(ordering: .relaxed)
            return limits
        }
        set {
            for resource in Resource.allCases { maxima[resource.rawValue].store(newValue[resource], ordering: .relaxed) }
            tracksRemaining.store(newValue.tracksRemaining, ordering: .relaxed)
        }
    }

    /// Opens one of `resource` if its limit allows; if not, counts the overflow and returns false.
    public func tryOpen(_ resource: Resource) -> Bool {
        let count = open[resource.rawValue]
        let previous = count.loadThenWrappingIncrement(ordering: .relaxed)
        if previous < maxima[resource.rawValue].load(ordering: .relaxed) { return true }
        count.wrappingDecrement(ordering: .relaxed)
        overflows[resource.rawValue].wrappingIncrement(ordering: .relaxed)
        return false
    }

    /// Opens one of `resource` over its limit, counted as an overflow (Envoy's pool may always have one
    /// connection, so that the requests queued on it can be served).
    public func openOverLimit(_ resource: Resource) {
        open[resource.rawValue].wrappingIncrement(ordering: .relaxed)
        overflows[resource.rawValue].wrappingIncrement(ordering: .relaxed)
    }

    /// One of `resource` opened by ``tryOpen(_:)`` or ``openOverLimit(_:)`` is over.
    public func close(_ resource: Resource) {
        open[resource.rawValue].wrappingDecrement(ordering: .relaxed)
    }

    public func openCount(_ resource: Resource) -> Int { open[resource.rawValue].load(ordering: .relaxed) }

    public func overflowCount(_ resource: Resource) -> UInt64 { overflows[resource.rawValue].load(ordering: .relaxed) }

    /// Envoy's statistics: the cluster's overflow counters (pending and request overflows both count as
    /// `upstream_rq_pending_overflow`, as in Envoy), and under `circuit_breakers.default.` whether each
    /// breaker is open (1) and, with `track_remaining`, what remains below each limit.
    public var entries: [(String, Double)] {
        let limits = limits
        var entries: [(String, Double)] = [
            ("upstream_cx_overflow", Double(overflowCount(.connections))),
            ("upstream_rq_pending_overflow", Double(overflowCount(.pendingRequests) + overflowCount(.requests))),
            ("upstream_rq_retry_overflow", Double(overflowCount(.retries))),
            ("upstream_rq_pending_active", Double(openCount(.pendingRequests))),
            ("upstream_rq_active", Double(openCount(.requests))),
        ]
        for resource in Resource.allCases {
            entries.append(("circuit_breakers.default.\(resource.statName)_open", openCount(resource) >= limits[resource] ? 1 : 0))
        }
        if limits.tracksRemaining {
            for resource in Resource.allCases {
                entries.append(("circuit_breakers.default.\(resource.remainingName)", Double(max(0, limits[resource] - openCount(resource)))))
            }
        }
        return entries
    }
}
