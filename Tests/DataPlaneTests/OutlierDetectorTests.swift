import Configuration
@testable import DataPlane
import HTTPProxy
import NIOCore
import SwiftProtobuf
import Testing
import XDS

/// Outlier detection with time driven by hand: thresholds, enforcement, `max_ejection_percent`, the
/// ejection multiplier and its cap, the interval sweep, the panic threshold, and the decoder's refusals.
@Suite struct OutlierDetectorTests {
    static let start = NIODeadline.uptimeNanoseconds(1_000_000_000_000)

    func addresses(_ count: Int) throws -> [SocketAddress] {
        try (0..<count).map { try SocketAddress(ipAddress: "192.0.2.\(10 + $0)", port: 80) }
    }

    func detector(_ count: Int, roll: Int = 0, _ change: (inout OutlierDetectionConfig) -> Void = { _ in }) throws -> OutlierDetector {
        var config = OutlierDetectionConfig()
        change(&config)
        return OutlierDetector(config: config, addresses: try addresses(count), stats: OutlierDetectionStats(),
                               roll: { roll }, jitter: { _ in .zero })
    }

    func seconds(_ value: Int64) -> NIODeadline { Self.start + .seconds(value) }

    @Test func theThresholdEjectsAndASuccessStartsTheCountAgain() throws {
        let detector = try detector(2) { $0.consecutive5xx = 3; $0.maxEjectionPercent = 50 }
        detector.record(.response(status: 500), host: 0, now: Self.start)
        detector.record(.response(status: 503), host: 0, now: Self.start)
        detector.record(.response(status: 200), host: 0, now: Self.start)
        detector.record(.response(status: 500), host: 0, now: Self.start)
        detector.record(.response(status: 500), host: 0, now: Self.start)
        #expect(!detector.isEjected(0))
        // Unless split, a local-origin failure counts as the 503 the router answers for it.
        detector.record(.connectFailure, host: 0, now: Self.start)
        #expect(detector.isEjected(0))
        #expect(!detector.isEjected(1))
        #expect(detector.stats.ejectionsActive.value == 1)
        #expect(detector.stats.detections(.consecutive5xx) == 1)
        #expect(detector.stats.enforcements(.consecutive5xx) == 1)
        // The gateway-failure detector counted too (502-504 and local origin), but enforces 0 % by default.
        #expect(detector.stats.detections(.consecutiveGatewayFailure) == 0)
        let entries = Dictionary(uniqueKeysWithValues: detector.stats.entries)
        #expect(entries["outlier_detection.ejections_active"] == 1)
        #expect(entries["outlier_detection.ejections_enforced_consecutive_5xx"] == 1)
    }

    @Test func aPassingActiveHealthCheckBringsAnEjectedHostBack() throws {
        let detector = try detector(2) { $0.consecutive5xx = 1; $0.maxEjectionPercent = 50 }
        detector.record(.response(status: 500), host: 0, now: Self.start)
        #expect(detector.isEjected(0))
        detector.healthCheckPassed(0, now: Self.start)
        #expect(!detector.isEjected(0) && detector.stats.ejectionsActive.value == 0)
        let keeps = try self.detector(2) { $0.consecutive5xx = 1; $0.maxEjectionPercent = 50; $0.unejectsOnHealthCheck = false }
        keeps.record(.response(status: 500), host: 0, now: Self.start)
        keeps.healthCheckPassed(0, now: Self.start)
        #expect(keeps.isEjected(0), "successful_active_health_check_uneject_host: false")
    }

