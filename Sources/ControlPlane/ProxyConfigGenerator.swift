import Identity
import SwiftProtobuf
import XDS

/// Turns a ``MeshConfig`` into Envoy resources named as Istio names them: clusters
/// `outbound|PORT|SUBSET|HOST` fed by EDS, `virtualOutbound` on 15001 with one filter chain per service
/// address and port plus a passthrough, `virtualInbound` on 15006 with chains per workload port.
///
/// Mutual TLS is Istio's, with certificates the agent serves over SDS (`default`: the workload's
/// certificate and key, `ROOTCA`: the mesh roots) through its `sds-grpc` cluster:
/// - Outbound, per cluster: a DestinationRule `tls.mode` (a subset's over the rule's) of `ISTIO_MUTUAL`
///   sends mutual TLS, `DISABLE` plaintext. Without one, Istio's auto mTLS decides: mutual TLS to
///   endpoints that run a sidecar (label `security.istio.io/tlsMode: istio`) unless their
///   PeerAuthentication DISABLEs it on the endpoint's port. Istio decides that per endpoint with
///   `transport_socket_matches`; Capstan's proto subset has one transport socket per cluster, so a
///   cluster gets mutual TLS only when every one of its endpoints qualifies (an endpoint without a
///   sidecar keeps the whole cluster plaintext, which PERMISSIVE, the default, accepts). The server
///   identities accepted are the endpoints' SPIFFE IDs, `spiffe://TRUST_DOMAIN/ns/NS/sa/ACCOUNT`
///   (account `default` when the WorkloadEntry names none); SNI is `outbound_.PORT_.SUBSET_.HOST`, or
///   the rule's `sni` with ISTIO_MUTUAL.
/// - Inbound, per workload port (its ``MutualTLSPolicy``): STRICT has one chain for
///   `transport_protocol: tls` that terminates mutual TLS, DISABLE one for `raw_buffer`, PERMISSIVE
///   both; `tls_inspector` tells them apart. Ports no service declares pass through under the
///   workload's mode, or a port-level mode of their own, in the same way.
struct ProxyConfigGenerator: Sendable, Equatable {
    static let outboundListenerName = "virtualOutbound"
    static let inboundListenerName = "virtualInbound"
    static let passthroughCluster = "PassthroughCluster"
    /// istiod's cluster with no endpoints: where REGISTRY_ONLY sends connections to hosts no service declares.
    static let blackHoleCluster = "BlackHoleCluster"
    static let inboundPassthroughCluster = "InboundPassthroughCluster"
    /// istiod's `upstream_bind_config` source on inbound clusters.
    static let inboundPassthroughSource = "127.0.0.6"
    static let inboundPassthroughChain = "InboundPassthroughFilterChain"
    static let defaultConnectTimeout = Duration.seconds(10)
    static let defaultTrustDomain = "cluster.local"
    /// Istio's names: the agent's SDS cluster in the bootstrap, and the two secrets it serves.
    static let sdsCluster = "sds-grpc"
    static let certificateSecret = "default"
    static let rootCASecret = "ROOTCA"
    static let tlsTransportSocket = "envoy.transport_sockets.tls"
    static let tlsInspectorFilter = "envoy.filters.listener.tls_inspector"
    /// What a sidecar offers a sidecar (TCP), and what one accepts, as Istio's do.
    static let upstreamALPN = ["istio-peer-exchange", "istio"]
    static let downstreamALPN = ["istio-peer-exchange", "h2", "http/1.1"]

    /// The trust domain of the SPIFFE IDs the outbound clusters expect of their endpoints.
    let trustDomain: String
    let outboundPort: Int

    /// Refuses a trust domain that could not stand in a SPIFFE ID, naming it.
    init(trustDomain: String = Self.defaultTrustDomain, outboundPort: Int = 15001) throws(WorkloadIdentityError) {
        // Checked (and lowercased) as the CA checks the identities it signs.
        self.trustDomain = try WorkloadIdentity.checkTrustDomain(trustDomain)
        self.outboundPort = outboundPort
    }

    /// The resources with the default trust domain, `cluster.local`.
    static func resources(for config: MeshConfig) throws -> MeshResources {
        try ProxyConfigGenerator().resources(for: config)
    }

