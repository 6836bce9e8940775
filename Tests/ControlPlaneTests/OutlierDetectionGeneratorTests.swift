import Foundation
@testable import ControlPlane
import SwiftProtobuf
import Testing
import XDS

/// A DestinationRule's `outlierDetection` read with istiod's validation and written into the outbound
/// clusters as istiod writes it, a subset's replacing the rule's.
@Suite struct OutlierDetectionGeneratorTests {
    static let rule = """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: payments, namespace: shop}
        spec:
          host: payments
          trafficPolicy:
            outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}
          subsets:
          - {name: v1, labels: {version: v1}}
          - name: v2
            labels: {version: v2}
            trafficPolicy:
              outlierDetection: {consecutiveGatewayErrors: 0, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3, minHealthPercent: 25}
        """

    func clusters(_ rule: String) throws -> [String: Envoy_Config_Cluster_V3_Cluster] {
        let reading = MeshConfigReader.read([("mesh.yaml", [Documents.serviceEntry, Documents.workload("payments-v1", "198.51.100.10", "v1"),
                                                             Documents.workload("payments-v2", "198.51.100.99", "v2"), rule].joined(separator: "\n---\n"))])
        let config = try #require(reading.config, "\(reading.problems)")
        let clusters = try ProxyConfigGenerator.resources(for: config).clusters
        return try Dictionary(uniqueKeysWithValues: clusters.map {
            ($0.name, try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8]($0.resource.value)))
        })
    }

    @Test func theRulesSettingsBecomeEnvoysAsIstiodWritesThem() throws {
        let clusters = try clusters(Self.rule)
        let whole = try #require(clusters["outbound|9080||payments.shop.svc.cluster.local"])
        #expect(whole.outlierDetection.consecutive5Xx.value == 2)
        #expect(whole.outlierDetection.enforcingConsecutive5Xx.value == 100)
        #expect(whole.outlierDetection.hasEnforcingSuccessRate && whole.outlierDetection.enforcingSuccessRate.value == 0)
        #expect(!whole.outlierDetection.hasConsecutiveGatewayFailure)
        #expect(whole.outlierDetection.interval == Google_Protobuf_Duration(seconds: 1))
        #expect(whole.outlierDetection.baseEjectionTime == Google_Protobuf_Duration(seconds: 30))
        #expect(whole.outlierDetection.maxEjectionPercent.value == 50)
        // Panic mode off unless minHealthPercent says otherwise.
        #expect(whole.commonLbConfig.hasHealthyPanicThreshold && whole.commonLbConfig.healthyPanicThreshold.value == 0)
        #expect(clusters["outbound|9080|v1|payments.shop.svc.cluster.local"]?.outlierDetection == whole.outlierDetection)

        let v2 = try #require(clusters["outbound|9080|v2|payments.shop.svc.cluster.local"])
        #expect(!v2.outlierDetection.hasConsecutive5Xx)
        #expect(v2.outlierDetection.consecutiveGatewayFailure.value == 0)
        #expect(v2.outlierDetection.enforcingConsecutiveGatewayFailure.value == 0)
        #expect(v2.outlierDetection.splitExternalLocalOriginErrors)
        #expect(v2.outlierDetection.consecutiveLocalOriginFailure.value == 3)
        #expect(v2.outlierDetection.enforcingConsecutiveLocalOriginFailure.value == 100)
        #expect(v2.outlierDetection.hasEnforcingLocalOriginSuccessRate && v2.outlierDetection.enforcingLocalOriginSuccessRate.value == 0)
        #expect(v2.commonLbConfig.healthyPanicThreshold.value == 25)
        #expect(!(clusters["inbound|8080||"]?.hasOutlierDetection ?? true))
    }

    @Test(arguments: [
        ("maxEjectionPercent: 50", "maxEjectionPercent: 101", "spec.trafficPolicy.outlierDetection.maxEjectionPercent: 101 is out of range 0-100"),
        ("interval: 1s", "interval: 0s", "spec.trafficPolicy.outlierDetection.interval: must be at least 1ms"),
        ("interval: 1s", "interval: 1500us", "spec.trafficPolicy.outlierDetection.interval: must be whole milliseconds"),
        ("splitExternalLocalOriginErrors: true, ", "",
         "spec.subsets[1].trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: is given but splitExternalLocalOriginErrors is not true: local-origin failures are only counted apart when split"),
        ("minHealthPercent: 25", "minHealthPercent: -1", "spec.subsets[1].trafficPolicy.outlierDetection.minHealthPercent: -1 is out of range 0-100"),
    ])
    func badSettingsAreRefusedWithFileDocumentAndField(original: String, replacement: String, message: String) {
        let reading = MeshConfigReader.read([("dr.yaml", Self.rule.replacingOccurrences(of: original, with: replacement))])
        #expect(reading.problems.map(\.description) == ["dr.yaml: document 1 (line 1): DestinationRule shop/payments: \(message)"])
    }

    @Test func theDeprecatedConsecutiveErrorsIsAWarning() {
        let reading = MeshConfigReader.read([("dr.yaml", Self.rule.replacingOccurrences(of: "consecutive5xxErrors: 2", with: "consecutiveErrors: 5"))])
        #expect(reading.problems.isEmpty)
        #expect(reading.warnings.contains { $0.contains("spec.trafficPolicy.outlierDetection.consecutiveErrors: deprecated") })
    }
}