    @Test func gatewayFailuresAndLocalOriginFailuresHaveTheirOwnDetectors() throws {
        let gateway = try detector(2) {
            $0.consecutive5xx = 0; $0.consecutiveGatewayFailure = 2; $0.enforcingConsecutiveGatewayFailure = 100; $0.maxEjectionPercent = 50
        }
        gateway.record(.response(status: 500), host: 0, now: Self.start)
        gateway.record(.response(status: 504), host: 0, now: Self.start)
        #expect(!gateway.isEjected(0))
        gateway.record(.timeout, host: 0, now: Self.start)
        #expect(gateway.isEjected(0))
        #expect(gateway.stats.enforcements(.consecutiveGatewayFailure) == 1)

        let split = try detector(2) {
            $0.splitExternalLocalOriginErrors = true; $0.consecutiveLocalOriginFailure = 2; $0.consecutive5xx = 2; $0.maxEjectionPercent = 50
        }
        // With the split, local-origin failures do not count as 5xx, and a response ends their run.
        split.record(.reset, host: 0, now: Self.start)
        split.record(.response(status: 503), host: 0, now: Self.start)
        split.record(.connectFailure, host: 0, now: Self.start)
        #expect(!split.isEjected(0))
        split.record(.timeout, host: 0, now: Self.start)
        #expect(split.isEjected(0))
        #expect(split.stats.enforcements(.consecutiveLocalOriginFailure) == 1)
        #expect(split.stats.detections(.consecutive5xx) == 0)
    }

    @Test func aHostBackFromEjectionNeedsTheWholeThresholdAgain() throws {
        // Envoy's #40697: every ejection, not only the first, after consecutive_gateway_failure 504s; the
        // 5xx count that rose with them starts again too.
        let detector = try detector(2) {
            $0.consecutiveGatewayFailure = 3; $0.enforcingConsecutiveGatewayFailure = 100; $0.maxEjectionPercent = 50
            $0.interval = .seconds(1); $0.baseEjectionTime = .seconds(5)
        }
        var now = Self.start
        for round in 1...3 {
            for failure in 1...3 {
                #expect(!detector.isEjected(0), "round \(round), before failure \(failure)")
                detector.record(.response(status: 504), host: 0, now: now)
            }
            #expect(detector.isEjected(0), "round \(round)")
            while detector.isEjected(0) {
                now = now + .seconds(1)
                detector.sweep(now: now)
            }
        }
        #expect(detector.stats.detections(.consecutive5xx) == 0)
        #expect(detector.stats.enforcements(.consecutiveGatewayFailure) == 3)
    }

    @Test func onlyGatewayErrorsGivenStillLeavesEnvoysDefaultFiveConsecutive5xx() throws {
        // Istio's #43357: with consecutiveGatewayErrors alone, consecutive_5xx keeps Envoy's default (5,
        // enforced at 100 %), so five 500s eject as well; consecutive5xxErrors: 0 turns it off.
        let gatewayOnly = try detector(2) { $0.consecutiveGatewayFailure = 3; $0.enforcingConsecutiveGatewayFailure = 100; $0.maxEjectionPercent = 50 }
        for _ in 1...5 { gatewayOnly.record(.response(status: 500), host: 0, now: Self.start) }
        #expect(gatewayOnly.isEjected(0))
        let off = try detector(2) {
            $0.consecutive5xx = 0; $0.consecutiveGatewayFailure = 3; $0.enforcingConsecutiveGatewayFailure = 100; $0.maxEjectionPercent = 50
        }
        for _ in 1...20 { off.record(.response(status: 500), host: 0, now: Self.start) }
        #expect(!off.isEjected(0))
    }

    @Test func enforcementIsAPercentChance() throws {
        let never = try detector(2, roll: 40) { $0.consecutive5xx = 1; $0.enforcingConsecutive5xx = 40; $0.maxEjectionPercent = 50 }
        never.record(.response(status: 500), host: 0, now: Self.start)
        #expect(!never.isEjected(0))
        #expect(never.stats.detections(.consecutive5xx) == 1)
        #expect(never.stats.enforcements(.consecutive5xx) == 0)
        let always = try detector(2, roll: 39) { $0.consecutive5xx = 1; $0.enforcingConsecutive5xx = 40; $0.maxEjectionPercent = 50 }
        always.record(.response(status: 500), host: 0, now: Self.start)
        #expect(always.isEjected(0))
    }

