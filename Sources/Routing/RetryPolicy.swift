import Configuration
import SwiftProtobuf
import XDS

/// Envoy's `RetryPolicy` as a value, for the router. Istio sends one on nearly every route (2 retries on
/// connect-failure, refused-stream, unavailable, cancelled and retriable status 503, to other hosts).
public struct RetryPolicy: Sendable, Equatable {
    /// `retry_on`: the conditions, as Envoy names them.
    public struct Conditions: OptionSet, Sendable, Hashable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        /// Any 5xx response, a reset, a connect failure or a refused stream.
        public static let serverError = Self(rawValue: 1 << 0)
        /// 502, 503 or 504, a reset or a connect failure.
        public static let gatewayError = Self(rawValue: 1 << 1)
        /// The upstream reset or closed before responding (also a connect failure or a timed-out attempt).
        public static let reset = Self(rawValue: 1 << 2)
        /// Reset before the request was sent (a connect failure is one).
        public static let resetBeforeRequest = Self(rawValue: 1 << 3)
        public static let connectFailure = Self(rawValue: 1 << 4)
        /// HTTP/2's REFUSED_STREAM.
        public static let refusedStream = Self(rawValue: 1 << 5)
        /// 409.
        public static let retriable4xx = Self(rawValue: 1 << 6)
        /// A status in `retriable_status_codes`.
        public static let retriableStatusCodes = Self(rawValue: 1 << 7)
        /// gRPC statuses, from `grpc-status` in the response headers.
        public static let grpcCancelled = Self(rawValue: 1 << 8)
        public static let grpcDeadlineExceeded = Self(rawValue: 1 << 9)
        public static let grpcInternal = Self(rawValue: 1 << 10)
        public static let grpcResourceExhausted = Self(rawValue: 1 << 11)
        public static let grpcUnavailable = Self(rawValue: 1 << 12)

