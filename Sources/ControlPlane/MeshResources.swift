import SwiftProtobuf
import XDS

/// The xDS resources for a mesh, built once per configuration change: what every sidecar shares
/// (clusters, endpoints, the outbound listener), and what each workload's inbound listener is made of.
struct MeshResources: Sendable {
    typealias Resource = (name: String, resource: Google_Protobuf_Any)

    /// What one workload's `virtualInbound` is made of: its ports (Istio's `inbound|PORT||` clusters),
    /// the mutual TLS its PeerAuthentications require and the RBAC rules of the AuthorizationPolicies
    /// that apply to it. Two are equal exactly when the listeners made from them are (for the same
    /// interception).
    struct InboundWorkload: Sendable, Equatable {
        /// Sorted, once each.
        let ports: [Int]
        let tls: MutualTLSPolicy.Inbound
        /// Those of `ports` that serve HTTP: their chains end in a connection manager.
        let httpPorts: [Int]
        /// Those of `ports` with no protocol: HTTP chains (by ALPN or `http_inspector`) before the TCP ones.
        let sniffedPorts: [Int]
        /// The RBAC filters of every inbound chain, from the AuthorizationPolicies that apply.
        let authorization: RBACGenerator.WorkloadRules
        /// The `jwt_authn` filter of every inbound HTTP chain, from the RequestAuthentications that apply; nil: none.
        let authentication: JWTAuthnGenerator.Config?

        init(ports: [Int], tls: MutualTLSPolicy.Inbound, httpPorts: [Int] = [], sniffedPorts: [Int] = [],
             authorization: RBACGenerator.WorkloadRules = .none, authentication: JWTAuthnGenerator.Config? = nil) {
            self.ports = ports
            self.authorization = authorization
            self.authentication = authentication
            self.httpPorts = httpPorts
            self.sniffedPorts = sniffedPorts
            // A port-level mode repeating the workload's, on one of its ports, changes no chain: left
            // out, so that it does not make equal listeners compare unequal.
            var tls = tls
            tls.portModes = tls.portModes.filter { port, mode in !(mode == tls.mode && ports.contains(port)) }
            self.tls = tls
        }
    }

    var clusters: [Resource]
    var endpoints: [Resource]
    /// `virtualOutbound` first, then a `0.0.0.0_PORT` per HTTP port.
    var outboundListeners: [Resource]
    /// RDS: a `PORT` route configuration per HTTP port (and `HOST:PORT` per sniffed service).
    var routes: [Resource]
    /// What each sidecar's routes are made of, when they depend on the caller (`sourceLabels`,
    /// `sourceNamespace`); nil: every sidecar gets `routes`.
    var sidecarRoutes: SidecarRoutes?
    /// The outbound listeners of proxies that ask for DNS auto-allocation are made from this; nil: no
    /// ServiceEntry gets a VIP, and they share `outboundListeners`.
    var autoAllocation: AutoAllocatedAddresses?
    var outboundListener: Resource { outboundListeners[0] }
    /// The workloads the configuration describes (WorkloadEntries and inline endpoints), by IP.
    var inboundWorkloads: [String: InboundWorkload]
    /// The PeerAuthentications in force, for proxies at IPs no workload has.
    var mutualTLS: MutualTLSPolicy
    /// The AuthorizationPolicies, for proxies at IPs no workload has.
    var authorization = AuthorizationPolicyScope([])
    /// The RequestAuthentications, for proxies at IPs no workload has.
    var authentication = RequestAuthenticationScope([])
    /// NDS: the name tables for the agents' DNS proxies, with and without auto-allocated VIPs.
    var nameTables = NameTableGenerator.Tables()
    /// The access log of every HTTP connection manager (the mesh config's `accessLogFile`), for the
    /// inbound listeners made per proxy.
    var accessLog: [Envoy_Config_Accesslog_V3_AccessLog] = []
    /// What gateway proxies (`router~` nodes) are configured from, per proxy on request (``GatewayGenerator``).
    var gateways = GatewayInputs()
    /// The TLS secrets the Gateways name, served to the gateway proxies they select.
    var gatewaySecrets = GatewaySecrets()
    /// How each namespace's sidecar resources are made when namespaces see the mesh differently
    /// (``MeshConfig/dependsOnNamespace``: some `exportTo` restricts); nil: every sidecar shares these.
    var namespaceViews: NamespaceViews?
    /// AUTO_PASSTHROUGH gateways' SNI-DNAT clusters (`outbound_.PORT_.SUBSET_.HOST`) and their EDS
    /// assignments, made when some Gateway has such a server; served only to the gateway proxies it
    /// selects, as istiod does.
    var sniDnatClusters: [Resource] = []
    var sniDnatEndpoints: [Resource] = []
    /// The EDS assignments that depend on the proxy's locality (``LocalityLoadBalancing``), by name:
    /// each proxy gets them applied for its own locality (``endpoints(locality:labels:)``).
    var localityAware: [String: LocalityAwareAssignment] = [:]
    /// The EDS assignments with endpoints on a network (``NetworkEndpoints``), by name (sidecars' and
    /// SNI-DNAT ones): a proxy on a network gets them for its network (``endpoints(locality:labels:network:)``,
    /// ``sniDnatEndpoints(network:)``). `endpoints` and `sniDnatEndpoints` hold them as a proxy on no network
    /// gets them.
    var networkAware: [String: NetworkEndpoints] = [:]
    /// The mesh networks' gateways, for ``networkAware``.
    var networks = MeshNetworks()

