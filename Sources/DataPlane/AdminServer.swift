import HTTPEndpoints
import NIOCore

/// Envoy's admin API (on 127.0.0.1 only) and the Prometheus endpoint (all addresses, scrape only).
struct AdminServer: Sendable {
    enum Routes: Sendable {
        case admin
        case prometheusOnly
    }

    let proxy: Proxy

    func bind(host: String, port: Int, group: any EventLoopGroup, routes: Routes) -> EventLoopFuture<any Channel> {
        EndpointServer.bind(host: host, port: port, group: group,
                            routes: routes == .admin ? adminRoutes : prometheusRoutes)
    }

    private var prometheusRoutes: EndpointRoutes {
        var routes = EndpointRoutes()
        routes.get("/stats/prometheus") { [proxy] _ in .prometheus(proxy.prometheusText) }
        return routes
    }

    /// Envoy's admin paths, with Envoy's methods.
    private var adminRoutes: EndpointRoutes {
        let proxy = self.proxy
        var routes = prometheusRoutes
        routes.get("/ready") { _ in
            let state = proxy.state
            return EndpointResponse(state == .live ? .ok : .serviceUnavailable, state.rawValue + "\n")
        }
        routes.get("/stats") { _ in EndpointResponse(.ok, proxy.statsText) }
        routes.get("/config_dump") { request in
            EndpointResponse(.ok, proxy.configDump(includeEndpoints: request.query["include_eds"] != nil), contentType: "application/json")
        }
        routes.get("/certs") { _ in EndpointResponse(.ok, proxy.certificatesDump, contentType: "application/json") }
        routes.get("/listeners") { _ in EndpointResponse(.ok, proxy.listenersText) }
        routes.get("/clusters") { _ in EndpointResponse(.ok, proxy.clustersText) }
        routes.post("/drain_listeners") { request in
            proxy.drain(inboundOnly: request.query["inboundonly"] != nil, graceful: request.query["graceful"] != nil)
            return EndpointResponse(.ok, "OK\n")
        }
        routes.post("/healthcheck/fail") { _ in
            proxy.healthCheckFailing = true
            return EndpointResponse(.ok, "OK\n")
        }
        routes.post("/healthcheck/ok") { _ in
            proxy.healthCheckFailing = false
            return EndpointResponse(.ok, "OK\n")
        }
        routes.post("/quitquitquit") { _ in
            // Answer first, then stop.
            proxy.stopSoon()
            return EndpointResponse(.ok, "OK\n")
        }
        return routes
    }
}
