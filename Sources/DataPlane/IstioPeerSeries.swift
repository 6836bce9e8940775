import NIOConcurrencyHelpers

/// Istio's TCP series of the connections made with one TLS context, by reporter and peer. The context
/// knows this side's identity, so a connection finds its series by the peer's SPIFFE ID alone, under
/// this context's lock, instead of by three principals under the lock all connections share
/// (``IstioTCPMetrics``, asked only the first time a peer is seen). The series are
/// ``IstioTCPMetrics``'s own, so the Prometheus output does not change. Kept as long as the context:
/// a rebuilt context (a rotated certificate, perhaps another identity) starts afresh.
final class IstioPeerSeries: Sendable {
    private struct Key: Hashable {
        var reporter: IstioTCPMetrics.Reporter
        var peer: String?
        var mutualTLS: Bool
    }

    /// This side's SPIFFE ID (the certificate the context presents); nil: `unknown`.
    let local: String?
    private let metrics: IstioTCPMetrics
    private let known = NIOLockedValueBox<[Key: IstioTCPMetrics.Series]>([:])

    init(local: String?, metrics: IstioTCPMetrics) {
        self.local = local
        self.metrics = metrics
    }

    /// The series of a connection with `peer` (nil: `unknown`): this side is the source when it reports
    /// as `source` (outbound), the destination when it reports as `destination` (inbound).
    func series(_ reporter: IstioTCPMetrics.Reporter, peer: String?, mutualTLS: Bool) -> IstioTCPMetrics.Series {
        let key = Key(reporter: reporter, peer: peer, mutualTLS: mutualTLS)
        return known.withLockedValue { known in
            if let found = known[key] { return found }
            let made = switch reporter {
            case .source: metrics.series(.source, source: local, destination: peer, mutualTLS: mutualTLS)
            case .destination: metrics.series(.destination, source: peer, destination: local, mutualTLS: mutualTLS)
            }
            known[key] = made
            return made
        }
    }
}