    /// The resources for sidecars in `namespace` (nil: every resource seen, whatever its `exportTo`): their
    /// outbound side from what is exported to the namespace (``MeshConfig/exported(to:)``), their
    /// inbound side from every service. Without a namespace, when some namespace sees the mesh otherwise,
    /// ``MeshResources/namespaceViews`` says how to make each namespace's.
    func resources(for everything: MeshConfig, namespace: String? = nil) throws -> MeshResources {
        // Sidecars see the VirtualServices bound to `mesh`; gateways are made per proxy from `everything`.
        let all = everything.sidecarView
        // What this namespace's sidecars route by: the services, VirtualServices and DestinationRules exported to it.
        let config = namespace.map(all.exported(to:)) ?? all
        let visibility = MeshVisibility(all.mesh)
        let mutualTLS = MutualTLSPolicy(config.peerAuthentications)
        // Peer principals in the mesh's trust domain, its aliases or `cluster.local` stand for all of them, as in istiod.
        let trustDomains = TrustDomainBundle(trustDomain: trustDomain, aliases: config.mesh.trustDomainAliases)
        let authorization = AuthorizationPolicyScope(config.authorizationPolicies.map(trustDomains.applied))
        let authentication = RequestAuthenticationScope(config.requestAuthentications)
        var clusters: [MeshResources.Resource] = []
        var endpoints: [MeshResources.Resource] = []
        var localityAware: [String: MeshResources.LocalityAwareAssignment] = [:]
        // Split horizon EDS: with network gateways, each assignment as a proxy on no network gets it (weights
        // scaled), and those with endpoints on a network per proxy network.
        let networks = all.mesh.networks
        var networkAware: [String: NetworkEndpoints] = [:]
        for cluster in [Self.passthroughCluster, Self.inboundPassthroughCluster] {
            clusters.append((cluster, try .packed(Self.originalDestinationCluster(cluster, inbound: cluster == Self.inboundPassthroughCluster),
                                                  as: .cluster)))
        }
        clusters.append((Self.blackHoleCluster, try .packed(Self.blackHole(), as: .cluster)))
        let outboundPolicy = config.mesh.outboundTrafficPolicy
        // The mesh config's `accessLogFile`, on every HTTP connection manager.
        let accessLog = try HTTPRouteGenerator.accessLogs(config.mesh)
        // Each WorkloadEntry with its modes, resolved once however many services select it.
        let workloadEntries = config.workloadEntries.map { Member(endpoint: $0.endpoint, namespace: $0.namespace, policy: mutualTLS,
                                                                        authorization: authorization, authentication: authentication) }
        // The workload at each IP, for its PeerAuthentication: a WorkloadEntry's, else an inline endpoint's.
        var workloads: [String: Member] = [:]
        for workload in workloadEntries where workloads[workload.endpoint.address] == nil {
            workloads[workload.endpoint.address] = workload
        }
        var inboundPorts: [String: Set<Int>] = workloads.mapValues { _ in [] }
        var inboundHTTPPorts: [String: Set<Int>] = [:]
        var inboundSniffedPorts: [String: Set<Int>] = [:]
        var chains: [Envoy_Config_Listener_V3_FilterChain] = []
        // Istio's sniffing, per service address and port: `ADDRESS_PORT` listeners and RDS `HOST:PORT`.
        var sniffing: [MeshResources.Resource] = []
        var sidecarRoutes = SidecarRoutes(config: config)
        // The services on each HTTP port, for RDS `PORT` and the listener `0.0.0.0_PORT`.
        var httpServices: [Int: [(host: String, entry: ServiceEntry)]] = [:]
        // TLS services without addresses, by port: chains matching their hosts as server names.
        var sniChains: [Int: [Envoy_Config_Listener_V3_FilterChain]] = [:]
        // AUTO_PASSTHROUGH gateways' clusters, made only when a Gateway has such a server (as istiod makes them).
        let sniDnat = namespace == nil && everything.gateways.contains { $0.servers.contains(where: \.isAutoPassthrough) }
        var sniDnatClusters: [MeshResources.Resource] = []
        var sniDnatEndpoints: [MeshResources.Resource] = []
        for entry in all.serviceEntries {
            // Every service selecting a workload makes its inbound side; only those exported here make outbound ones.
            let exported = namespace.map { visibility.exports(entry, to: $0) } ?? true
            let members = Self.members(of: entry, workloadEntries: workloadEntries, policy: mutualTLS, authorization: authorization,
                                       authentication: authentication)
            // Endpoints of a DNS service are names outside the mesh: no inbound configuration is made for them.
            let workloadMembers = entry.resolution.resolvesNames ? [] : members
            for member in workloadMembers where workloads[member.endpoint.address] == nil { workloads[member.endpoint.address] = member }
            let rule = config.destinationRules.first { rule in entry.hosts.contains(rule.host) }
            for port in entry.ports {
                for member in workloadMembers {
                    let target = Self.targetPort(of: member.endpoint, port: port)
                    inboundPorts[member.endpoint.address, default: []].insert(target)
                    if port.protocol.isHTTP { inboundHTTPPorts[member.endpoint.address, default: []].insert(target) }
                    if port.protocol == .unknown { inboundSniffedPorts[member.endpoint.address, default: []].insert(target) }
                }
                guard exported else { continue }
                for host in entry.hosts {
                    // Each cluster's policy for this port, port-level settings included, as istiod merges them.
                    let rulePolicy = rule?.trafficPolicy ?? .init()
                    var subsets: [(name: String, labels: [String: String], policy: DestinationRule.TrafficPolicy)] =
                        [("", [:], rulePolicy.atPort(port.number).policy)]
                    for subset in rule?.subsets ?? [] {
                        subsets.append((subset.name, subset.labels,
                                        DestinationRule.TrafficPolicy.merged(rule: rulePolicy, subset: subset.trafficPolicy, port: port.number)))
                    }
                    for subset in subsets {
                        let name = Self.clusterName(port: port.number, subset: subset.name, host: host)
                        let selected = members.filter { member in subset.labels.allSatisfy { member.endpoint.labels[$0.key] == $0.value } }
                        var cluster = Self.edsCluster(name, policy: subset.policy)
                        cluster.typedExtensionProtocolOptions = try HTTPRouteGenerator.protocolOptions(port.protocol, policy: subset.policy, sniffed: true)
                        cluster.metadata = Self.serviceMetadata(host: host, namespace: entry.namespace)
                        if let mode = subset.policy.tlsMode, mode == .simple || mode == .mutual, let settings = subset.policy.originatedTLS {
                            cluster.transportSocket = try Self.originatedTLS(mode, settings, host: host,
                                                                             http2: port.protocol == .http2 || port.protocol == .grpc)
                        }
                        // (SIMPLE and MUTUAL are never Istio mTLS.)
                        let istioMutual = Self.usesMutualTLS(subset.policy.tlsMode, members: selected, port: port, external: entry.location == .meshExternal)
                        if istioMutual {
                            // ISTIO_MUTUAL's `sni`, if the rule gives one (an egress gateway chooses its server by it).
                            let sni = subset.policy.tlsMode == .istioMutual ? subset.policy.originatedTLS?.sni : nil
                            cluster.transportSocket = try upstreamTLS(to: selected, sni: sni ?? Self.sni(port: port.number, subset: subset.name, host: host))
                        }
                        let assigned = Self.assignedEndpoints(entry, host: host, port: port, selected: selected.map(\.endpoint))
                        if entry.resolution.resolvesNames {
                            Self.makeDNSCluster(&cluster, resolution: entry.resolution, endpoints: assigned,
                                                refreshRate: config.mesh.dnsRefreshRate)
                        } else {
                            var assignment = Self.loadAssignment(name, assigned)
                            // Grouped labels only where something reads them (a mesh without networks pays nothing here).
                            var endpointLabels: [[[String: String]]]?
                            if networks.isMultiNetwork {
                                let aware = NetworkEndpoints(assignment: assignment, endpointNetworks: Self.groupedNetworks(selected.map(\.endpoint), networks),
                                                             endpointLabels: Self.groupedLabels(selected.map(\.endpoint)), mutualTLS: istioMutual)
                                if aware.dependsOnNetwork { networkAware[name] = aware }
                                let applied = aware.applied(proxy: .none, networks: networks)
                                (assignment, endpointLabels) = (applied.assignment, applied.labels)
                            }
                            endpoints.append((name, try .packed(assignment, as: .endpoint)))
                            // The rule's setting, else the mesh's (istiod's default: failover by locality whenever
                            // the cluster has outlier detection).
                            let setting = subset.policy.localityLoadBalancing ?? config.mesh.localityLoadBalancing ?? LocalityLoadBalancing()
                            if setting.appliesTo(failoverAllowed: subset.policy.outlierDetection != nil) {
                                localityAware[name] = .init(assignment: assignment, setting: setting,
                                                            failoverAllowed: subset.policy.outlierDetection != nil,
                                                            endpointLabels: endpointLabels ?? Self.groupedLabels(selected.map(\.endpoint)))
                            }
                        }
                        clusters.append((name, try .packed(cluster, as: .cluster)))
                        if sniDnat, entry.location != .meshExternal {
                            let dnat = Self.sniDnatCluster(from: cluster, port: port, subset: subset.name, host: host, entry: entry,
                                                           selected: selected.map(\.endpoint), dnsRefreshRate: config.mesh.dnsRefreshRate)
                            sniDnatClusters.append((dnat.cluster.name, try .packed(dnat.cluster, as: .cluster)))
                            if var assignment = dnat.assignment {
                                if networks.isMultiNetwork {
                                    // The gateway's endpoints are split by its network too, as istiod does for every proxy.
                                    let mutual = selected.map(\.endpoint).filter { $0.labels[MeshConfig.tlsModeLabel] == "istio" }
                                    let aware = NetworkEndpoints(assignment: assignment, endpointNetworks: Self.groupedNetworks(mutual, networks),
                                                                 endpointLabels: Self.groupedLabels(mutual), mutualTLS: istioMutual)
                                    if aware.dependsOnNetwork { networkAware[assignment.clusterName] = aware }
                                    assignment = aware.applied(proxy: .none, networks: networks).assignment
                                }
                                sniDnatEndpoints.append((assignment.clusterName, try .packed(assignment, as: .endpoint)))
                            }
                        }
                    }
                    let networks = entry.addresses.compactMap(IPNetwork.init)
                    if port.protocol.isHTTP {
                        httpServices[port.number, default: []].append((host, entry))
                        sidecarRoutes.http.append(.init(host: host, port: port.number, entry: entry))
                    } else if port.protocol == .unknown, networks.contains(where: \.isSingleAddress) {
                        // Sniffed on each single address; CIDRs (no listener of their own) stay TCP below.
                        let route = Self.route(host: host, port: port.number, config: config)
                        var tcp = Self.tcpProxyChain(name: Self.clusterName(port: port.number, subset: "", host: host), route: route)
                        tcp.name = ""
                        for network in networks where network.isSingleAddress {
                            let name = "\(network.address)_\(port.number)"
                            guard !sniffing.contains(where: { $0.name == name }) else { continue }
                            sniffing.append((name, try .packed(HTTPRouteGenerator.sniffingListener(address: network.address, port: port.number,
                                                                                                   host: host, tcp: tcp, accessLog: accessLog),
                                                               as: .listener)))
                        }
                        sidecarRoutes.sniffed.append(.init(host: host, port: port.number, entry: entry))
                        let ranges = entry.addresses.filter { IPNetwork($0)?.isSingleAddress == false }
                        if !ranges.isEmpty {
                            chains.append(Self.outboundChain(host: host, port: port.number, addresses: ranges, route: route))
                        }
                    } else if !entry.addresses.isEmpty {
                        chains.append(Self.outboundChain(host: host, port: port.number, addresses: entry.addresses,
                                                         route: Self.route(host: host, port: port.number, config: config)))
                    } else if port.protocol == .https || port.protocol == .tls {
                        // No address to match: istiod tells TLS services apart by the SNI their clients send.
                        // A mesh-bound VirtualService's `tls` route for the name, if any (the egress gateway task's).
                        sniChains[port.number, default: []].append(try Self.serverNameChain(host: host, port: port.number,
                                                                                            route: Self.tlsRoute(host: host, port: port.number, config: config)))
                    }
                }
            }
        }
        var listener = Envoy_Config_Listener_V3_Listener()
        listener.name = Self.outboundListenerName
        listener.address = Self.socketAddress("0.0.0.0", port: outboundPort)
        listener.useOriginalDst = Google_Protobuf_BoolValue(true)
        listener.trafficDirection = .outbound
        listener.filterChains = chains
        listener.defaultFilterChain = Self.passthroughChain(outboundPolicy)
        var listeners: [MeshResources.Resource] = [(Self.outboundListenerName, try .packed(listener, as: .listener))]
        // Routes for a caller no VirtualService names; per caller too when some route depends on it.
        let routes = try sidecarRoutes.resources(for: .anonymous)
        listeners += sniffing
        for (port, services) in httpServices.sorted(by: { $0.key < $1.key }) {
            // TCP services on the same port: the hand-off brings their connections here too.
            let tcpChains = chains.filter { $0.filterChainMatch.destinationPort.value == UInt32(port) } + sniChains[port, default: []]
            listeners.append((HTTPRouteGenerator.outboundListenerName(port: port),
                              try .packed(HTTPRouteGenerator.outboundListener(port: port, tcpChains: tcpChains, policy: outboundPolicy,
                                                                              accessLog: accessLog), as: .listener)))
            // IPv6 clients are handed off by `::`: the same listener there when a service on the port has an IPv6 address.
            if services.contains(where: { $0.entry.addresses.contains { $0.contains(":") } }) {
                listeners.append((HTTPRouteGenerator.outboundListenerName(port: port, ipv6: true),
                                  try .packed(HTTPRouteGenerator.outboundListener(port: port, tcpChains: tcpChains, ipv6: true,
                                                                                  policy: outboundPolicy, accessLog: accessLog), as: .listener)))
            }
        }
        for (port, serverNameChains) in sniChains.sorted(by: { $0.key < $1.key }) where httpServices[port] == nil {
            let tcpChains = chains.filter { $0.filterChainMatch.destinationPort.value == UInt32(port) }
            listeners.append((HTTPRouteGenerator.outboundListenerName(port: port),
                              try .packed(Self.serverNameListener(port: port, chains: tcpChains + serverNameChains, policy: outboundPolicy),
                                          as: .listener)))
        }
        let inboundClusterPorts = Set(inboundPorts.values.flatMap { $0 }).sorted()
        for port in inboundClusterPorts {
            let name = "inbound|\(port)||"
            clusters.append((name, try .packed(Self.originalDestinationCluster(name, inbound: true), as: .cluster)))
        }
        var inboundWorkloads: [String: MeshResources.InboundWorkload] = [:]
        for (address, member) in workloads {
            inboundWorkloads[address] = .init(ports: inboundPorts[address, default: []].sorted(), tls: member.tls,
                                              httpPorts: inboundHTTPPorts[address, default: []].sorted(),
                                              sniffedPorts: inboundSniffedPorts[address, default: []].sorted(),
                                              authorization: member.authorization, authentication: member.authentication)
        }
        var resources = MeshResources(clusters: clusters, endpoints: endpoints, outboundListeners: listeners, routes: routes,
                                      inboundWorkloads: inboundWorkloads, mutualTLS: mutualTLS, authorization: authorization,
                                      authentication: authentication)
        if sidecarRoutes.dependOnSource { resources.sidecarRoutes = sidecarRoutes }
        resources.autoAllocation = AutoAllocatedAddresses(config: everything, generator: self, namespace: namespace)
        // VIPs are allocated over every service, so that a host has the same one in every namespace.
        resources.nameTables = NameTableGenerator.tables(for: config.serviceEntries, allocatingOver: everything.serviceEntries)
        if namespace == nil, everything.dependsOnNamespace { resources.namespaceViews = .init(config: everything, generator: self) }
        resources.accessLog = accessLog
        resources.localityAware = localityAware
        resources.networkAware = networkAware
        resources.networks = networks
        resources.gateways = .init(everything)
        resources.sniDnatClusters = sniDnatClusters
        resources.sniDnatEndpoints = sniDnatEndpoints
        return resources
    }

