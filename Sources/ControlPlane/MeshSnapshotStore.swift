import Synchronization
import XDS

/// The control plane's current xDS resources and their versions, as the ADS server asks for them per
/// proxy. A type's version changes only when its content does, so an edit to one service does not
/// resend listeners that stayed the same.
final class MeshSnapshotStore: ADSSnapshotSource {
    private struct Generation {
        var number = 0
        var resources: MeshResources?
        var versions: [XDSResourceType: String] = [:]
        /// Inbound listeners made for proxies so far, by IP, namespace and interception, for this generation.
        var inbound: [String: MeshResources.Resource] = [:]
        /// Gateway proxies' resources made so far, by the Gateways that select them, for this generation.
        var routers: [[String]: RouterSnapshot] = [:]
        /// EDS resources made for proxies' localities so far (by locality and labels), for this generation.
        var localEndpoints: [String: [MeshResources.Resource]] = [:]
        /// Sidecars' routes made so far, by workload, when routes depend on the caller.
        var sidecarRoutes: [ProxyWorkload: [MeshResources.Resource]] = [:]
        /// The outbound listeners of proxies asking for DNS auto-allocation, once made for this generation.
        var autoAllocatedListeners: [MeshResources.Resource]?
    }

    private let generation = Mutex(Generation())

    /// What a gateway proxy gets besides the shared clusters and endpoints.
    private struct RouterSnapshot {
        var listeners: [MeshResources.Resource]
        var routes: [MeshResources.Resource]
        var secrets: [MeshResources.Resource]
    }

    /// The types the control plane serves; sidecars' secrets come from the agent, gateways' from here.
    static let servedTypes: [XDSResourceType] = [.cluster, .endpoint, .listener, .route, .secret, .nameTable]

    /// Puts new resources in force; returns the types whose content changed (all, the first time).
    @discardableResult
    func update(_ resources: MeshResources) -> [XDSResourceType] {
        generation.withLock { generation in
            generation.number += 1
            var changed = Self.servedTypes.filter { type in
                // The first time, secrets count only when some Gateway has a credential.
                generation.resources.map { resources.differs(from: $0, in: type) } ?? (type != .secret || !resources.gatewaySecrets.credentials.isEmpty)
            }
            // Proxies asking for DNS auto-allocation have listeners of their own: when some did, theirs
            // are made now and compared, so that their listeners' version follows their content too.
            if let served = generation.autoAllocatedListeners {
                let made = resources.autoAllocation.flatMap { try? $0.outboundListeners() } ?? resources.outboundListeners
                generation.autoAllocatedListeners = made
                if !changed.contains(.listener), !MeshResources.same(made, served) { changed.append(.listener) }
            }
            for type in changed { generation.versions[type] = String(generation.number) }
            generation.resources = resources
            if changed.contains(.listener) { generation.inbound = [:] }
            if !changed.isEmpty { generation.routers = [:] }
            if changed.contains(.endpoint) { generation.localEndpoints = [:] }
            if changed.contains(.route) { generation.sidecarRoutes = [:] }
            return changed
        }
    }

    var version: Int { generation.withLock { $0.number } }

    func snapshot(for node: Envoy_Config_Core_V3_Node) -> XDSSnapshot {
        let id = ProxyNodeID(node.id)
        let ip = id?.ipAddresses.first ?? ""
        let namespace = id?.namespace ?? ""
        let transparent = node.metadata.fields["INTERCEPTION_MODE"]?.stringValue == "TPROXY"
        let autoAllocate = node.metadata.fields["DNS_AUTO_ALLOCATE"]?.stringValue.lowercased() == "true"
        return generation.withLock { generation in
            guard let resources = generation.resources else { return XDSSnapshot(types: [:]) }
            if id?.type == "router" { return Self.routerSnapshot(node: node, ip: ip, resources: resources, generation: &generation) }
            let key = "\(ip)|\(namespace)|\(transparent)"
            let inbound: MeshResources.Resource
            if let made = generation.inbound[key] {
                inbound = made
            } else {
                // Packing cannot fail for a listener built here; an empty one would be refused by the proxy.
                inbound = (try? ProxyConfigGenerator.inboundListener(resources.inbound(ip: ip, namespace: namespace), transparent: transparent,
                                                                     accessLog: resources.accessLog))
                    ?? (ProxyConfigGenerator.inboundListenerName, .init())
                generation.inbound[key] = inbound
            }
            var outbound = resources.outboundListeners
            if autoAllocate, let allocation = resources.autoAllocation {
                if let made = generation.autoAllocatedListeners {
                    outbound = made
                } else {
                    // Building them cannot fail where the shared ones did not; those stand in if it did.
                    outbound = (try? allocation.outboundListeners()) ?? resources.outboundListeners
                    generation.autoAllocatedListeners = outbound
                }
            }
            var endpoints = resources.endpoints
            if !resources.localityAware.isEmpty {
                var (locality, labels) = Self.locality(of: node)
                // Labels matter only to failoverPriority: without one, proxies of a locality share their EDS.
                if !resources.localityAware.values.contains(where: { !$0.setting.failoverPriority.isEmpty }) { labels = [:] }
                let key = locality + "|" + labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
                if let made = generation.localEndpoints[key] {
                    endpoints = made
                } else {
                    endpoints = resources.endpoints(locality: locality, labels: labels)
                    generation.localEndpoints[key] = endpoints
                }
            }
            var routes = resources.routes
            if let sidecarRoutes = resources.sidecarRoutes {
                // Routes that depend on the caller: this workload's, made once per workload and generation.
                let workload = ProxyWorkload(labels: Self.labels(of: node, ip: ip, in: sidecarRoutes.config), namespace: namespace)
                if let made = generation.sidecarRoutes[workload] {
                    routes = made
                } else {
                    // Packing cannot fail for routes built here; the caller-less routes stand in if it did.
                    routes = (try? sidecarRoutes.resources(for: workload)) ?? resources.routes
                    generation.sidecarRoutes[workload] = routes
                }
            }
            return XDSSnapshot(types: [
                .cluster: VersionedResources(version: generation.versions[.cluster] ?? "", resources: resources.clusters),
                .endpoint: VersionedResources(version: generation.versions[.endpoint] ?? "", resources: endpoints),
                .listener: VersionedResources(version: generation.versions[.listener] ?? "",
                                              resources: outbound + [inbound]),
                .route: VersionedResources(version: generation.versions[.route] ?? "", resources: routes),
                // Packing a name table cannot fail; an empty table stands in if it did.
                .nameTable: VersionedResources(version: generation.versions[.nameTable] ?? "", resources: [
                    ("", (try? resources.nameTables.packed(autoAllocate: autoAllocate)) ?? .init()),
                ]),
            ])
        }
    }

