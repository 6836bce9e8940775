import FoundationEssentials

/// What `/healthz/ready` decides from, as the agent sees it at one moment: the pod is ready when the
/// proxy is LIVE, the first listeners and clusters from the control plane were accepted, a valid
/// certificate is held, and the agent is not draining.
public struct Readiness: Sendable, Equatable {
    /// The proxy's server state from its admin API (`LIVE`, `PRE_INITIALIZING`, `DRAINING`); nil when
    /// the admin API did not answer (the proxy is starting, restarting or gone).
    public var proxyState: String?
    /// The proxy accepted a first listener update (LDS) from the control plane.
    public var listenersAccepted: Bool
    /// The proxy accepted a first cluster update (CDS) from the control plane.
    public var clustersAccepted: Bool
    /// When the workload certificate expires; nil while there is none.
    public var certificateExpiry: Date?
    /// The xDS relay's stream to the control plane is up (reported in metrics; readiness does not
    /// need it, as a proxy keeps serving its last configuration).
    public var upstreamConnected: Bool
    /// SIGTERM or `POST /drain` started an inbound drain: the pod should leave the endpoints.
    public var draining: Bool

    public init(proxyState: String? = nil, listenersAccepted: Bool = false, clustersAccepted: Bool = false,
                certificateExpiry: Date? = nil, upstreamConnected: Bool = false, draining: Bool = false) {
        self.proxyState = proxyState
        self.listenersAccepted = listenersAccepted
        self.clustersAccepted = clustersAccepted
        self.certificateExpiry = certificateExpiry
        self.upstreamConnected = upstreamConnected
        self.draining = draining
    }

    /// The conditions not met at `now`, in words (`proxy not LIVE (PRE_INITIALIZING)`, `LDS not
    /// accepted yet`, `no valid certificate`, …); empty when ready.
    public func unmetConditions(at now: Date) -> [String] {
        var unmet: [String] = []
        switch proxyState {
        case nil: unmet.append("proxy not LIVE (admin API not answering)")
        case "LIVE": break
        case let state?: unmet.append("proxy not LIVE (\(state))")
        }
        if !listenersAccepted { unmet.append("LDS not accepted yet") }
        if !clustersAccepted { unmet.append("CDS not accepted yet") }
        if let certificateExpiry {
            if certificateExpiry <= now { unmet.append("no valid certificate (expired \(Int((now.timeIntervalSince(certificateExpiry)).rounded()))s ago)") }
        } else {
            unmet.append("no valid certificate")
        }
        if draining { unmet.append("draining") }
        return unmet
    }

    public func isReady(at now: Date) -> Bool { unmetConditions(at: now).isEmpty }
}
