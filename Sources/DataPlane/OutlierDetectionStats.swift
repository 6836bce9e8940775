import Atomics

/// Envoy's `cluster.NAME.outlier_detection.*` statistics, and `lb_healthy_panic`. Shown once the cluster
/// has had an outlier detector.
final class OutlierDetectionStats: Sendable {
    /// Hosts ejected now.
    let ejectionsActive = Gauge()
    /// Detections that would have ejected a host but `max_ejection_percent` did not allow it.
    let overflows = Counter()
    /// Requests balanced across all hosts, ejected ones too, because too few were healthy (panic).
    let panics = Counter()
    private let detectedByKind = OutlierDetector.Detection.allCases.map { _ in Counter() }
    private let enforcedByKind = OutlierDetector.Detection.allCases.map { _ in Counter() }
    private let configured = ManagedAtomic(false)

    init() {}

    func markConfigured() {
        if !configured.load(ordering: .relaxed) { configured.store(true, ordering: .relaxed) }
    }

    /// A host reached `detection`'s threshold (ejected or not).
    func detected(_ detection: OutlierDetector.Detection) { detectedByKind[Self.position(detection)].increment() }

    /// A host was ejected for `detection`.
    func enforced(_ detection: OutlierDetector.Detection) { enforcedByKind[Self.position(detection)].increment() }

    func detections(_ detection: OutlierDetector.Detection) -> UInt64 { detectedByKind[Self.position(detection)].value }
    func enforcements(_ detection: OutlierDetector.Detection) -> UInt64 { enforcedByKind[Self.position(detection)].value }

    private static func position(_ detection: OutlierDetector.Detection) -> Int {
        OutlierDetector.Detection.allCases.firstIndex(of: detection)!
    }

    var entries: [(String, Double)] {
        guard configured.load(ordering: .relaxed) else { return [] }
        let kinds = OutlierDetector.Detection.allCases
        var entries: [(String, Double)] = [
            ("lb_healthy_panic", Double(panics.value)),
            ("outlier_detection.ejections_active", Double(ejectionsActive.value)),
            ("outlier_detection.ejections_overflow", Double(overflows.value)),
            // Envoy's deprecated totals count detections, enforced or not.
            ("outlier_detection.ejections_total", Double(detectedByKind.reduce(0) { $0 + $1.value })),
            ("outlier_detection.ejections_consecutive_5xx", Double(detections(.consecutive5xx))),
            ("outlier_detection.ejections_enforced_total", Double(enforcedByKind.reduce(0) { $0 + $1.value })),
        ]
        for kind in kinds {
            entries.append(("outlier_detection.ejections_detected_\(kind.rawValue)", Double(detections(kind))))
            entries.append(("outlier_detection.ejections_enforced_\(kind.rawValue)", Double(enforcements(kind))))
        }
        return entries
    }
}
