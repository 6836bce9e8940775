/// Istio's DNS auto-allocation (`ISTIO_META_DNS_AUTO_ALLOCATE`) on the listener side: the agent answers
/// hosts of ServiceEntries without addresses with VIPs from 240.240.0.0/16 (``NameTableGenerator``), and
/// a proxy that asked for them gets outbound listeners in which those entries have their VIPs as
/// addresses, so a TCP connection to a VIP reaches the service, as istiod gives such proxies the
/// allocated addresses. Made when the first such proxy asks, then again at each configuration update
/// while such proxies are served (``MeshSnapshotStore``), so their listener version follows their content.
struct AutoAllocatedAddresses: Sendable {
    /// The whole mesh, as read.
    var config: MeshConfig
    /// The VIP of each host auto-allocation covers.
    var allocations: [String: String]
    var generator: ProxyConfigGenerator
    /// The namespace whose sidecars' listeners these are (nil: every service seen).
    var namespace: String?

    /// nil when no ServiceEntry gets a VIP.
    init?(config: MeshConfig, generator: ProxyConfigGenerator, namespace: String? = nil) {
        allocations = NameTableGenerator.allocations(for: config.serviceEntries)
        guard !allocations.isEmpty else { return nil }
        self.config = config
        self.generator = generator
        self.namespace = namespace
    }

    /// The mesh with each covered entry's VIPs as its addresses.
    var allocatedConfig: MeshConfig {
        var allocated = config
        for index in allocated.serviceEntries.indices where allocated.serviceEntries[index].addresses.isEmpty {
            allocated.serviceEntries[index].addresses = allocated.serviceEntries[index].hosts.compactMap { allocations[$0] }
        }
        return allocated
    }

    /// The outbound listeners of a proxy that asked for auto-allocation.
    func outboundListeners() throws -> [MeshResources.Resource] {
        try generator.resources(for: allocatedConfig, namespace: namespace).outboundListeners
    }
}
