import Configuration

/// A cluster's `outlier_detection`, the parts Capstan acts on: ejection of hosts that fail requests in a
/// row (Envoy's consecutive 5xx, consecutive gateway failure and consecutive local-origin failure
/// detectors), for a time that grows with each ejection. Envoy's defaults where a field is absent.
public struct OutlierDetectionConfig: Sendable, Equatable {
    /// `consecutive_5xx`: 5xx responses (and, unless split, local-origin failures) in a row; 0: never.
    public var consecutive5xx = 5
    /// `consecutive_gateway_failure`: 502, 503 and 504 (and, unless split, local-origin failures) in a row.
    public var consecutiveGatewayFailure = 5
    /// `consecutive_local_origin_failure`: connect failures, resets and timeouts in a row (only when split).
    public var consecutiveLocalOriginFailure = 5
    /// `enforcing_*`: the percent chance that a detection ejects the host.
    public var enforcingConsecutive5xx = 100
    public var enforcingConsecutiveGatewayFailure = 0
    public var enforcingConsecutiveLocalOriginFailure = 100
    /// `split_external_local_origin_errors`: local-origin failures are counted apart from responses.
    public var splitExternalLocalOriginErrors = false
    /// `interval`: how often ejected hosts whose time is up come back.
    public var interval = Duration.seconds(10)
    /// `base_ejection_time`: an ejection lasts this × the host's ejection multiplier.
    public var baseEjectionTime = Duration.seconds(30)
    /// `max_ejection_time`: the cap on an ejection's length (Envoy: the larger of it and the base).
    public var maxEjectionTime = Duration.seconds(300)
    /// `max_ejection_time_jitter`: up to this much is added at random to each ejection.
    public var maxEjectionTimeJitter = Duration.zero
    /// `max_ejection_percent`: no ejection may take the share of ejected hosts above this.
    public var maxEjectionPercent = 10
    /// `successful_active_health_check_uneject_host`: an ejected host whose active health check passes
    /// comes back at once (Envoy's default).
    public var unejectsOnHealthCheck = true

    public init() {}

    /// The cap actually applied: Envoy never caps below the base ejection time.
    var ejectionTimeCap: Duration { max(baseEjectionTime, maxEjectionTime) }
}

extension OutlierDetectionConfig {
    /// As `/config_dump` shows it: Envoy's field names, with every value in force (defaults too).
    var dump: ConfigValue {
        func count(_ value: Int) -> ConfigValue { .number(Double(value)) }
        return .object([
            "consecutive_5xx": count(consecutive5xx), "consecutive_gateway_failure": count(consecutiveGatewayFailure),
            "consecutive_local_origin_failure": count(consecutiveLocalOriginFailure),
            "enforcing_consecutive_5xx": count(enforcingConsecutive5xx),
            "enforcing_consecutive_gateway_failure": count(enforcingConsecutiveGatewayFailure),
            "enforcing_consecutive_local_origin_failure": count(enforcingConsecutiveLocalOriginFailure),
            "split_external_local_origin_errors": .bool(splitExternalLocalOriginErrors),
            "interval": .string(Self.text(interval)), "base_ejection_time": .string(Self.text(baseEjectionTime)),
            "max_ejection_time": .string(Self.text(ejectionTimeCap)), "max_ejection_time_jitter": .string(Self.text(maxEjectionTimeJitter)),
            "max_ejection_percent": count(maxEjectionPercent),
        ])
    }

    /// A protobuf JSON duration, to the millisecond: `30s`, `0.250s`.
    private static func text(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let milliseconds = attoseconds / 1_000_000_000_000_000
        guard milliseconds > 0 else { return "\(seconds)s" }
        let fraction = String(milliseconds)
        return "\(seconds).\(String(repeating: "0", count: 3 - fraction.count))\(fraction)s"
    }
}