        static let byName: [String: Self] = [
            "5xx": .serverError, "gateway-error": .gatewayError, "reset": .reset, "reset-before-request": .resetBeforeRequest,
            "connect-failure": .connectFailure, "refused-stream": .refusedStream, "retriable-4xx": .retriable4xx,
            "retriable-status-codes": .retriableStatusCodes, "cancelled": .grpcCancelled, "deadline-exceeded": .grpcDeadlineExceeded,
            "internal": .grpcInternal, "resource-exhausted": .grpcResourceExhausted, "unavailable": .grpcUnavailable,
        ]
    }

    /// What went wrong with one attempt.
    public enum Failure: Sendable, Equatable {
        /// The connection was not made: the request never left.
        case connectFailure
        /// The upstream closed or reset before its response began.
        case reset
        /// HTTP/2's REFUSED_STREAM: the upstream did not process the request.
        case refusedStream
        /// The attempt's `per_try_timeout` passed before the response began.
        case perTryTimeout
        /// A response began with this status (and `grpc-status`, for a trailers-only gRPC answer).
        case response(status: Int, grpcStatus: Int?)
    }

    public var conditions: Conditions
    /// `num_retries`: Envoy's default is 1.
    public var retries: Int
    public var perTryTimeout: Duration?
    public var retriableStatusCodes: Set<Int>
    /// `retry_host_predicate` `envoy.retry_host_predicates.previous_hosts`: a retry goes to another host.
    public var avoidsPreviousHosts: Bool
    /// `host_selection_retry_max_attempts`: how many times a host is chosen for a retry to find one the
    /// predicate accepts (Envoy's default is 1).
    public var hostSelectionAttempts: Int
    /// `retry_back_off`: Envoy's defaults are 25 ms and ten times the base.
    public var backOffBase: Duration
    public var backOffMax: Duration
    /// `retry_priority` `envoy.retry_priorities.previous_priorities`: its `update_frequency` (every that
    /// many attempts, a retry's priority load leaves out the priorities tried); nil without it.
    public var previousPrioritiesUpdateFrequency: Int?

    static let previousHosts = "envoy.retry_host_predicates.previous_hosts"
    static let previousPriorities = "envoy.retry_priorities.previous_priorities"

    init(_ proto: Envoy_Config_Route_V3_RetryPolicy, path: String, notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        var conditions = Conditions()
        for name in proto.retryOn.split(separator: ",").map({ String($0.filter { !$0.isWhitespace }) }) where !name.isEmpty {
            if let condition = Conditions.byName[name] {
                conditions.insert(condition)
            } else {
                notActedOn.append(.init(path: "\(path).retry_on", reason: "the retry condition \"\(name)\" is not one Capstan knows"))
            }
        }
        self.conditions = conditions
        retries = proto.hasNumRetries ? Int(proto.numRetries.value) : 1
        perTryTimeout = proto.hasPerTryTimeout && Duration(proto.perTryTimeout) > .zero ? Duration(proto.perTryTimeout) : nil
        retriableStatusCodes = Set(proto.retriableStatusCodes.map(Int.init))
        avoidsPreviousHosts = false
        for (index, predicate) in proto.retryHostPredicate.enumerated() {
            if predicate.name == Self.previousHosts {
                avoidsPreviousHosts = true
            } else {
                notActedOn.append(.init(path: "\(path).retry_host_predicate[\(index)]",
                                        reason: "only \(Self.previousHosts) is acted on, not \"\(predicate.name)\""))
            }
        }
        hostSelectionAttempts = max(1, Int(proto.hostSelectionRetryMaxAttempts))
        backOffBase = proto.retryBackOff.hasBaseInterval ? Duration(proto.retryBackOff.baseInterval) : .milliseconds(25)
        backOffMax = proto.retryBackOff.hasMaxInterval ? Duration(proto.retryBackOff.maxInterval) : backOffBase * 10
        previousPrioritiesUpdateFrequency = nil
        if proto.hasRetryPriority {
            previousPrioritiesUpdateFrequency = try Self.previousPriorities(proto.retryPriority, path: "\(path).retry_priority")
        }
    }

    /// The `update_frequency` of a `retry_priority`, which must be `previous_priorities` (Envoy has no other
    /// built in) with a `PreviousPrioritiesConfig` whose `update_frequency` is above 0, as Envoy validates it.
    private static func previousPriorities(_ priority: Envoy_Config_Route_V3_RetryPolicy.RetryPriority,
                                           path: String) throws(ConfigError) -> Int {
        guard priority.name == previousPriorities else {
            throw ConfigError(path: "\(path).name", message: "\"\(priority.name)\" is not a retry priority Capstan has (\(previousPriorities) is)")
        }
        let config: Envoy_Extensions_Retry_Priority_PreviousPriorities_V3_PreviousPrioritiesConfig
        do {
            config = try .init(unpackingAny: priority.typedConfig)
        } catch {
            throw ConfigError(path: "\(path).typed_config", message: "is not a PreviousPrioritiesConfig: \(error)")
        }
        guard config.updateFrequency > 0 else {
            throw ConfigError(path: "\(path).typed_config.update_frequency", message: "must be above 0, not \(config.updateFrequency)")
        }
        return Int(config.updateFrequency)
    }

    /// Whether `failure` is one this policy retries. A request that is not idempotent (POST, PATCH,
    /// CONNECT) is retried only when it provably never reached the upstream (a connect failure), whatever
    /// the conditions say: a retried payment is a second payment (Istio's #13851 and #50506).
    public func retries(_ failure: Failure, idempotent: Bool) -> Bool {
        switch failure {
        case .connectFailure:
            return !conditions.isDisjoint(with: [.connectFailure, .resetBeforeRequest, .reset, .serverError, .gatewayError])
        case _ where !idempotent:
            return false
        case .reset, .perTryTimeout:
            return !conditions.isDisjoint(with: [.reset, .serverError, .gatewayError])
        case .refusedStream:
            return !conditions.isDisjoint(with: [.refusedStream, .serverError])
        case .response(let status, let grpcStatus):
            if conditions.contains(.serverError), (500..<600).contains(status) { return true }
            if conditions.contains(.gatewayError), [502, 503, 504].contains(status) { return true }
            if conditions.contains(.retriable4xx), status == 409 { return true }
            if conditions.contains(.retriableStatusCodes), retriableStatusCodes.contains(status) { return true }
            switch grpcStatus {
            case 1?: return conditions.contains(.grpcCancelled)
            case 4?: return conditions.contains(.grpcDeadlineExceeded)
            case 8?: return conditions.contains(.grpcResourceExhausted)
            case 13?: return conditions.contains(.grpcInternal)
            case 14?: return conditions.contains(.grpcUnavailable)
            default: return false
            }
        }
    }

    /// Envoy's fully jittered exponential back-off before retry number `retry` (1, 2, …): a random time up
    /// to base × (2^retry − 1), at most `backOffMax`.
    public func backOff(before retry: Int, randomValue: UInt64) -> Duration {
        let base = backOffBase.components.seconds * 1_000_000_000 + backOffBase.components.attoseconds / 1_000_000_000
        let ceiling = backOffMax.components.seconds * 1_000_000_000 + backOffMax.components.attoseconds / 1_000_000_000
        let limit = min(ceiling, base * ((Int64(1) << Int64(min(retry, 30))) - 1))
        guard limit > 0 else { return .zero }
        return .nanoseconds(Int64(randomValue % UInt64(limit)))
    }
}

extension Duration {
    /// A protobuf duration (seconds and nanoseconds).
    init(_ proto: Google_Protobuf_Duration) {
        self = .seconds(proto.seconds) + .nanoseconds(Int64(proto.nanos))
    }
}