    /// An assignment as made for every proxy, and what makes it a proxy's own.
    struct LocalityAwareAssignment: Sendable, Equatable {
        var assignment: Envoy_Config_Endpoint_V3_ClusterLoadAssignment
        var setting: LocalityLoadBalancing
        /// The cluster has outlier detection (failover needs it).
        var failoverAllowed: Bool
        /// Each locality group's endpoints' labels (for `failoverPriority`).
        var endpointLabels: [[[String: String]]]
    }

    /// The EDS resources for a proxy at `locality` (`region/zone/subzone`; empty: unknown, and then
    /// every proxy's alike, as istiod does for a proxy without one) with `labels`, on `network` (empty:
    /// none): split by network first (``NetworkEndpoints``), then by locality.
    func endpoints(locality: String, labels: [String: String], network: ProxyNetwork = .none) -> [Resource] {
        let byLocality = !locality.isEmpty && !localityAware.isEmpty
        let byNetwork = network != .none && !networkAware.isEmpty
        guard byLocality || byNetwork else { return endpoints }
        return endpoints.map { resource in
            var split: (assignment: Envoy_Config_Endpoint_V3_ClusterLoadAssignment, labels: [[[String: String]]])?
            if byNetwork, let aware = networkAware[resource.name] {
                split = aware.applied(proxy: network, networks: networks)
            }
            var assignment = split?.assignment
            if byLocality, let aware = localityAware[resource.name] {
                assignment = aware.setting.applied(to: split?.assignment ?? aware.assignment, proxyLocality: locality, proxyLabels: labels,
                                                   endpointLabels: split?.labels ?? aware.endpointLabels, failoverAllowed: aware.failoverAllowed)
            }
            guard let assignment else { return resource }
            // Packing a message built here cannot fail; the shared one stands in if it did.
            return (resource.name, (try? Google_Protobuf_Any.packed(assignment, as: .endpoint)) ?? resource.resource)
        }
    }

    /// The SNI-DNAT assignments for a gateway proxy on `network`.
    func sniDnatEndpoints(network: ProxyNetwork) -> [Resource] {
        guard network != .none, !networkAware.isEmpty else { return sniDnatEndpoints }
        return sniDnatEndpoints.map { resource in
            guard let aware = networkAware[resource.name] else { return resource }
            let assignment = aware.applied(proxy: network, networks: networks).assignment
            // Packing a message built here cannot fail; the shared one stands in if it did.
            return (resource.name, (try? Google_Protobuf_Any.packed(assignment, as: .endpoint)) ?? resource.resource)
        }
    }

