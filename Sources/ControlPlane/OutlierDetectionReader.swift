import Configuration

extension DestinationRule {
    /// `trafficPolicy.outlierDetection`, as Istio's API gives it; ``ProxyConfigGenerator`` turns it into
    /// the cluster's `outlier_detection` as istiod does.
    public struct OutlierDetection: Sendable, Equatable {
        public var consecutive5xxErrors: Int?
        public var consecutiveGatewayErrors: Int?
        public var consecutiveLocalOriginFailures: Int?
        public var splitExternalLocalOriginErrors = false
        public var interval: Duration?
        public var baseEjectionTime: Duration?
        /// 0: not given (Envoy's default, 10 %, applies).
        public var maxEjectionPercent = 0
        /// The panic threshold; Istio's zero (the default) turns Envoy's panic mode off.
        public var minHealthPercent = 0

        public init() {}
    }
}

/// Reads a DestinationRule's `outlierDetection`, with istiod's validation: percentages within 0-100,
/// durations of at least 1 ms in whole milliseconds, `consecutiveLocalOriginFailures` only with
/// `splitExternalLocalOriginErrors`.
enum OutlierDetectionReader {
    static func read(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> DestinationRule.OutlierDetection {
        try reader.ignoringUnknown(["consecutive5xxErrors", "consecutiveGatewayErrors", "consecutiveLocalOriginFailures",
                                    "splitExternalLocalOriginErrors", "interval", "baseEjectionTime", "maxEjectionPercent",
                                    "minHealthPercent", "consecutiveErrors"], warnings: &warnings)
        var outlier = DestinationRule.OutlierDetection()
        let count = 0...Int(UInt32.max)
        outlier.consecutive5xxErrors = try reader.optional("consecutive5xxErrors")?.integer(in: count)
        outlier.consecutiveGatewayErrors = try reader.optional("consecutiveGatewayErrors")?.integer(in: count)
        outlier.splitExternalLocalOriginErrors = try reader.optional("splitExternalLocalOriginErrors")?.bool() ?? false
        if let failures = try reader.optional("consecutiveLocalOriginFailures") {
            guard outlier.splitExternalLocalOriginErrors else {
                throw failures.fail("is given but splitExternalLocalOriginErrors is not true: local-origin failures are only counted apart when split")
            }
            outlier.consecutiveLocalOriginFailures = try failures.integer(in: count)
        }
        outlier.interval = try reader.optional("interval").map(duration)
        outlier.baseEjectionTime = try reader.optional("baseEjectionTime").map(duration)
        outlier.maxEjectionPercent = try reader.optional("maxEjectionPercent")?.integer(in: 0...100) ?? 0
        outlier.minHealthPercent = try reader.optional("minHealthPercent")?.integer(in: 0...100) ?? 0
        if let deprecated = try reader.optional("consecutiveErrors") {
            let errors = try deprecated.integer(in: 0...Int(Int32.max))
            if errors != 0 {
                warnings.append("\(deprecated.path): deprecated, and istiod no longer acts on it: not acted on (use consecutive5xxErrors or consecutiveGatewayErrors)")
            }
        }
        return outlier
    }

    /// istiod's duration rule: at least 1 ms, in whole milliseconds.
    private static func duration(_ reader: ConfigReader) throws(ConfigError) -> Duration {
        let value = try reader.goDuration()
        let (_, attoseconds) = value.components
        guard value >= .milliseconds(1) else { throw reader.fail("must be at least 1ms") }
        guard attoseconds % 1_000_000_000_000_000 == 0 else { throw reader.fail("must be whole milliseconds") }
        return value
    }
}
