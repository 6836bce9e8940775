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
        /// Lists shared by every proxy (clusters; endpoints and routes unless they depend on the proxy),
        /// encoded once they are first asked for, for this generation.
        var shared: [XDSResourceType: XDSResourceList] = [:]
        /// Listeners made for proxies so far (the outbound ones and the proxy's inbound one), by IP,
        /// namespace, interception and DNS auto-allocation, for this generation.
        var listeners: [String: XDSResourceList] = [:]
        /// Name tables made so far, with auto-allocated addresses or without (and by namespace, with
        /// namespace views), for this generation.
        var nameTables: [String: XDSResourceList] = [:]
        /// Gateway proxies' resources made so far, by the Gateways that select them, for this generation.
        var routers: [[String]: RouterSnapshot] = [:]
        /// EDS resources made for proxies' localities and networks so far (by network, locality and labels),
        /// for this generation.
        var localEndpoints: [String: XDSResourceList] = [:]
        /// Sidecars' routes made so far, by workload, when routes depend on the caller.
        var sidecarRoutes: [ProxyWorkload: XDSResourceList] = [:]
        /// The outbound listeners of proxies asking for DNS auto-allocation, made so far for this
        /// generation: by namespace with namespace views, else under "" (every namespace's).
        var autoAllocatedListeners: [String: [MeshResources.Resource]] = [:]
        /// Sidecars' resources by namespace, when namespaces see the mesh differently (`exportTo`), made
        /// so far for this generation, and the lists their sidecars share (by namespace and type).
        var namespaces: [String: MeshResources] = [:]
        var namespaceShared: [String: XDSResourceList] = [:]

        func versioned(_ type: XDSResourceType, _ list: XDSResourceList) -> VersionedResources {
            VersionedResources(version: versions[type] ?? "", list: list)
        }
    }

    private let generation = Mutex(Generation())

    /// What a gateway proxy gets besides the shared clusters and endpoints.
    private struct RouterSnapshot {
        var listeners: XDSResourceList
        /// The sidecars' routes and the gateway's.
        var routes: XDSResourceList
        var secrets: XDSResourceList
        /// With an AUTO_PASSTHROUGH server: the shared clusters and endpoints and the SNI-DNAT ones (the
        /// endpoints for the gateway's network); endpoints also for a gateway on a network; nil: the shared
        /// ones alone.
        var clusters: XDSResourceList?
        var endpoints: XDSResourceList?
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
            if let served = generation.autoAllocatedListeners[""] {
                let made = resources.autoAllocation.flatMap { try? $0.outboundListeners() } ?? resources.outboundListeners
                generation.autoAllocatedListeners = ["": made]
                if !changed.contains(.listener), !MeshResources.same(made, served) { changed.append(.listener) }
            }
            for type in changed { generation.versions[type] = String(generation.number) }
            generation.resources = resources
            for type in changed { generation.shared[type] = nil }
            if changed.contains(.listener) { generation.listeners = [:] }
            if changed.contains(.nameTable) { generation.nameTables = [:] }
            if !changed.isEmpty { generation.routers = [:] }
            if changed.contains(.endpoint) { generation.localEndpoints = [:] }
            if changed.contains(.route) { generation.sidecarRoutes = [:] }
            if !changed.isEmpty {
                generation.namespaces = [:]
                generation.namespaceShared = [:]
                // Namespaces' own are made again from their new resources (every namespace's were remade above).
                generation.autoAllocatedListeners = generation.autoAllocatedListeners.filter { $0.key.isEmpty }
            }
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
            guard let shared = generation.resources else { return XDSSnapshot(types: [:]) }
            if id?.type == "router" { return Self.routerSnapshot(node: node, ip: ip, namespace: namespace, resources: shared, generation: &generation) }
            let resources = Self.sidecarResources(shared, namespace: namespace, generation: &generation)
            // With namespace views, what sidecars would share is kept per namespace.
            let view = shared.namespaceViews == nil ? nil : namespace
            let listeners = generation.listeners["\(ip)|\(namespace)|\(transparent)|\(autoAllocate)"] ?? {
                // Packing cannot fail for a listener built here; an empty one would be refused by the proxy.
                let inbound = (try? ProxyConfigGenerator.inboundListener(resources.inbound(ip: ip, namespace: namespace), transparent: transparent,
                                                                         accessLog: resources.accessLog))
                    ?? (ProxyConfigGenerator.inboundListenerName, .init())
                var outbound = resources.outboundListeners
                if autoAllocate, let allocation = resources.autoAllocation {
                    if let made = generation.autoAllocatedListeners[view ?? ""] {
                        outbound = made
                    } else {
                        // Building them cannot fail where the shared ones did not; those stand in if it did.
                        outbound = (try? allocation.outboundListeners()) ?? resources.outboundListeners
                        generation.autoAllocatedListeners[view ?? ""] = outbound
                    }
                }
                let made = XDSResourceList(outbound + [inbound])
                generation.listeners["\(ip)|\(namespace)|\(transparent)|\(autoAllocate)"] = made
                return made
            }()
            var endpoints: XDSResourceList
            // The proxy's network matters only when some assignment has endpoints on a network (split horizon EDS).
            let network = resources.networkAware.isEmpty ? .none : ProxyNetwork(node)
            if !resources.localityAware.isEmpty || network != .none {
                var (locality, labels) = resources.localityAware.isEmpty ? ("", [:]) : Self.locality(of: node)
                // Labels matter only to failoverPriority: without one, proxies of a locality share their EDS.
                if !resources.localityAware.values.contains(where: { !$0.setting.failoverPriority.isEmpty }) { labels = [:] }
                let key = (view.map { $0 + "|" } ?? "") + network.key + "|" + locality + "|"
                    + labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
                if let made = generation.localEndpoints[key] {
                    endpoints = made
                } else {
                    endpoints = XDSResourceList(resources.endpoints(locality: locality, labels: labels, network: network))
                    generation.localEndpoints[key] = endpoints
                }
            } else {
                endpoints = Self.shared(.endpoint, resources, &generation, namespace: view)
            }
            var routes: XDSResourceList
            if let sidecarRoutes = resources.sidecarRoutes {
                // Routes that depend on the caller: this workload's, made once per workload and generation.
                let workload = ProxyWorkload(labels: Self.labels(of: node, ip: ip, in: sidecarRoutes.config), namespace: namespace)
                if let made = generation.sidecarRoutes[workload] {
                    routes = made
                } else {
                    // Packing cannot fail for routes built here; the caller-less routes stand in if it did.
                    routes = XDSResourceList((try? sidecarRoutes.resources(for: workload)) ?? resources.routes)
                    generation.sidecarRoutes[workload] = routes
                }
            } else {
                routes = Self.shared(.route, resources, &generation, namespace: view)
            }
            let namesKey = "\(view ?? "")|\(autoAllocate)"
            let names = generation.nameTables[namesKey] ?? {
                // Packing a name table cannot fail; an empty table stands in if it did.
                let made = XDSResourceList([("", (try? resources.nameTables.packed(autoAllocate: autoAllocate)) ?? .init())])
                generation.nameTables[namesKey] = made
                return made
            }()
            return XDSSnapshot(types: [
                .cluster: generation.versioned(.cluster, Self.shared(.cluster, resources, &generation, namespace: view)),
                .endpoint: generation.versioned(.endpoint, endpoints),
                .listener: generation.versioned(.listener, listeners),
                .route: generation.versioned(.route, routes),
                .nameTable: generation.versioned(.nameTable, names),
            ])
        }
    }

    /// The resources of sidecars in `namespace`: the shared ones, or, when namespaces see the mesh
    /// differently, the namespace's own, made on its first proxy's request for this generation.
    private static func sidecarResources(_ shared: MeshResources, namespace: String, generation: inout Generation) -> MeshResources {
        guard let views = shared.namespaceViews else { return shared }
        if let made = generation.namespaces[namespace] { return made }
        // Making them cannot fail where the shared ones did not; those stand in if it did.
        let made = (try? views.resources(for: namespace)) ?? shared
        generation.namespaces[namespace] = made
        return made
    }

    /// The list of `type` every proxy shares (clusters, and endpoints and routes when they do not depend
    /// on the proxy), encoded the first time it is asked for in a generation; with `namespace` (namespace
    /// views), every proxy of that namespace.
    private static func shared(_ type: XDSResourceType, _ resources: MeshResources, _ generation: inout Generation,
                               namespace: String? = nil) -> XDSResourceList {
        let key = namespace.map { "\($0)|\(type.service)" }
        if let key, let made = generation.namespaceShared[key] { return made }
        if key == nil, let made = generation.shared[type] { return made }
        let made: XDSResourceList
        switch type {
        case .cluster: made = XDSResourceList(resources.clusters)
        case .endpoint: made = XDSResourceList(resources.endpoints)
        case .route: made = XDSResourceList(resources.routes)
        case .listener, .nameTable, .secret: preconditionFailure("\(type.service) is not shared by every proxy")
        }
        if let key { generation.namespaceShared[key] = made } else { generation.shared[type] = made }
        return made
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

    /// A gateway proxy's resources: the shared clusters and endpoints (for its network, node metadata
    /// `NETWORK`, when some endpoint is on one), and the listeners, routes and
    /// credentials of the Gateways whose selectors match its labels (node metadata `LABELS`, else those
    /// of the WorkloadEntry at its IP), with the SNI-DNAT clusters when one has an AUTO_PASSTHROUGH
    /// server. No sidecar listeners, and no secrets of other Gateways.
    private static func routerSnapshot(node: Envoy_Config_Core_V3_Node, ip: String, namespace: String, resources: MeshResources,
                                       generation: inout Generation) -> XDSSnapshot {
        let config = resources.gateways.config
        let labels = Self.labels(of: node, ip: ip, in: config)
        let gateways = GatewayGenerator.gateways(in: config, selecting: labels)
        // Split horizon EDS: a gateway on a network gets its network's view, when some endpoint is on one.
        let network = resources.networkAware.isEmpty ? .none : ProxyNetwork(node)
        // What the gateway's namespace sees, as istiod's default sidecar scope for it: the VirtualServices
        // exported there and, with namespace views, the services and rules exported there.
        let viewKey = resources.namespaceViews == nil ? nil : namespace
        let view = Self.sidecarResources(resources, namespace: namespace, generation: &generation)
        let key = gateways.map(\.reference) + (network == .none ? [] : ["network=" + network.key]) + ["namespace=" + namespace]
        let router: RouterSnapshot
        if let made = generation.routers[key] {
            router = made
        } else {
            let visibility = MeshVisibility(config.mesh)
            var visible = config
            visible.virtualServices = config.virtualServices.filter { visibility.exports($0, to: namespace) }
            // Packing cannot fail for resources built here; nothing served beats a half-built listener.
            let made = (try? GatewayGenerator.resources(for: gateways, config: visible)) ?? .init()
            router = RouterSnapshot(listeners: XDSResourceList(made.listeners), routes: XDSResourceList(view.routes + made.routes),
                                    secrets: XDSResourceList((try? resources.gatewaySecrets.resources(made.credentials)) ?? []),
                                    clusters: made.autoPassthrough ? XDSResourceList(view.clusters + resources.sniDnatClusters) : nil,
                                    endpoints: made.autoPassthrough
                                        ? XDSResourceList(view.endpoints(locality: "", labels: [:], network: network) + resources.sniDnatEndpoints(network: network))
                                        : network == .none ? nil : XDSResourceList(view.endpoints(locality: "", labels: [:], network: network)))
            generation.routers[key] = router
        }
        return XDSSnapshot(types: [
            .cluster: generation.versioned(.cluster, router.clusters ?? shared(.cluster, view, &generation, namespace: viewKey)),
            .endpoint: generation.versioned(.endpoint, router.endpoints ?? shared(.endpoint, view, &generation, namespace: viewKey)),
            .listener: generation.versioned(.listener, router.listeners),
            .route: generation.versioned(.route, router.routes),
            .secret: generation.versioned(.secret, router.secrets),
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