    @Test func maxEjectionPercentCountsTheHostAboutToBeEjected() throws {
        // Envoy since #27909: 1 of 2 hosts is 50 %, above the default 10 %: nothing is ejected, not even one.
        let byDefault = try detector(2) { $0.consecutive5xx = 1 }
        byDefault.record(.response(status: 500), host: 0, now: Self.start)
        #expect(!byDefault.isEjected(0))
        #expect(byDefault.stats.overflows.value == 1)
        // 50 % of 3 hosts: one (33 %) may go, a second (67 %) may not.
        let half = try detector(3) { $0.consecutive5xx = 1; $0.maxEjectionPercent = 50 }
        half.record(.response(status: 500), host: 0, now: Self.start)
        half.record(.response(status: 500), host: 1, now: Self.start)
        #expect(half.isEjected(0))
        #expect(!half.isEjected(1))
        #expect(half.ejectedHosts == 1)
        #expect(half.stats.overflows.value == 1)
        #expect(half.stats.detections(.consecutive5xx) == 2)
    }

    @Test func ejectionsLastBaseTimesTheMultiplierUpToTheCapAndTheSweepBringsHostsBack() throws {
        let detector = try detector(2) {
            $0.consecutive5xx = 1; $0.maxEjectionPercent = 50; $0.baseEjectionTime = .seconds(30); $0.maxEjectionTime = .seconds(70)
            $0.interval = .seconds(10)
        }
        var now = Self.start
        func failAndWaitForReturn() -> Int64 {
            detector.record(.response(status: 500), host: 0, now: now)
            #expect(detector.isEjected(0))
            let ejectedAt = now
            while detector.isEjected(0) {
                now = now + .seconds(10)
                detector.sweep(now: now)
            }
            return (now - ejectedAt).nanoseconds / 1_000_000_000
        }
        #expect(failAndWaitForReturn() == 30)
        #expect(failAndWaitForReturn() == 60)
        // 90 s would pass the 70 s cap.
        #expect(failAndWaitForReturn() == 70)
        #expect(detector.history[0].multiplier == 3)
        #expect(detector.history[0].count == 3)
        // Back with its counters at zero; each interval it stays in lowers the multiplier by one.
        for _ in 0..<4 {
            now = now + .seconds(10)
            detector.sweep(now: now)
        }
        #expect(detector.history[0].multiplier == 0)
        #expect(failAndWaitForReturn() == 30)
        #expect(detector.stats.ejectionsActive.value == 0)
    }

    @Test func ejectedHostsAreSkippedUntilTooFewAreLeftThenAllAreUsed() throws {
        var config = BootstrapConfig.Cluster(name: "svc", discovery: .endpoints(try addresses(4).map { .init($0) }))
        config.outlierDetection = { var detection = OutlierDetectionConfig(); detection.consecutive5xx = 1; detection.maxEjectionPercent = 100; return detection }()
        let original = try SocketAddress(ipAddress: "10.0.0.1", port: 80)
        for policy in [BootstrapConfig.Cluster.LoadBalancing.roundRobin, .random, .leastRequest,
                       .ringHash(minimumSize: 1024, maximumSize: 8_388_608), .maglev(tableSize: 65_537)] {
            config.loadBalancing = policy
            let cluster = ClusterRuntime(config)
            let detector = try #require(cluster.outlierDetector)
            detector.record(.response(status: 500), host: 1)
            detector.record(.response(status: 502), host: 3)
            // Half the hosts are left: not below the default 50 % panic threshold.
            let picks = try (0..<40).map { _ in try cluster.endpoint(originalDestination: original).get().index }
            #expect(Set(picks) == [0, 2], "\(policy)")
            // A third ejected: 25 % healthy is panic, and every host takes requests again.
            detector.record(.response(status: 500), host: 0)
            let panicked = try (0..<200).map { _ in try cluster.endpoint(originalDestination: original).get().index }
            #expect(Set(panicked) == [0, 1, 2, 3], "\(policy)")
            #expect(cluster.stats.outlierDetection.panics.value >= 200)
        }
        // Istio's default (minHealthPercent 0): no panic; with every host ejected, no healthy upstream.
        config.healthyPanicThreshold = 0
        config.loadBalancing = .roundRobin
        let cluster = ClusterRuntime(config)
        for host in 0..<4 { cluster.outlierDetector?.record(.response(status: 500), host: host) }
        #expect(throws: ProxyRuntime.RouteFailure.noHealthyUpstream) { try cluster.endpoint(originalDestination: original).get() }
        #expect(cluster.hostLines.contains("svc::192.0.2.10:80::health_flags::/failed_outlier_check"))
    }

