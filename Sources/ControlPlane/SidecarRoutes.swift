/// The workload a sidecar serves, as routes that depend on the caller see it: its labels and namespace
/// (what Istio's `sourceLabels` and `sourceNamespace` match).
struct ProxyWorkload: Sendable, Hashable {
    var labels: [String: String]
    var namespace: String

    /// A caller no `sourceLabels` or `sourceNamespace` names.
    static let anonymous = ProxyWorkload(labels: [:], namespace: "")
}

/// What the sidecars' RDS is made of (a route configuration per HTTP port, and one per sniffed service
/// address and port), kept when routes depend on the caller (some VirtualService match has
/// `sourceLabels` or `sourceNamespace`): each proxy's routes are then made for its own workload, as
/// istiod makes them per proxy. Otherwise every sidecar shares one set.
struct SidecarRoutes: Sendable, Equatable {
    struct Service: Sendable, Equatable {
        var host: String
        var port: Int
        var entry: ServiceEntry
    }

    /// Services on HTTP ports (RDS `PORT`), and sniffed ones (RDS `HOST:PORT`), in the order made.
    var http: [Service] = []
    var sniffed: [Service] = []
    /// The sidecars' view of the mesh.
    var config: MeshConfig

    /// Whether some mesh-bound http route matches by caller.
    var dependOnSource: Bool {
        config.virtualServices.contains { $0.http.contains { $0.matches.contains(where: \.namesSource) } }
    }

    /// The route configurations for `workload`'s sidecar (every sidecar's when routes do not depend on the caller).
    func resources(for workload: ProxyWorkload) throws -> [MeshResources.Resource] {
        let config = dependOnSource ? config.seen(by: workload) : config
        var routes: [MeshResources.Resource] = []
        for service in sniffed {
            routes.append(("\(service.host):\(service.port)", try .packed(HTTPRouteGenerator.sniffedRouteConfiguration(
                host: service.host, port: service.port, entry: service.entry, config: config), as: .route)))
        }
        for port in Set(http.map(\.port)).sorted() {
            let services = http.filter { $0.port == port }.map { (host: $0.host, entry: $0.entry) }
            routes.append((String(port), try .packed(HTTPRouteGenerator.routeConfiguration(port: port, services: services, config: config),
                                                     as: .route)))
        }
        return routes
    }
}

extension MeshConfig {
    /// The VirtualServices' http routes as `workload`'s sidecar takes them: matches for other callers
    /// left out, and a route whose every match is, with them (istiod's `sourceMatchHTTP`).
    func seen(by workload: ProxyWorkload) -> MeshConfig {
        var view = self
        for service in view.virtualServices.indices {
            view.virtualServices[service].http = view.virtualServices[service].http.compactMap { route in
                guard !route.matches.isEmpty else { return route }
                var route = route
                route.matches = route.matches.filter { $0.applies(to: workload) }
                return route.matches.isEmpty ? nil : route
            }
        }
        return view
    }
}