    /// istiod's SNI-DNAT cluster (`buildOutboundSniDnatClusters`) for an AUTO_PASSTHROUGH gateway: the
    /// sidecars' cluster `outbound|PORT|SUBSET|HOST` under its SNI's name, `outbound_.PORT_.SUBSET_.HOST`,
    /// with the same traffic policy but no TLS of its own (the client's passes through to the workload's
    /// sidecar), and only the endpoints that run a sidecar (label `security.istio.io/tlsMode: istio`), as
    /// istiod's EDS keeps for these names: a workload without one would take the bytes unauthenticated.
    /// The assignment is nil for a DNS service, whose endpoints are in the cluster.
    static func sniDnatCluster(from sidecarCluster: Envoy_Config_Cluster_V3_Cluster, port: ServiceEntry.Port, subset: String, host: String,
                               entry: ServiceEntry, selected: [WorkloadEndpoint],
                               dnsRefreshRate: Duration) -> (cluster: Envoy_Config_Cluster_V3_Cluster,
                                                             assignment: Envoy_Config_Endpoint_V3_ClusterLoadAssignment?) {
        var cluster = sidecarCluster
        cluster.name = sni(port: port.number, subset: subset, host: host)
        cluster.clearTransportSocket()
        let mutual = selected.filter { $0.labels[MeshConfig.tlsModeLabel] == "istio" }
        let assigned = assignedEndpoints(entry, host: host, port: port, selected: mutual)
        if entry.resolution.resolvesNames {
            makeDNSCluster(&cluster, resolution: entry.resolution, endpoints: assigned, refreshRate: dnsRefreshRate)
            return (cluster, nil)
        }
        cluster.edsClusterConfig.serviceName = cluster.name
        return (cluster, loadAssignment(cluster.name, assigned))
    }