    /// The proxy's locality, `region/zone/subzone`, as istiod takes it: the node's `locality`, else its
    /// `topology.istio.io/locality` or `istio-locality` label (`region.zone.subzone`), else its labels'
    /// `topology.kubernetes.io/region` and `zone` and `topology.istio.io/subzone`; and its labels (node
    /// metadata `LABELS`).
    static func locality(of node: Envoy_Config_Core_V3_Node) -> (String, [String: String]) {
        var labels: [String: String] = [:]
        if let given = node.metadata.fields["LABELS"], case .structValue(let fields)? = given.kind {
            for (key, value) in fields.fields { if case .stringValue(let text)? = value.kind { labels[key] = text } }
        }
        var parts = [node.locality.region, node.locality.zone, node.locality.subZone]
        if parts[0].isEmpty, let label = labels["topology.istio.io/locality"] ?? labels["istio-locality"] {
            let separator: Character = label.contains("/") ? "/" : "."
            parts = (label.split(separator: separator, omittingEmptySubsequences: false).map(String.init) + ["", "", ""]).prefix(3).map { $0 }
        }
        if parts[0].isEmpty {
            parts = [labels["topology.kubernetes.io/region"] ?? "", labels["topology.kubernetes.io/zone"] ?? "",
                     labels["topology.istio.io/subzone"] ?? ""]
        }
        guard !parts[0].isEmpty else { return ("", labels) }
        return (parts.joined(separator: "/"), labels)
    }

    /// A gateway proxy's resources: the shared clusters and endpoints, and the listeners, routes and
    /// credentials of the Gateways whose selectors match its labels (node metadata `LABELS`, else those
    /// of the WorkloadEntry at its IP). No sidecar listeners, and no secrets of other Gateways.
    private static func routerSnapshot(node: Envoy_Config_Core_V3_Node, ip: String, resources: MeshResources,
                                       generation: inout Generation) -> XDSSnapshot {
        let config = resources.gateways.config
        let labels = Self.labels(of: node, ip: ip, in: config)
        let gateways = GatewayGenerator.gateways(in: config, selecting: labels)
        let key = gateways.map(\.reference)
        let router: RouterSnapshot
        if let made = generation.routers[key] {
            router = made
        } else {
            // Packing cannot fail for resources built here; nothing served beats a half-built listener.
            let made = (try? GatewayGenerator.resources(for: gateways, config: config)) ?? .init()
            router = RouterSnapshot(listeners: made.listeners, routes: made.routes,
                                    secrets: (try? resources.gatewaySecrets.resources(made.credentials)) ?? [])
            generation.routers[key] = router
        }
        return XDSSnapshot(types: [
            .cluster: VersionedResources(version: generation.versions[.cluster] ?? "", resources: resources.clusters),
            .endpoint: VersionedResources(version: generation.versions[.endpoint] ?? "", resources: resources.endpoints),
            .listener: VersionedResources(version: generation.versions[.listener] ?? "", resources: router.listeners),
            .route: VersionedResources(version: generation.versions[.route] ?? "", resources: resources.routes + router.routes),
            .secret: VersionedResources(version: generation.versions[.secret] ?? "", resources: router.secrets),
        ])
    }

    /// A proxy's workload labels: its node metadata's `LABELS` (as pilot-agent sends them), else those of
    /// the WorkloadEntry at its IP.
    private static func labels(of node: Envoy_Config_Core_V3_Node, ip: String, in config: MeshConfig) -> [String: String] {
        var labels: [String: String] = [:]
        if let given = node.metadata.fields["LABELS"], case .structValue(let fields)? = given.kind {
            for (key, value) in fields.fields { if case .stringValue(let text)? = value.kind { labels[key] = text } }
        } else if let workload = config.workloadEntries.first(where: { $0.endpoint.address == ip }) {
            labels = workload.endpoint.labels
        }
        return labels
    }
}
