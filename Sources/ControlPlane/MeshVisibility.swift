/// What the sidecars of one namespace see of the mesh, as istiod's push context indexes it
/// (`serviceIndex`, `virtualServiceIndex`, `destinationRuleIndex`): each ServiceEntry, VirtualService
/// and DestinationRule by its `exportTo`, or by the mesh config's default for its kind when it gives none.
///
/// - A service or VirtualService is seen where its `exportTo` includes the proxy's namespace
///   (``ExportTo/includes(_:owner:)``: `*`, else `~` nowhere, else `.` for its own namespace, and names).
/// - A DestinationRule is looked up for a host in istiod's order: the proxy's own namespace (a rule there
///   whose `exportTo` is empty, `*`, `.` or names that namespace; for a proxy in the root namespace, only
///   its rules exported to `.` alone), then the service's namespace, then the root namespace (each a rule
///   there not kept to its own namespace, whose `exportTo` is empty, `*` or names the proxy's namespace).
///   Of `defaultDestinationRuleExportTo` istiod honours `.` only: a rule without `exportTo` is then kept
///   to its namespace, else it is exported everywhere.
struct MeshVisibility: Sendable {
    var services: ExportTo
    var virtualServices: ExportTo
    var destinationRules: ExportTo

    init(_ mesh: MeshSettings) {
        services = mesh.defaultServiceExportTo
        virtualServices = mesh.defaultVirtualServiceExportTo
        destinationRules = mesh.defaultDestinationRuleExportTo
    }

    func exportTo(_ entry: ServiceEntry) -> ExportTo { entry.exportTo.isEmpty ? services : entry.exportTo }
    func exportTo(_ service: VirtualService) -> ExportTo { service.exportTo.isEmpty ? virtualServices : service.exportTo }

    func exports(_ entry: ServiceEntry, to namespace: String) -> Bool {
        exportTo(entry).includes(namespace, owner: entry.namespace)
    }

    func exports(_ service: VirtualService, to namespace: String) -> Bool {
        exportTo(service).includes(namespace, owner: service.namespace)
    }

    /// The rule for `host` (whose service is in `serviceNamespace`; nil: none seen) that proxies in
    /// `namespace` take, from `rules` (those for `host`), in istiod's order.
    func destinationRule(among rules: [DestinationRule], serviceNamespace: String?, proxyNamespace namespace: String) -> DestinationRule? {
        let root = MeshConfig.rootNamespace
        let own = namespace == root ? rules.first { $0.namespace == root && keptHome($0) }
                                    : rules.first { $0.namespace == namespace && seenAtHome($0) }
        if let own { return own }
        for owner in [serviceNamespace, root].compactMap({ $0 }) {
            if let rule = rules.first(where: { $0.namespace == owner && !keptHome($0) && exported($0, to: namespace) }) { return rule }
        }
        return nil
    }

    /// Whether proxies in the rule's own namespace take it: `exportTo` empty, `*`, `.` or that namespace.
    private func seenAtHome(_ rule: DestinationRule) -> Bool {
        let targets = rule.exportTo.targets
        return targets.isEmpty || targets.contains("*") || targets.contains(".") || targets.contains(rule.namespace)
    }

    /// Whether the rule is kept to its own namespace: `exportTo` `.` (or that namespace) alone, or none
    /// given with a default that has `.`.
    private func keptHome(_ rule: DestinationRule) -> Bool {
        let targets = rule.exportTo.targets
        if targets.isEmpty { return destinationRules.targets.contains(".") }
        return targets.count == 1 && (targets[0] == "." || targets[0] == rule.namespace)
    }

    /// Whether a rule not kept home is exported to `namespace`: `exportTo` empty, `*`, or naming it.
    private func exported(_ rule: DestinationRule, to namespace: String) -> Bool {
        let targets = rule.exportTo.targets
        return targets.isEmpty || targets.contains("*") || targets.contains(namespace)
    }

    /// Whether every namespace takes `rule` wherever it takes one for its host: exported everywhere.
    func isPublic(_ rule: DestinationRule) -> Bool {
        rule.exportTo.isEmpty ? !destinationRules.targets.contains(".") : rule.exportTo.isPublic
    }
}

extension MeshConfig {
    /// Whether sidecars in some namespaces see the mesh differently from those in others: some service or
    /// mesh-bound VirtualService is not exported everywhere, or some service's DestinationRule could be
    /// chosen differently per namespace (two rules for its host, one not exported everywhere, or one
    /// outside the root namespace and the namespace of the services with its host). When not, every
    /// sidecar shares one set of resources, made once.
    var dependsOnNamespace: Bool {
        let visibility = MeshVisibility(mesh)
        if serviceEntries.contains(where: { !visibility.exportTo($0).isPublic }) { return true }
        if virtualServices.contains(where: { $0.gateways.contains(VirtualService.meshGateway) && !visibility.exportTo($0).isPublic }) {
            return true
        }
        var owners: [String: Set<String>] = [:]
        for entry in serviceEntries {
            for host in entry.hosts { owners[host, default: []].insert(entry.namespace) }
        }
        var ruled: Set<String> = []
        for rule in destinationRules {
            // A rule for a host no service has configures nothing.
            guard let namespaces = owners[rule.host] else { continue }
            if !ruled.insert(rule.host).inserted || !visibility.isPublic(rule) { return true }
            if rule.namespace != MeshConfig.rootNamespace && namespaces != [rule.namespace] { return true }
        }
        return false
    }

    /// What the sidecars in `namespace` are configured from: the ServiceEntries and VirtualServices
    /// exported to it, and for each host the DestinationRule they take (``MeshVisibility``). The rest
    /// (workloads, policies, gateways) is kept whole.
    func exported(to namespace: String) -> MeshConfig {
        let visibility = MeshVisibility(mesh)
        var view = self
        view.serviceEntries = serviceEntries.filter { visibility.exports($0, to: namespace) }
        view.virtualServices = virtualServices.filter { visibility.exports($0, to: namespace) }
        var serviceNamespace: [String: String] = [:]
        for entry in view.serviceEntries {
            for host in entry.hosts where serviceNamespace[host] == nil { serviceNamespace[host] = entry.namespace }
        }
        var rulesByHost: [String: [DestinationRule]] = [:]
        var hosts: [String] = []
        for rule in destinationRules {
            if rulesByHost[rule.host] == nil { hosts.append(rule.host) }
            rulesByHost[rule.host, default: []].append(rule)
        }
        view.destinationRules = hosts.compactMap { host in
            visibility.destinationRule(among: rulesByHost[host] ?? [], serviceNamespace: serviceNamespace[host], proxyNamespace: namespace)
        }
        return view
    }
}