    /// `virtualInbound` for one workload: `tls_inspector` first, then, for each of its ports, chains to
    /// `inbound|PORT||` as its mTLS mode allows (see the type's comment), and passthrough chains for
    /// the other ports. `transparent` for TPROXY interception.
    static func inboundListener(_ workload: MeshResources.InboundWorkload, transparent: Bool,
                                inboundPort: Int = 15006, accessLog: [Envoy_Config_Accesslog_V3_AccessLog] = []) throws -> MeshResources.Resource {
        var listener = Envoy_Config_Listener_V3_Listener()
        listener.name = inboundListenerName
        listener.address = socketAddress("0.0.0.0", port: inboundPort)
        listener.trafficDirection = .inbound
        if transparent { listener.transparent = Google_Protobuf_BoolValue(true) }
        var inspector = Envoy_Config_Listener_V3_ListenerFilter()
        inspector.name = tlsInspectorFilter
        inspector.typedConfig = try Google_Protobuf_Any(message: Envoy_Extensions_Filters_Listener_TlsInspector_V3_TlsInspector())
        listener.listenerFilters = [inspector]
        if !workload.sniffedPorts.isEmpty {
            var http = Envoy_Config_Listener_V3_ListenerFilter()
            http.name = HTTPRouteGenerator.httpInspectorFilter
            http.typedConfig = try Google_Protobuf_Any(message: Envoy_Extensions_Filters_Listener_HttpInspector_V3_HttpInspector())
            listener.listenerFilters.append(http)
        }
        // Packed once: every HTTP chain gets the same RBAC filters, every TCP chain the same network ones, as from istiod;
        // HTTP chains get the JWT filter before them (authentication before authorization), after CUSTOM's.
        let rbac = try RBACGenerator.filters(for: workload.authorization,
                                             authentication: JWTAuthnGenerator.httpFilters(workload.authentication))
        var chains: [Envoy_Config_Listener_V3_FilterChain] = []
        for port in workload.ports {
            let cluster = "inbound|\(port)||"
            if workload.sniffedPorts.contains(port) {
                // Istio's sniffing: HTTP first (by ALPN over mTLS, http_inspector in plaintext), else TCP.
                chains += try inboundChains(name: "\(cluster)-http", port: port, cluster: cluster, mode: workload.tls.mode(forPort: port),
                                            http: true, sniffed: true, rbac: rbac, accessLog: accessLog)
            }
            chains += try inboundChains(name: cluster, port: port, cluster: cluster, mode: workload.tls.mode(forPort: port),
                                        http: workload.httpPorts.contains(port), rbac: rbac, accessLog: accessLog)
        }
        // A port-level mode for a port no service declares: Istio gives it passthrough chains of its own.
        for (port, mode) in workload.tls.portModes.sorted(by: { $0.key < $1.key }) where !workload.ports.contains(port) {
            chains += try inboundChains(name: "\(inboundPassthroughChain)-\(port)", port: port, cluster: inboundPassthroughCluster, mode: mode, rbac: rbac)
        }
        chains += try inboundChains(name: inboundPassthroughChain, port: nil, cluster: inboundPassthroughCluster, mode: workload.tls.mode, rbac: rbac)
        listener.filterChains = chains
        return (inboundListenerName, try .packed(listener, as: .listener))
    }

