import SwiftProtobuf
import XDS

/// A DestinationRule's `outlierDetection` on an outbound cluster, as istiod's `applyOutlierDetection`
/// writes it: success-rate ejection off; each consecutive-error count given enforced at 100 % (0
/// disables it); the local-origin count only with the split; and the panic threshold set from
/// `minHealthPercent` even when absent (0: panic mode off, Istio's default for few pods per service).
extension ProxyConfigGenerator {
    static func applyOutlierDetection(_ outlier: DestinationRule.OutlierDetection, to cluster: inout Envoy_Config_Cluster_V3_Cluster) {
        var detection = Envoy_Config_Cluster_V3_OutlierDetection()
        detection.enforcingSuccessRate = Google_Protobuf_UInt32Value(0)
        if let errors = outlier.consecutive5xxErrors {
            detection.consecutive5Xx = Google_Protobuf_UInt32Value(UInt32(errors))
            detection.enforcingConsecutive5Xx = Google_Protobuf_UInt32Value(errors > 0 ? 100 : 0)
        }
        if let errors = outlier.consecutiveGatewayErrors {
            detection.consecutiveGatewayFailure = Google_Protobuf_UInt32Value(UInt32(errors))
            detection.enforcingConsecutiveGatewayFailure = Google_Protobuf_UInt32Value(errors > 0 ? 100 : 0)
        }
        if let interval = outlier.interval { detection.interval = protoDuration(interval) }
        if let base = outlier.baseEjectionTime { detection.baseEjectionTime = protoDuration(base) }
        if outlier.maxEjectionPercent > 0 { detection.maxEjectionPercent = Google_Protobuf_UInt32Value(UInt32(outlier.maxEjectionPercent)) }
        if outlier.splitExternalLocalOriginErrors {
            detection.splitExternalLocalOriginErrors = true
            if let failures = outlier.consecutiveLocalOriginFailures, failures > 0 {
                detection.consecutiveLocalOriginFailure = Google_Protobuf_UInt32Value(UInt32(failures))
                detection.enforcingConsecutiveLocalOriginFailure = Google_Protobuf_UInt32Value(100)
            }
            detection.enforcingLocalOriginSuccessRate = Google_Protobuf_UInt32Value(0)
        }
        cluster.outlierDetection = detection
        var threshold = Envoy_Type_V3_Percent()
        threshold.value = Double(outlier.minHealthPercent)
        cluster.commonLbConfig.healthyPanicThreshold = threshold
    }
}