    @Test func aHashKeepsOneHostWhileItsOwnIsEjected() throws {
        var config = BootstrapConfig.Cluster(name: "svc", discovery: .endpoints(try addresses(4).map { .init($0) }),
                                             loadBalancing: .ringHash(minimumSize: 1024, maximumSize: 8_388_608))
        config.outlierDetection = { var detection = OutlierDetectionConfig(); detection.consecutive5xx = 1; detection.maxEjectionPercent = 50; return detection }()
        let cluster = ClusterRuntime(config)
        let original = try SocketAddress(ipAddress: "10.0.0.1", port: 80)
        let key: UInt64 = 0x1234_5678_9ABC_DEF0
        let home = try #require(try cluster.endpoint(originalDestination: original, hash: key).get().index)
        cluster.outlierDetector?.record(.response(status: 500), host: home)
        let fallback = try (0..<10).map { _ in try cluster.endpoint(originalDestination: original, hash: key).get().index }
        #expect(Set(fallback).count == 1)
        #expect(fallback.first != home)
    }

    @Test func anEndpointUpdateKeepsTheStateOfHostsThatStay() throws {
        var config = BootstrapConfig.Cluster(name: "svc", discovery: .endpoints(try addresses(3).map { .init($0) }))
        config.outlierDetection = { var detection = OutlierDetectionConfig(); detection.consecutive5xx = 1; detection.maxEjectionPercent = 50; return detection }()
        let before = ClusterRuntime(config)
        before.outlierDetector?.record(.response(status: 500), host: 1)
        config.discovery = .endpoints(try addresses(4).dropFirst().map { .init($0) })
        let after = ClusterRuntime(config, stats: before.stats, previous: before)
        #expect(after.outlierDetector?.isEjected(0) == true)
        #expect(after.outlierDetector?.ejectedHosts == 1)
        #expect(after.stats.outlierDetection.ejectionsActive.value == 1)
        // The replaced detector, still reached by requests in flight, no longer ejects or sweeps.
        before.outlierDetector?.record(.response(status: 500), host: 0)
        before.outlierDetector?.sweep(now: .now() + .seconds(3600))
        #expect(before.outlierDetector?.isEjected(0) == false)
        #expect(after.stats.outlierDetection.ejectionsActive.value == 1)
    }

    // MARK: Decoding

    func cluster(_ change: (inout Envoy_Config_Cluster_V3_Cluster) -> Void) -> Envoy_Config_Cluster_V3_Cluster {
        var cluster = Envoy_Config_Cluster_V3_Cluster()
        cluster.name = "svc"
        cluster.type = .static
        change(&cluster)
        return cluster
    }

