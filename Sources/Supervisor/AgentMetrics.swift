import FoundationEssentials

/// The agent's own metrics, in Prometheus text, which `/stats/prometheus` on the status port puts
/// before the proxy's.
public struct AgentMetrics: Sendable, Equatable {
    /// Restarts of the proxy child after a crash.
    public var proxyRestarts: Int
    public var readiness: Readiness

    public init(proxyRestarts: Int, readiness: Readiness) {
        self.proxyRestarts = proxyRestarts
        self.readiness = readiness
    }

    /// `capstan_agent_*` families: restarts, seconds until the certificate expires (absent without a
    /// certificate; negative once expired), readiness, and the xDS upstream's state.
    public func prometheusText(at now: Date) -> String {
        var families: [(name: String, type: String, help: String, value: String)] = [
            ("capstan_agent_proxy_restarts_total", "counter", "Restarts of the proxy child after it crashed.",
             String(proxyRestarts)),
        ]
        if let expiry = readiness.certificateExpiry {
            families.append(("capstan_agent_certificate_expiry_seconds", "gauge",
                             "Seconds until the workload certificate expires.",
                             String(Int64(expiry.timeIntervalSince(now).rounded(.down)))))
        }
        families.append(("capstan_agent_ready", "gauge", "1 when /healthz/ready answers 200.",
                         readiness.isReady(at: now) ? "1" : "0"))
        families.append(("capstan_agent_xds_upstream_connected", "gauge",
                         "1 while the xDS relay's stream to the control plane is up.",
                         readiness.upstreamConnected ? "1" : "0"))
        return families.map { "# HELP \($0.name) \($0.help)\n# TYPE \($0.name) \($0.type)\n\($0.name) \($0.value)\n" }.joined()
    }
}
