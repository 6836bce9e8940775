import NIOCore

/// The cluster's hosts as Envoy's `/clusters` lists them: `NAME::10.0.0.1:80::health_flags::healthy`,
/// or `/failed_active_hc` for a host failing its health checks, `/failed_outlier_check` for one its
/// outlier detector ejected and `/degraded_eds_health` for one EDS gave as DEGRADED (joined, in Envoy's
/// order, for a host with several), each host's weight, and where the
/// assignment gave localities, its `region`, `zone`, `sub_zone` and `priority`.
extension ClusterRuntime {
    var hostLines: [String] {
        guard case .endpoints(let endpoints) = config.discovery else { return [] }
        var lines: [String] = []
        for (index, endpoint) in endpoints.enumerated() {
            let host = "\(name)::\(Self.text(of: endpoint.address))"
            let ejected = outlierDetector.map { $0.addresses.indices.contains(index) && $0.isEjected(index) } ?? false
            let failing = healthChecker?.isFailing(index) ?? false
            let flags = (failing ? "/failed_active_hc" : "") + (ejected ? "/failed_outlier_check" : "") + (endpoint.degraded ? "/degraded_eds_health" : "")
            lines.append("\(host)::health_flags::\(flags.isEmpty ? "healthy" : flags)")
            lines.append("\(host)::weight::\(endpoint.weight)")
            if config.localities.indices.contains(endpoint.locality) {
                let locality = config.localities[endpoint.locality]
                let parts = locality.name.split(separator: "/", omittingEmptySubsequences: false).map(String.init) + ["", "", ""]
                lines.append("\(host)::region::\(parts[0])")
                lines.append("\(host)::zone::\(parts[1])")
                lines.append("\(host)::sub_zone::\(parts[2])")
                lines.append("\(host)::priority::\(locality.priority)")
            }
        }
        return lines
    }

    private static func text(of address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return address.pathname ?? "-" }
        if case .v6 = address { return "[\(ip)]:\(port)" }
        return "\(ip):\(port)"
    }
}
