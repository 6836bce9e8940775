import Configuration
import SwiftProtobuf
import XDS

/// Envoy's `RetryPolicy` as a value: decoded so a later router can retry, and listed as not acted on
/// until it does. Istio sends one on nearly every route (2 retries on connect-failure, refused-stream,
/// unavailable, cancelled and 503).
public struct RetryPolicy: Sendable, Equatable {
    /// `retry_on`: the conditions, as Envoy names them (`connect-failure`, `5xx`, `retriable-status-codes` …).
    public var conditions: [String]
    /// `num_retries`: Envoy's default is 1.
    public var retries: UInt32
    public var perTryTimeout: Duration?
    public var retriableStatusCodes: [UInt32]
    /// `retry_host_predicate` names (Istio: `envoy.retry_host_predicates.previous_hosts`).
    public var hostPredicates: [String]
    public var hostSelectionMaxAttempts: Int64
    /// `retry_back_off`: Envoy's defaults are 25 ms and ten times that.
    public var backOffBase: Duration
    public var backOffMax: Duration

    init(_ proto: Envoy_Config_Route_V3_RetryPolicy) {
        conditions = proto.retryOn.split(separator: ",").map { String($0.filter { !$0.isWhitespace }) }.filter { !$0.isEmpty }
        retries = proto.hasNumRetries ? proto.numRetries.value : 1
        perTryTimeout = proto.hasPerTryTimeout ? Duration(proto.perTryTimeout) : nil
        retriableStatusCodes = proto.retriableStatusCodes
        hostPredicates = proto.retryHostPredicate.map(\.name)
        hostSelectionMaxAttempts = proto.hostSelectionRetryMaxAttempts
        backOffBase = proto.retryBackOff.hasBaseInterval ? Duration(proto.retryBackOff.baseInterval) : .milliseconds(25)
        backOffMax = proto.retryBackOff.hasMaxInterval ? Duration(proto.retryBackOff.maxInterval) : backOffBase * 10
    }
}

extension Duration {
    /// A protobuf duration (seconds and nanoseconds).
    init(_ proto: Google_Protobuf_Duration) {
        self = .seconds(proto.seconds) + .nanoseconds(Int64(proto.nanos))
    }
}