    /// Istio's cluster name: `outbound|9000|v1|payments.shop.svc.cluster.local`.
    static func clusterName(port: Int, subset: String, host: String) -> String {
        "outbound|\(port)|\(subset)|\(host)"
    }

    /// Istio's SNI for mutual TLS to a cluster: `outbound_.9000_.v1_.payments.shop.svc.cluster.local`
    /// (`_` for no subset).
    static func sni(port: Int, subset: String, host: String) -> String {
        "outbound_.\(port)_.\(subset)_.\(host)"
    }

    // MARK: Mutual TLS

    /// An endpoint with the namespace it belongs to (its WorkloadEntry's, or its ServiceEntry's if
    /// inline), the modes its PeerAuthentications give its sidecar and the AuthorizationPolicies that
    /// apply to it, resolved when it is found.
    private struct Member {
        var endpoint: WorkloadEndpoint
        var namespace: String
        var tls: MutualTLSPolicy.Inbound
        var authorization: RBACGenerator.WorkloadRules
        var authentication: JWTAuthnGenerator.Config?

        init(endpoint: WorkloadEndpoint, namespace: String, policy: MutualTLSPolicy, authorization: AuthorizationPolicyScope,
             authentication: RequestAuthenticationScope) {
            self.endpoint = endpoint
            self.namespace = namespace
            tls = policy.inbound(namespace: namespace, labels: endpoint.labels)
            self.authorization = RBACGenerator.WorkloadRules(authorization.applying(namespace: namespace, labels: endpoint.labels))
            self.authentication = JWTAuthnGenerator.config(for: authentication.applying(namespace: namespace, labels: endpoint.labels))
        }
    }

    /// Whether a cluster of `members` on service port `port` speaks mutual TLS: the DestinationRule's
    /// mode if it has one, else auto mTLS (every endpoint has a sidecar that does not DISABLE mTLS there).
    /// `external` (MESH_EXTERNAL): istiod takes no hint from PeerAuthentication for a service outside the
    /// mesh, so only the endpoints' labels decide.
    private static func usesMutualTLS(_ mode: DestinationRule.TLSMode?, members: [Member], port: ServiceEntry.Port,
                                      external: Bool = false) -> Bool {
        switch mode {
        case .istioMutual: return true
        case .disable, .simple, .mutual: return false
        case nil:
            return !members.isEmpty && members.allSatisfy { member in
                member.endpoint.labels[MeshConfig.tlsModeLabel] == "istio"
                    && (external || member.tls.mode(forPort: targetPort(of: member.endpoint, port: port)) != .disable)
            }
        }
    }

    /// The `envoy.transport_sockets.tls` of a cluster: the workload certificate, the mesh roots, and
    /// the endpoints' SPIFFE IDs (sorted, once each) as the only server identities accepted.
    private func upstreamTLS(to members: [Member], sni: String) throws -> Envoy_Config_Core_V3_TransportSocket {
        var identities: Set<String> = []
        for member in members {
            identities.insert(try WorkloadIdentity(trustDomain: trustDomain, namespace: member.namespace,
                                                   serviceAccount: member.endpoint.serviceAccount ?? "default").spiffeID)
        }
        var validation = Envoy_Extensions_TransportSockets_Tls_V3_CertificateValidationContext()
        validation.matchTypedSubjectAltNames = identities.sorted().map { identity in
            var matcher = Envoy_Extensions_TransportSockets_Tls_V3_SubjectAltNameMatcher()
            matcher.sanType = .uri
            matcher.matcher.exact = identity
            return matcher
        }
        var context = Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext()
        context.commonTlsContext = Self.commonTLSContext(validation: validation, alpn: Self.upstreamALPN)
        context.sni = sni
        return try Self.transportSocket(context)
    }

    /// The `envoy.transport_sockets.tls` of every inbound `tls` chain, the same for all workloads and
    /// ports (certificates come over SDS): packed once, copied into each chain.
    private static let downstreamTransportSocket = Result(catching: downstreamTLS)

