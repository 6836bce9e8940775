import FoundationEssentials

/// Certificates count time in `Date`s (as X509 does); the rest of Capstan in `Duration`s.
extension Date {
    func adding(_ duration: Duration) -> Date {
        addingTimeInterval(duration.timeInterval)
    }

    func subtracting(_ duration: Duration) -> Date {
        addingTimeInterval(-duration.timeInterval)
    }

    /// `self - earlier` as a duration (negative when `earlier` is later).
    func duration(since earlier: Date) -> Duration {
        .seconds(timeIntervalSince(earlier))
    }
}

extension Duration {
    /// The duration in (fractional) seconds.
    var timeInterval: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
