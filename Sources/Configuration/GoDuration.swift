/// Durations as Go writes them (`10s`, `500ms`, `1m30s`, `1.5h`, `0`): the form Istio's environment
/// variables (`SECRET_TTL`, `MINIMUM_DRAIN_DURATION`) and YAML resources (`connectTimeout`) use.
public enum GoDuration {
    /// Two-letter units first, so `ms` is not read as `m`.
    private static let units: [(String, Duration)] = [
        ("ns", .nanoseconds(1)), ("us", .microseconds(1)), ("µs", .microseconds(1)), ("μs", .microseconds(1)),
        ("ms", .milliseconds(1)), ("s", .seconds(1)), ("m", .seconds(60)), ("h", .seconds(3600)),
    ]

    /// The duration `text` stands for, or nil if it is not one. A leading `-` makes it negative;
    /// every number needs a unit except a bare `0`.
    public static func parse(_ text: String) -> Duration? {
        var rest = Substring(text)
        var negative = false
        if let sign = rest.first, sign == "-" || sign == "+" {
            negative = sign == "-"
            rest = rest.dropFirst()
        }
        if rest == "0" { return .zero }
        guard !rest.isEmpty else { return nil }
        var total = Duration.zero
        while !rest.isEmpty {
            let number = rest.prefix { ("0"..."9").contains($0) || $0 == "." }
            rest = rest.dropFirst(number.count)
            guard !number.isEmpty, number != ".", let value = Double(number), value.isFinite,
                  let unit = units.first(where: { rest.hasPrefix($0.0) })
            else { return nil }
            rest = rest.dropFirst(unit.0.count)
            // Far beyond any timeout (about 30 000 years), and short of what Duration can hold.
            let (unitSeconds, unitAttoseconds) = unit.1.components
            guard value * (Double(unitSeconds) + Double(unitAttoseconds) / 1e18) < 1e12 else { return nil }
            total += unit.1 * value
        }
        return negative ? .zero - total : total
    }

    /// A duration the way Go prints it, for messages: `24h0m0s`, `1m30s`, `500ms`, `0s`.
    public static func format(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        if duration < .zero { return "-" + format(.zero - duration) }
        if seconds == 0 {
            let nanoseconds = attoseconds / 1_000_000_000
            if nanoseconds == 0 { return "0s" }
            if nanoseconds % 1_000_000 == 0 { return "\(nanoseconds / 1_000_000)ms" }
            if nanoseconds % 1_000 == 0 { return "\(nanoseconds / 1_000)µs" }
            return "\(nanoseconds)ns"
        }
        var fraction = ""
        let milliseconds = attoseconds / 1_000_000_000_000_000
        if milliseconds > 0 {
            var digits = String(milliseconds)
            digits = String(repeating: "0", count: 3 - digits.count) + digits
            while digits.hasSuffix("0") { digits.removeLast() }
            fraction = "." + digits
        }
        let hours = seconds / 3600, minutes = (seconds % 3600) / 60, rest = seconds % 60
        if hours > 0 { return "\(hours)h\(minutes)m\(rest)\(fraction)s" }
        if minutes > 0 { return "\(minutes)m\(rest)\(fraction)s" }
        return "\(rest)\(fraction)s"
    }
}

extension ConfigReader {
    /// Istio's durations, as Go writes them: `10s`, `500ms`, `1m30s`, `1.5s`.
    public func goDuration() throws(ConfigError) -> Duration {
        guard case .string(let text) = value, !text.isEmpty else { throw fail("expected a duration such as \"10s\" or \"500ms\"") }
        guard let duration = GoDuration.parse(text), duration >= .zero else {
            throw fail("\"\(text)\" is not a duration such as \"10s\" or \"500ms\"")
        }
        return duration
    }
}
