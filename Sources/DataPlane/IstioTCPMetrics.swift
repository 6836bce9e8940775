import NIOConcurrencyHelpers

/// Istio's standard TCP metrics, `istio_tcp_connections_opened_total` and
/// `istio_tcp_connections_closed_total`, labelled by who reports (`source`: the client's proxy, on
/// outbound connections; `destination`: the server's, on inbound ones), the principals at both ends
/// (SPIFFE IDs, `unknown` without mutual TLS) and `connection_security_policy` (`mutual_tls` or `none`).
///
/// A series is made on first use of its label set and kept. Plaintext connections use two series made
/// up front, so the plaintext path costs no lookup and builds no string; TLS connections find theirs
/// through their context's ``IstioPeerSeries``, which comes here only for a peer it has not seen.
final class IstioTCPMetrics: Sendable {
    enum Reporter: String, Sendable {
        case source
        case destination
    }

    struct Labels: Hashable, Sendable {
        var reporter: Reporter
        var sourcePrincipal: String
        var destinationPrincipal: String
        var mutualTLS: Bool
    }

    /// The counters of one label set.
    final class Series: Sendable {
        let labels: Labels
        let opened = Counter()
        let closed = Counter()

        init(labels: Labels) { self.labels = labels }
    }

    static let unknown = "unknown"
    private let plaintextSource: Series
    private let plaintextDestination: Series
    private let series: NIOLockedValueBox<[Labels: Series]>

    init() {
        func plaintext(_ reporter: Reporter) -> Series {
            Series(labels: Labels(reporter: reporter, sourcePrincipal: Self.unknown, destinationPrincipal: Self.unknown, mutualTLS: false))
        }
        plaintextSource = plaintext(.source)
        plaintextDestination = plaintext(.destination)
        series = NIOLockedValueBox([plaintextSource.labels: plaintextSource, plaintextDestination.labels: plaintextDestination])
    }

    /// The series of a connection without mutual TLS and without known principals.
    func plaintext(_ reporter: Reporter) -> Series {
        reporter == .source ? plaintextSource : plaintextDestination
    }

    /// The series of a connection whose principals are known (nil: `unknown`).
    func series(_ reporter: Reporter, source: String?, destination: String?, mutualTLS: Bool) -> Series {
        if source == nil && destination == nil && !mutualTLS { return plaintext(reporter) }
        let labels = Labels(reporter: reporter, sourcePrincipal: source ?? Self.unknown,
                            destinationPrincipal: destination ?? Self.unknown, mutualTLS: mutualTLS)
        return series.withLockedValue { series in
            if let existing = series[labels] { return existing }
            let made = Series(labels: labels)
            series[labels] = made
            return made
        }
    }

    /// The two counter families in Prometheus exposition text; series never used are left out.
    var prometheusText: String {
        let used = series.withLockedValue { Array($0.values) }
            .filter { $0.opened.value > 0 || $0.closed.value > 0 }
            .sorted { ($0.labels.reporter.rawValue, $0.labels.sourcePrincipal, $0.labels.destinationPrincipal)
                < ($1.labels.reporter.rawValue, $1.labels.sourcePrincipal, $1.labels.destinationPrincipal) }
        var text = ""
        for (name, counter) in [("istio_tcp_connections_opened_total", \Series.opened), ("istio_tcp_connections_closed_total", \Series.closed)] {
            text += "# TYPE \(name) counter\n"
            for series in used {
                let labels = series.labels
                text += "\(name){reporter=\"\(labels.reporter.rawValue)\",source_principal=\"\(Self.escaped(labels.sourcePrincipal))\","
                    + "destination_principal=\"\(Self.escaped(labels.destinationPrincipal))\","
                    + "connection_security_policy=\"\(labels.mutualTLS ? "mutual_tls" : "none")\"} \(series[keyPath: counter].value)\n"
            }
        }
        return text
    }

    /// A label value as Prometheus' text format needs it.
    static func escaped(_ value: String) -> String {
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
