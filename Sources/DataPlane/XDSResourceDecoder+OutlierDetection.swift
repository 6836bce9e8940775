import Configuration
import SwiftProtobuf
import XDS

/// A cluster's `outlier_detection` and `common_lb_config.healthy_panic_threshold`, refused where Envoy
/// refuses them; the success-rate and failure-percentage detectors, which Capstan does not have, are
/// listed as not acted on whenever they would eject (Envoy enables success rate by default).
extension XDSResourceDecoder {
    static func outlierDetection(of proto: Envoy_Config_Cluster_V3_Cluster, path: String,
                                 into cluster: inout BootstrapConfig.Cluster) throws(ConfigError) {
        if proto.hasCommonLbConfig && proto.commonLbConfig.hasHealthyPanicThreshold {
            let threshold = proto.commonLbConfig.healthyPanicThreshold.value
            guard (0...100).contains(threshold) else {
                throw ConfigError(path: "\(path).common_lb_config.healthy_panic_threshold.value", message: "\(threshold) is not a percentage (0-100)")
            }
            cluster.healthyPanicThreshold = threshold
        }
        guard proto.hasOutlierDetection else { return }
        let given = proto.outlierDetection
        let field = "outlier_detection"
        var config = OutlierDetectionConfig()
        func percent(_ value: Google_Protobuf_UInt32Value, _ name: String) throws(ConfigError) -> Int {
            guard value.value <= 100 else {
                throw ConfigError(path: "\(path).\(field).\(name)", message: "\(value.value) is above 100 (a percentage)")
            }
            return Int(value.value)
        }
        func positive(_ value: Google_Protobuf_Duration, _ name: String) throws(ConfigError) -> Duration {
            let decoded = duration(value)
            guard decoded > .zero else { throw ConfigError(path: "\(path).\(field).\(name)", message: "must be above 0") }
            return decoded
        }
        if given.hasConsecutive5Xx { config.consecutive5xx = Int(given.consecutive5Xx.value) }
        if given.hasConsecutiveGatewayFailure { config.consecutiveGatewayFailure = Int(given.consecutiveGatewayFailure.value) }
        if given.hasConsecutiveLocalOriginFailure { config.consecutiveLocalOriginFailure = Int(given.consecutiveLocalOriginFailure.value) }
        if given.hasEnforcingConsecutive5Xx { config.enforcingConsecutive5xx = try percent(given.enforcingConsecutive5Xx, "enforcing_consecutive_5xx") }
        if given.hasEnforcingConsecutiveGatewayFailure {
            config.enforcingConsecutiveGatewayFailure = try percent(given.enforcingConsecutiveGatewayFailure, "enforcing_consecutive_gateway_failure")
        }
        if given.hasEnforcingConsecutiveLocalOriginFailure {
            config.enforcingConsecutiveLocalOriginFailure = try percent(given.enforcingConsecutiveLocalOriginFailure, "enforcing_consecutive_local_origin_failure")
        }
        if given.hasMaxEjectionPercent { config.maxEjectionPercent = try percent(given.maxEjectionPercent, "max_ejection_percent") }
        config.splitExternalLocalOriginErrors = given.splitExternalLocalOriginErrors
        if given.hasSuccessfulActiveHealthCheckUnejectHost {
            config.unejectsOnHealthCheck = given.successfulActiveHealthCheckUnejectHost.value
        }
        if given.hasInterval { config.interval = try positive(given.interval, "interval") }
        if given.hasBaseEjectionTime { config.baseEjectionTime = try positive(given.baseEjectionTime, "base_ejection_time") }
        if given.hasMaxEjectionTime {
            config.maxEjectionTime = try positive(given.maxEjectionTime, "max_ejection_time")
            guard config.maxEjectionTime >= config.baseEjectionTime else {
                throw ConfigError(path: "\(path).\(field).max_ejection_time", message: "is below base_ejection_time")
            }
        } else {
            config.maxEjectionTime = max(config.maxEjectionTime, config.baseEjectionTime)
        }
        if given.hasMaxEjectionTimeJitter {
            config.maxEjectionTimeJitter = duration(given.maxEjectionTimeJitter)
            guard config.maxEjectionTimeJitter >= .zero else {
                throw ConfigError(path: "\(path).\(field).max_ejection_time_jitter", message: "must not be negative")
            }
        }
        // Percentages Envoy validates even though Capstan does not act on them.
        for (value, name) in [(given.enforcingSuccessRate, "enforcing_success_rate"),
                              (given.enforcingLocalOriginSuccessRate, "enforcing_local_origin_success_rate"),
                              (given.failurePercentageThreshold, "failure_percentage_threshold"),
                              (given.enforcingFailurePercentage, "enforcing_failure_percentage"),
                              (given.enforcingFailurePercentageLocalOrigin, "enforcing_failure_percentage_local_origin")] {
            _ = try percent(value, name)
        }
        cluster.fieldsNotActedOn += notActedOn(given, field: field)
        if case .originalDestination = cluster.discovery {
            cluster.fieldsNotActedOn.append(.init(path: field, reason: "an ORIGINAL_DST cluster's hosts are not tracked: nothing is ejected"))
        } else {
            cluster.outlierDetection = config
        }
    }

    /// The detectors Capstan lacks, where they would eject: success rate (Envoy's default enforcement is
    /// 100 %, so it is listed unless set to 0, as istiod does), failure percentage (default 0), and their
    /// parameters when given.
    private static func notActedOn(_ given: Envoy_Config_Cluster_V3_OutlierDetection, field: String) -> [FieldNotActedOn] {
        var listed: [FieldNotActedOn] = []
        let successRate = "success-rate ejection is not implemented (Capstan ejects on consecutive failures only)"
        let failurePercentage = "failure-percentage ejection is not implemented (Capstan ejects on consecutive failures only)"
        if !given.hasEnforcingSuccessRate || given.enforcingSuccessRate.value > 0 {
            listed.append(.init(path: "\(field).enforcing_success_rate", reason: successRate))
        }
        if given.splitExternalLocalOriginErrors && (!given.hasEnforcingLocalOriginSuccessRate || given.enforcingLocalOriginSuccessRate.value > 0) {
            listed.append(.init(path: "\(field).enforcing_local_origin_success_rate", reason: successRate))
        }
        for (isSet, name) in [(given.hasSuccessRateMinimumHosts, "success_rate_minimum_hosts"),
                              (given.hasSuccessRateRequestVolume, "success_rate_request_volume"),
                              (given.hasSuccessRateStdevFactor, "success_rate_stdev_factor")] where isSet {
            listed.append(.init(path: "\(field).\(name)", reason: successRate))
        }
        for (value, name) in [(given.enforcingFailurePercentage, "enforcing_failure_percentage"),
                              (given.enforcingFailurePercentageLocalOrigin, "enforcing_failure_percentage_local_origin")] where value.value > 0 {
            listed.append(.init(path: "\(field).\(name)", reason: failurePercentage))
        }
        for (isSet, name) in [(given.hasFailurePercentageThreshold, "failure_percentage_threshold"),
                              (given.hasFailurePercentageMinimumHosts, "failure_percentage_minimum_hosts"),
                              (given.hasFailurePercentageRequestVolume, "failure_percentage_request_volume")] where isSet {
            listed.append(.init(path: "\(field).\(name)", reason: failurePercentage))
        }
        return listed
    }
}