    /// The `envoy.transport_sockets.tls` of an inbound chain: the workload certificate, a client
    /// certificate required and checked against the mesh roots (which peer may call is authorization's
    /// business, not the handshake's).
    private static func downstreamTLS() throws -> Envoy_Config_Core_V3_TransportSocket {
        var context = Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext()
        context.commonTlsContext = commonTLSContext(validation: .init(), alpn: downstreamALPN)
        context.requireClientCertificate = Google_Protobuf_BoolValue(true)
        return try transportSocket(context)
    }

    static func commonTLSContext(validation: Envoy_Extensions_TransportSockets_Tls_V3_CertificateValidationContext,
                                 alpn: [String]) -> Envoy_Extensions_TransportSockets_Tls_V3_CommonTlsContext {
        var combined = Envoy_Extensions_TransportSockets_Tls_V3_CommonTlsContext.CombinedCertificateValidationContext()
        combined.defaultValidationContext = validation
        combined.validationContextSdsSecretConfig = sdsSecret(rootCASecret)
        var context = Envoy_Extensions_TransportSockets_Tls_V3_CommonTlsContext()
        context.tlsCertificateSdsSecretConfigs = [sdsSecret(certificateSecret)]
        context.combinedValidationContext = combined
        context.alpnProtocols = alpn
        return context
    }

    /// A secret the agent serves over SDS, as Istio's sidecars ask for it.
    private static func sdsSecret(_ name: String) -> Envoy_Extensions_TransportSockets_Tls_V3_SdsSecretConfig {
        var service = Envoy_Config_Core_V3_GrpcService()
        service.envoyGrpc.clusterName = sdsCluster
        var source = Envoy_Config_Core_V3_ApiConfigSource()
        source.apiType = .grpc
        source.grpcServices = [service]
        source.setNodeOnFirstMessageOnly = true
        source.transportApiVersion = .v3
        var secret = Envoy_Extensions_TransportSockets_Tls_V3_SdsSecretConfig()
        secret.name = name
        secret.sdsConfig.apiConfigSource = source
        secret.sdsConfig.resourceApiVersion = .v3
        return secret
    }

    private static func transportSocket(_ context: some SwiftProtobuf.Message) throws -> Envoy_Config_Core_V3_TransportSocket {
        var socket = Envoy_Config_Core_V3_TransportSocket()
        socket.name = tlsTransportSocket
        socket.typedConfig = try Google_Protobuf_Any(message: context)
        return socket
    }

    /// The chains of one inbound port (nil: any port) under `mode`: mutual TLS unless DISABLE,
    /// plaintext unless STRICT. Named after the port's cluster and the transport; stats keep `name`.
    /// `rbac`'s filters go first in an HTTP chain's connection manager, or before a TCP chain's `tcp_proxy`.
    private static func inboundChains(name: String, port: Int?, cluster: String, mode: PeerAuthentication.Mode,
                                      http: Bool = false, sniffed: Bool = false,
                                      rbac: RBACGenerator.Filters, accessLog: [Envoy_Config_Accesslog_V3_AccessLog] = []) throws -> [Envoy_Config_Listener_V3_FilterChain] {
        var chains: [Envoy_Config_Listener_V3_FilterChain] = []
        for transport in ["tls", "raw_buffer"] {
            if transport == "tls" && mode == .disable || transport == "raw_buffer" && mode == .strict { continue }
            var chain = tcpProxyChain(name: "\(name)-\(transport)", statPrefix: name, route: .cluster(cluster))
            if http, let port {
                chain.filters = [try HTTPRouteGenerator.inboundConnectionManager(port: port, authorization: rbac.http, accessLog: accessLog)]
            } else {
                chain.filters = rbac.network + chain.filters
            }
            if let port { chain.filterChainMatch.destinationPort = Google_Protobuf_UInt32Value(UInt32(port)) }
            chain.filterChainMatch.transportProtocol = transport
            if sniffed {
                chain.filterChainMatch.applicationProtocols = transport == "tls" ? ["istio-http/1.0", "istio-http/1.1", "istio-h2"]
                                                                                 : HTTPRouteGenerator.plaintextHTTP
            }
            if transport == "tls" { chain.transportSocket = try downstreamTransportSocket.get() }
            chains.append(chain)
        }
        return chains
    }

    // MARK: Pieces

    /// The endpoints of a service: inline ones and the WorkloadEntries (`workloadEntries`, resolved
    /// already) its selector picks.
    private static func members(of entry: ServiceEntry, workloadEntries: [Member], policy: MutualTLSPolicy,
                                authorization: AuthorizationPolicyScope, authentication: RequestAuthenticationScope) -> [Member] {
        var members = entry.endpoints.map { Member(endpoint: $0, namespace: entry.namespace, policy: policy, authorization: authorization,
                                                   authentication: authentication) }
        if let selector = entry.workloadSelector {
            members += workloadEntries.filter { workload in
                workload.namespace == entry.namespace && selector.allSatisfy { workload.endpoint.labels[$0.key] == $0.value }
            }
        }
        return members
    }

    private static func targetPort(of member: WorkloadEndpoint, port: ServiceEntry.Port) -> Int {
        member.ports[port.name] ?? port.targetPort ?? port.number
    }

    /// The VirtualService route for connections to `host:port`, or the service's own cluster.
    private static func route(host: String, port: Int, config: MeshConfig) -> Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.OneOf_ClusterSpecifier {
        let defaultCluster = clusterName(port: port, subset: "", host: host)
        guard let service = config.virtualServices.first(where: { $0.hosts.contains(host) }),
              let tcp = service.tcp.first(where: { $0.applies(port: port, gateway: VirtualService.meshGateway) }) else {
            return .cluster(defaultCluster)
        }
        return clusterSpecifier(tcp.destinations, port: port, config: config)
    }