    @Test func istiodsOutlierDetectionDecodesWithNothingListed() throws {
        let proto = cluster {
            $0.outlierDetection.consecutive5Xx = Google_Protobuf_UInt32Value(2)
            $0.outlierDetection.enforcingConsecutive5Xx = Google_Protobuf_UInt32Value(100)
            $0.outlierDetection.enforcingSuccessRate = Google_Protobuf_UInt32Value(0)
            $0.outlierDetection.interval = Google_Protobuf_Duration(seconds: 1)
            $0.outlierDetection.baseEjectionTime = Google_Protobuf_Duration(seconds: 400)
            $0.outlierDetection.maxEjectionPercent = Google_Protobuf_UInt32Value(50)
            $0.commonLbConfig.healthyPanicThreshold.value = 0
        }
        let decoded = try XDSResourceDecoder.cluster(proto).cluster
        let detection = try #require(decoded.outlierDetection)
        #expect(detection.consecutive5xx == 2)
        #expect(detection.interval == .seconds(1))
        #expect(detection.maxEjectionPercent == 50)
        // Without max_ejection_time, the cap is the larger of 300 s and the base.
        #expect(detection.maxEjectionTime == .seconds(400))
        #expect(decoded.healthyPanicThreshold == 0)
        #expect(decoded.fieldsNotActedOn.isEmpty, "\(decoded.fieldsNotActedOn)")
    }

    @Test func detectorsCapstanLacksAreListed() throws {
        let proto = cluster {
            $0.outlierDetection.consecutive5Xx = Google_Protobuf_UInt32Value(2)
            $0.outlierDetection.failurePercentageThreshold = Google_Protobuf_UInt32Value(80)
            $0.outlierDetection.enforcingFailurePercentage = Google_Protobuf_UInt32Value(100)
            $0.outlierDetection.successfulActiveHealthCheckUnejectHost = Google_Protobuf_BoolValue(true)
        }
        let decoded = try XDSResourceDecoder.cluster(proto).cluster
        #expect(decoded.fieldsNotActedOn.map(\.path) == [
            "outlier_detection.enforcing_success_rate", "outlier_detection.enforcing_failure_percentage",
            "outlier_detection.failure_percentage_threshold",
        ])
        #expect(decoded.outlierDetection?.unejectsOnHealthCheck == true, "acted on, with the active health checks")
    }

    /// A bad value of each kind, by the field it is in.
    static func bad(_ field: String) -> Envoy_Config_Cluster_V3_Cluster {
        var c = Envoy_Config_Cluster_V3_Cluster()
        c.name = "svc"
        c.type = .static
        switch field {
        case "max_ejection_percent": c.outlierDetection.maxEjectionPercent = Google_Protobuf_UInt32Value(101)
        case "interval": c.outlierDetection.interval = Google_Protobuf_Duration(seconds: 0)
        case "enforcing_consecutive_gateway_failure": c.outlierDetection.enforcingConsecutiveGatewayFailure = Google_Protobuf_UInt32Value(200)
        case "max_ejection_time":
            c.outlierDetection.baseEjectionTime = Google_Protobuf_Duration(seconds: 60)
            c.outlierDetection.maxEjectionTime = Google_Protobuf_Duration(seconds: 30)
        default: c.commonLbConfig.healthyPanicThreshold.value = 150
        }
        return c
    }

    @Test(arguments: [
        ("max_ejection_percent", "cluster \"svc\".outlier_detection.max_ejection_percent", "101 is above 100 (a percentage)"),
        ("interval", "cluster \"svc\".outlier_detection.interval", "must be above 0"),
        ("enforcing_consecutive_gateway_failure", "cluster \"svc\".outlier_detection.enforcing_consecutive_gateway_failure", "200 is above 100 (a percentage)"),
        ("max_ejection_time", "cluster \"svc\".outlier_detection.max_ejection_time", "is below base_ejection_time"),
        ("healthy_panic_threshold", "cluster \"svc\".common_lb_config.healthy_panic_threshold.value", "150.0 is not a percentage (0-100)"),
    ])
    func badValuesAreRefusedWithTheirPath(field: String, path: String, message: String) {
        #expect(throws: ConfigError(path: path, message: message)) { try XDSResourceDecoder.cluster(Self.bad(field)) }
    }
}