    /// The whole configuration, from which a namespace's sidecar resources are made on request
    /// (``ProxyConfigGenerator/resources(for:namespace:)``), once per configuration and namespace.
    struct NamespaceViews: Sendable, Equatable {
        var config: MeshConfig
        var generator: ProxyConfigGenerator

        func resources(for namespace: String) throws -> MeshResources {
            try generator.resources(for: config, namespace: namespace)
        }
    }

    /// The parts of the configuration a gateway proxy's listeners and routes are made of. Equal when
    /// there are no Gateways, so that edits elsewhere do not resend sidecars their listeners.
    struct GatewayInputs: Sendable, Equatable {
        var config = MeshConfig()

        init() {}

        init(_ config: MeshConfig) {
            guard !config.gateways.isEmpty else { return }
            self.config.gateways = config.gateways
            self.config.virtualServices = config.virtualServices.filter { $0.gateways != [VirtualService.meshGateway] }
            self.config.serviceEntries = config.serviceEntries
            self.config.destinationRules = config.destinationRules
            self.config.workloadEntries = config.workloadEntries
            // The mesh config: its `accessLogFile` is the gateways' access log.
            self.config.mesh = config.mesh
        }
    }

    /// The inbound side of the proxy at `ip`, whose node id says it is in `namespace`: the workload's,
    /// or, for a proxy the configuration does not describe, no ports under its namespace's policy.
    func inbound(ip: String, namespace: String) -> InboundWorkload {
        inboundWorkloads[ip] ?? InboundWorkload(ports: [], tls: mutualTLS.inbound(namespace: namespace),
                                                authorization: RBACGenerator.WorkloadRules(authorization.applying(namespace: namespace)),
                                                authentication: JWTAuthnGenerator.config(for: authentication.applying(namespace: namespace)))
    }

    /// Whether the resources of `type` differ from those in `other`, compared as values: the packed
    /// resources by name and content, and for listeners what every proxy's inbound listener is made
    /// of (those are built per proxy, on request), so that a proxy is sent a type again exactly when
    /// something in it changed.
    func differs(from other: MeshResources, in type: XDSResourceType) -> Bool {
        // Each namespace's resources are made on request: a change to what they are made of may change any of them.
        if type != .secret, namespaceViews != other.namespaceViews { return true }
        return switch type {
        case .cluster: !Self.same(clusters, other.clusters) || !Self.same(sniDnatClusters, other.sniDnatClusters)
        case .endpoint:
            !Self.same(endpoints, other.endpoints) || localityAware != other.localityAware
                || networkAware != other.networkAware || networks != other.networks
                || !Self.same(sniDnatEndpoints, other.sniDnatEndpoints)
        case .listener:
            !Self.same(outboundListeners, other.outboundListeners) || inboundWorkloads != other.inboundWorkloads
                || mutualTLS.undescribedProxies != other.mutualTLS.undescribedProxies
                || authorization.undescribedProxies != other.authorization.undescribedProxies
                || authentication != other.authentication || gateways != other.gateways || accessLog != other.accessLog
        case .route: !Self.same(routes, other.routes) || gateways != other.gateways || sidecarRoutes != other.sidecarRoutes
        case .nameTable: nameTables != other.nameTables
        // Sidecars' secrets come from the agent over SDS; gateways' credentials from here.
        case .secret: gatewaySecrets != other.gatewaySecrets || gateways != other.gateways
        }
    }

    /// Whether two resource lists hold the same names and contents, in order.
    static func same(_ resources: [Resource], _ others: [Resource]) -> Bool {
        resources.count == others.count && zip(resources, others).allSatisfy { $0.name == $1.name && $0.resource == $1.resource }
    }
}