    /// The first `tls` route of the (mesh-bound) VirtualServices for `host` with a match for the sidecars
    /// (no `gateways`, or `mesh`) on `port` whose `sniHosts` take the name; nil: none.
    static func tlsRoute(host: String, port: Int, config: MeshConfig) -> Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.OneOf_ClusterSpecifier? {
        for service in config.virtualServices where service.hosts.contains(host) && service.gateways.contains(VirtualService.meshGateway) {
            for route in service.tls {
                let applies = route.matches.contains { match in
                    (match.port ?? port) == port && (match.gateways.isEmpty || match.gateways.contains(VirtualService.meshGateway))
                        && match.sniHosts.contains { Gateway.Host.matches(pattern: $0, host) }
                }
                if applies { return clusterSpecifier(route.destinations, port: port, config: config) }
            }
        }
        return nil
    }

    /// `tcp_proxy`'s cluster for a route's destinations: one, or weighted (a destination without a port
    /// takes its service's first port, else `port`).
    private static func clusterSpecifier(_ destinations: [VirtualService.Destination], port: Int,
                                         config: MeshConfig) -> Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.OneOf_ClusterSpecifier {
        let clusters = destinations.map { destination -> (String, Int) in
            let destinationPort = destination.port
                ?? config.serviceEntries.first { $0.hosts.contains(destination.host) }?.ports.first?.number ?? port
            return (clusterName(port: destinationPort, subset: destination.subset ?? "", host: destination.host), destination.weight)
        }
        if clusters.count == 1 { return .cluster(clusters[0].0) }
        var weighted = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.WeightedCluster()
        weighted.clusters = clusters.map { name, weight in
            var cluster = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.WeightedCluster.ClusterWeight()
            cluster.name = name
            cluster.weight = UInt32(weight)
            return cluster
        }
        return .weightedClusters(weighted)
    }

    private static func outboundChain(host: String, port: Int, addresses: [String],
                                      route: Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.OneOf_ClusterSpecifier) -> Envoy_Config_Listener_V3_FilterChain {
        var chain = tcpProxyChain(name: "\(host):\(port)", route: route)
        chain.filterChainMatch.destinationPort = Google_Protobuf_UInt32Value(UInt32(port))
        chain.filterChainMatch.prefixRanges = addresses.compactMap(IPNetwork.init).map { network in
            var range = Envoy_Config_Core_V3_CidrRange()
            range.addressPrefix = network.address
            range.prefixLen = Google_Protobuf_UInt32Value(UInt32(network.prefixLength))
            return range
        }
        return chain
    }

    /// istiod's cluster metadata `istio.services`: the service a cluster is of (host, name, namespace),
    /// which Istio's request metrics name as `destination_service`.
    static func serviceMetadata(host: String, namespace: String) -> Envoy_Config_Core_V3_Metadata {
        let suffix = ".svc.cluster.local"
        let parts = host.hasSuffix(suffix) ? host.dropLast(suffix.count).split(separator: ".") : []
        let (name, serviceNamespace) = parts.count == 2 ? (String(parts[0]), String(parts[1])) : (host, namespace)
        let service = Google_Protobuf_Struct(fields: ["host": Google_Protobuf_Value(stringValue: host),
                                                      "name": Google_Protobuf_Value(stringValue: name),
                                                      "namespace": Google_Protobuf_Value(stringValue: serviceNamespace)])
        var metadata = Envoy_Config_Core_V3_Metadata()
        metadata.filterMetadata["istio"] = Google_Protobuf_Struct(fields: [
            "services": Google_Protobuf_Value(listValue: Google_Protobuf_ListValue(values: [Google_Protobuf_Value(structValue: service)])),
        ])
        return metadata
    }

    /// `PassthroughFilterChain`: connections no chain takes go to their original destination
    /// (ALLOW_ANY), or into `BlackHoleCluster` (REGISTRY_ONLY, its stat prefix istiod's too).
    static func passthroughChain(_ policy: MeshSettings.OutboundTrafficPolicy = .allowAny) -> Envoy_Config_Listener_V3_FilterChain {
        switch policy {
        case .allowAny:
            return tcpProxyChain(name: "PassthroughFilterChain", route: .cluster(passthroughCluster))
        case .registryOnly:
            return tcpProxyChain(name: "PassthroughFilterChain", statPrefix: blackHoleCluster, route: .cluster(blackHoleCluster))
        }
    }

    private static func tcpProxyChain(name: String, statPrefix: String? = nil,
                                      route: Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.OneOf_ClusterSpecifier) -> Envoy_Config_Listener_V3_FilterChain {
        var proxy = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy()
        proxy.statPrefix = statPrefix ?? name
        proxy.clusterSpecifier = route
        var filter = Envoy_Config_Listener_V3_Filter()
        filter.name = "envoy.filters.network.tcp_proxy"
        filter.typedConfig = (try? Google_Protobuf_Any(message: proxy)) ?? Google_Protobuf_Any()
        var chain = Envoy_Config_Listener_V3_FilterChain()
        chain.name = name
        chain.filters = [filter]
        return chain
    }

    /// A warmup as istiod's `setWarmup` (or, for `warmupDurationSecs`, `setSlowStartConfig`) writes it:
    /// the slow start of a ROUND_ROBIN or LEAST_REQUEST cluster's lb config; `warmup` always with its
    /// aggression and minimum weight (and istiod's runtime key "(").
    static func applyWarmup(_ warmup: DestinationRule.Warmup, to cluster: inout Envoy_Config_Cluster_V3_Cluster) {
        var slowStart = Envoy_Config_Cluster_V3_Cluster.SlowStartConfig()
        slowStart.slowStartWindow = protoDuration(warmup.duration)
        if let aggression = warmup.aggression {
            slowStart.aggression.defaultValue = aggression
            slowStart.aggression.runtimeKey = "("
        }
        if let minimum = warmup.minimumPercent { slowStart.minWeightPercent.value = minimum }
        switch cluster.lbPolicy {
        case .roundRobin: cluster.roundRobinLbConfig.slowStartConfig = slowStart
        case .leastRequest: cluster.leastRequestLbConfig.slowStartConfig = slowStart
        default: break
        }
    }

