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
    }

    private let generation = Mutex(Generation())

    /// The types the control plane serves; secrets come from the agent.
    static let servedTypes: [XDSResourceType] = [.cluster, .endpoint, .listener, .route, .nameTable]

    /// Puts new resources in force; returns the types whose content changed (all, the first time).
    @discardableResult
    func update(_ resources: MeshResources) -> [XDSResourceType] {
        generation.withLock { generation in
            generation.number += 1
            let changed = Self.servedTypes.filter { type in
                generation.resources.map { resources.differs(from: $0, in: type) } ?? true
            }
            for type in changed { generation.versions[type] = String(generation.number) }
            generation.resources = resources
            if changed.contains(.listener) { generation.inbound = [:] }
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
            let key = "\(ip)|\(namespace)|\(transparent)"
            let inbound: MeshResources.Resource
            if let made = generation.inbound[key] {
                inbound = made
            } else {
                // Packing cannot fail for a listener built here; an empty one would be refused by the proxy.
                inbound = (try? ProxyConfigGenerator.inboundListener(resources.inbound(ip: ip, namespace: namespace), transparent: transparent))
                    ?? (ProxyConfigGenerator.inboundListenerName, .init())
                generation.inbound[key] = inbound
            }
            return XDSSnapshot(types: [
                .cluster: VersionedResources(version: generation.versions[.cluster] ?? "", resources: resources.clusters),
                .endpoint: VersionedResources(version: generation.versions[.endpoint] ?? "", resources: resources.endpoints),
                .listener: VersionedResources(version: generation.versions[.listener] ?? "",
                                              resources: resources.outboundListeners + [inbound]),
                .route: VersionedResources(version: generation.versions[.route] ?? "", resources: resources.routes),
                // Packing a name table cannot fail; an empty table stands in if it did.
                .nameTable: VersionedResources(version: generation.versions[.nameTable] ?? "", resources: [
                    ("", (try? resources.nameTables.packed(autoAllocate: autoAllocate)) ?? .init()),
                ]),
            ])
        }
    }
}