    private static func edsCluster(_ name: String, policy: DestinationRule.TrafficPolicy) -> Envoy_Config_Cluster_V3_Cluster {
        var cluster = Envoy_Config_Cluster_V3_Cluster()
        cluster.name = name
        cluster.type = .eds
        cluster.edsClusterConfig.serviceName = name
        cluster.edsClusterConfig.edsConfig.ads = Envoy_Config_Core_V3_AggregatedConfigSource()
        cluster.connectTimeout = protoDuration(policy.connectionPool?.connectTimeout ?? defaultConnectTimeout)
        switch policy.loadBalancer {
        case .simple("ROUND_ROBIN")?: cluster.lbPolicy = .roundRobin
        case .simple("RANDOM")?: cluster.lbPolicy = .random
        case .consistentHash(let hash)?:
            switch hash.table {
            case .ring(let minimumSize):
                cluster.lbPolicy = .ringHash
                if let minimumSize { cluster.ringHashLbConfig.minimumRingSize = Google_Protobuf_UInt64Value(UInt64(minimumSize)) }
            case .maglev(let tableSize):
                cluster.lbPolicy = .maglev
                if let tableSize { cluster.maglevLbConfig.tableSize = Google_Protobuf_UInt64Value(UInt64(tableSize)) }
            }
        // No policy, UNSPECIFIED, LEAST_REQUEST or LEAST_CONN: istiod's default since 1.14.
        default: cluster.lbPolicy = .leastRequest
        }
        if let warmup = policy.warmup { applyWarmup(warmup, to: &cluster) }
        cluster.circuitBreakers.thresholds = [circuitBreakerThreshold(policy.connectionPool)]
        // As istiod sets it on every outbound EDS cluster: localities take load by their weights.
        cluster.commonLbConfig.localityWeightedLbConfig = .init()
        if let outlier = policy.outlierDetection { applyOutlierDetection(outlier, to: &cluster) }
        if let keepalive = policy.connectionPool?.tcpKeepalive { cluster.upstreamConnectionOptions.tcpKeepalive = tcpKeepalive(keepalive) }
        return cluster
    }

    /// istiod's `tcp_keepalive` from `tcpKeepalive` (Capstan has no mesh-wide default to start from):
    /// an empty one still turns SO_KEEPALIVE on; durations in whole seconds, truncated as istiod does.
    static func tcpKeepalive(_ keepalive: DestinationRule.TCPKeepalive) -> Envoy_Config_Core_V3_TcpKeepalive {
        var result = Envoy_Config_Core_V3_TcpKeepalive()
        if let probes = keepalive.probes { result.keepaliveProbes = Google_Protobuf_UInt32Value(UInt32(probes)) }
        if let time = keepalive.time { result.keepaliveTime = Google_Protobuf_UInt32Value(UInt32(clamping: time.components.seconds)) }
        if let interval = keepalive.interval {
            result.keepaliveInterval = Google_Protobuf_UInt32Value(UInt32(clamping: interval.components.seconds))
        }
        return result
    }

    /// `BlackHoleCluster`, as istiod always sends it: STATIC, no endpoints, so every connection to it fails.
    private static func blackHole() -> Envoy_Config_Cluster_V3_Cluster {
        var cluster = Envoy_Config_Cluster_V3_Cluster()
        cluster.name = blackHoleCluster
        cluster.type = .static
        cluster.connectTimeout = protoDuration(defaultConnectTimeout)
        return cluster
    }

    /// An ORIGINAL_DST cluster; an `inbound` one binds its connections to 127.0.0.6, as istiod's do, so
    /// the application's own traffic and the proxy's are told apart (and the latter is not captured).
    private static func originalDestinationCluster(_ name: String, inbound: Bool = false) -> Envoy_Config_Cluster_V3_Cluster {
        var cluster = Envoy_Config_Cluster_V3_Cluster()
        cluster.name = name
        cluster.type = .originalDst
        if inbound {
            cluster.upstreamBindConfig.sourceAddress.address = inboundPassthroughSource
            cluster.upstreamBindConfig.sourceAddress.portValue = 0
        }
        cluster.lbPolicy = .clusterProvided
        cluster.connectTimeout = protoDuration(defaultConnectTimeout)
        cluster.circuitBreakers.thresholds = [circuitBreakerThreshold(nil)]
        return cluster
    }

    /// istiod's threshold: every limit at its maximum (Envoy's defaults would cap a sidecar at 1,024
    /// connections and 3 concurrent retries), with remaining capacity tracked, then the pool's limits.
    static func circuitBreakerThreshold(_ pool: DestinationRule.ConnectionPool?) -> Envoy_Config_Cluster_V3_CircuitBreakers.Thresholds {
        var threshold = Envoy_Config_Cluster_V3_CircuitBreakers.Thresholds()
        let unlimited = Google_Protobuf_UInt32Value(UInt32.max)
        threshold.maxConnections = pool?.maxConnections.map { Google_Protobuf_UInt32Value(UInt32($0)) } ?? unlimited
        threshold.maxPendingRequests = pool?.http1MaxPendingRequests.map { Google_Protobuf_UInt32Value(UInt32($0)) } ?? unlimited
        threshold.maxRequests = pool?.http2MaxRequests.map { Google_Protobuf_UInt32Value(UInt32($0)) } ?? unlimited
        threshold.maxRetries = pool?.maxRetries.map { Google_Protobuf_UInt32Value(UInt32($0)) } ?? unlimited
        threshold.trackRemaining = true
        return threshold
    }

    static func socketAddress(_ address: String, port: Int) -> Envoy_Config_Core_V3_Address {
        var socket = Envoy_Config_Core_V3_SocketAddress()
        socket.address = address
        socket.portValue = UInt32(port)
        var result = Envoy_Config_Core_V3_Address()
        result.socketAddress = socket
        return result
    }

    static func protoDuration(_ duration: Duration) -> Google_Protobuf_Duration {
        let (seconds, attoseconds) = duration.components
        return Google_Protobuf_Duration(seconds: seconds, nanos: Int32(attoseconds / 1_000_000_000))
    }
}
