import SwiftProtobuf
import XDS

/// Services outside the mesh, as istiod configures a sidecar for them: ServiceEntries with resolution
/// DNS or DNS_ROUND_ROBIN become `STRICT_DNS` / `LOGICAL_DNS` clusters whose endpoints the proxy looks
/// up itself, and a DestinationRule's `tls.mode` SIMPLE or MUTUAL makes the sidecar originate TLS.
extension ProxyConfigGenerator {
    /// The roots istiod's `system` stands for when `caCertificates` is not given: the system's bundle,
    /// which the agent reads on Debian-based images from this path.
    static let systemRootsFile = "/etc/ssl/certs/ca-certificates.crt"

    /// One endpoint of a cluster's load assignment: an IP address (EDS, STATIC) or a host name (DNS),
    /// with the ServiceEntry endpoint's weight and locality.
    struct AssignedEndpoint: Equatable {
        var address: String
        var port: Int
        var weight: Int?
        var locality: String?
    }

    /// The endpoints of a ServiceEntry port for a cluster: the selected endpoints, or with resolution
    /// DNS and no endpoints the host itself, as istiod makes them.
    static func assignedEndpoints(_ entry: ServiceEntry, host: String, port: ServiceEntry.Port,
                                  selected: [WorkloadEndpoint]) -> [AssignedEndpoint] {
        if entry.resolution.resolvesNames && entry.endpoints.isEmpty {
            return [AssignedEndpoint(address: host, port: port.targetPort ?? port.number)]
        }
        return selected.map { endpoint in
            AssignedEndpoint(address: endpoint.address, port: endpoint.ports[port.name] ?? port.targetPort ?? port.number,
                             weight: endpoint.weight, locality: endpoint.locality)
        }
    }

    /// A `ClusterLoadAssignment`: the endpoints grouped by locality in order of first appearance, each
    /// group with its `locality` and the sum of its endpoints' weights (as istiod sends them) when it
    /// has one, each endpoint with its `load_balancing_weight` when the ServiceEntry gave one.
    static func loadAssignment(_ name: String, _ endpoints: [AssignedEndpoint]) -> Envoy_Config_Endpoint_V3_ClusterLoadAssignment {
        var assignment = Envoy_Config_Endpoint_V3_ClusterLoadAssignment()
        assignment.clusterName = name
        var order: [String?] = []
        var groups: [String?: [AssignedEndpoint]] = [:]
        for endpoint in endpoints {
            if groups[endpoint.locality] == nil { order.append(endpoint.locality) }
            groups[endpoint.locality, default: []].append(endpoint)
        }
        assignment.endpoints = order.map { locality in
            let members = groups[locality] ?? []
            var group = Envoy_Config_Endpoint_V3_LocalityLbEndpoints()
            group.lbEndpoints = members.map { member in
                var endpoint = Envoy_Config_Endpoint_V3_LbEndpoint()
                endpoint.endpoint.address = socketAddress(member.address, port: member.port)
                endpoint.healthStatus = .healthy
                if let weight = member.weight { endpoint.loadBalancingWeight = Google_Protobuf_UInt32Value(UInt32(weight)) }
                return endpoint
            }
            if let locality {
                let parts = locality.split(separator: "/").map(String.init)
                group.locality.region = parts[0]
                if parts.count > 1 { group.locality.zone = parts[1] }
                if parts.count > 2 { group.locality.subZone = parts[2] }
            }
            // Every group has its weight, as istiod sends it (with locality-weighted balancing a group
            // without one would take no requests).
            group.loadBalancingWeight = Google_Protobuf_UInt32Value(UInt32(clamping: members.reduce(0) { $0 + ($1.weight ?? 1) }))
            return group
        }
        return assignment
    }

    /// The endpoints' labels grouped as ``loadAssignment(_:_:)`` groups the endpoints (by locality, in
    /// order of first appearance).
    static func groupedLabels(_ endpoints: [WorkloadEndpoint]) -> [[[String: String]]] {
        var order: [String?] = []
        var groups: [String?: [[String: String]]] = [:]
        for endpoint in endpoints {
            if groups[endpoint.locality] == nil { order.append(endpoint.locality) }
            groups[endpoint.locality, default: []].append(endpoint.labels)
        }
        return order.map { groups[$0] ?? [] }
    }

    /// The endpoints' networks (``MeshNetworks/network(of:)``) grouped as ``loadAssignment(_:_:)`` groups
    /// the endpoints.
    static func groupedNetworks(_ endpoints: [WorkloadEndpoint], _ networks: MeshNetworks) -> [[String?]] {
        var order: [String?] = []
        var groups: [String?: [String?]] = [:]
        for endpoint in endpoints {
            if groups[endpoint.locality] == nil { order.append(endpoint.locality) }
            groups[endpoint.locality, default: []].append(networks.network(of: endpoint))
        }
        return order.map { groups[$0] ?? [] }
    }

    /// Makes an EDS cluster a DNS one, as istiod's: `STRICT_DNS` (resolution DNS) or `LOGICAL_DNS`
    /// (DNS_ROUND_ROBIN), its endpoints inline, re-resolved every `refreshRate` (the mesh config's
    /// `dnsRefreshRate`) unless the answer's TTL says otherwise (`respect_dns_ttl`), IPv4 lookups
    /// (istiod's choice for an IPv4 proxy; Capstan's snapshot serves every proxy alike).
    static func makeDNSCluster(_ cluster: inout Envoy_Config_Cluster_V3_Cluster, resolution: ServiceEntry.Resolution,
                               endpoints: [AssignedEndpoint], refreshRate: Duration) {
        cluster.type = resolution == .dnsRoundRobin ? .logicalDns : .strictDns
        cluster.clearEdsClusterConfig()
        cluster.loadAssignment = loadAssignment(cluster.name, endpoints)
        // Resolved hosts have no locality-weighted balancing: a group without a locality keeps no weight.
        for index in cluster.loadAssignment.endpoints.indices where !cluster.loadAssignment.endpoints[index].hasLocality {
            cluster.loadAssignment.endpoints[index].clearLoadBalancingWeight()
        }
        cluster.dnsRefreshRate = protoDuration(refreshRate)
        cluster.respectDnsTtl = true
        cluster.dnsLookupFamily = .v4Only
    }

    /// The `UpstreamTlsContext` of a cluster whose DestinationRule originates TLS (SIMPLE or MUTUAL).
    ///
    /// Like istiod's: `sni`, the client certificate and key (MUTUAL), the roots (`caCertificates`, else
    /// the system's) and `subjectAltNames` as exact `match_subject_alt_names`; `h2` as ALPN on HTTP/2
    /// ports; no validation at all with `insecureSkipVerify`. Two differences, both said here: istiod
    /// hands the files to the agent, which serves them over SDS (`file-cert:`/`file-root:` secrets),
    /// while Capstan names them in the context (`filename`), which the proxy reads itself; and where the
    /// rule gives no `sni`, istiod sets Envoy's `auto_sni` (and, without subjectAltNames,
    /// `auto_san_validation`) to use each request's host, while Capstan sends the service's host
    /// (`host`) and, without subjectAltNames, accepts only a certificate for it: the same for requests
    /// addressed to the service by its name.
    static func originatedTLS(_ mode: DestinationRule.TLSMode, _ settings: DestinationRule.OriginatedTLS, host: String,
                              http2: Bool) throws -> Envoy_Config_Core_V3_TransportSocket {
        var context = Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext()
        context.sni = settings.sni ?? host
        if mode == .mutual, let certificate = settings.clientCertificate, let key = settings.privateKey {
            var pair = Envoy_Extensions_TransportSockets_Tls_V3_TlsCertificate()
            pair.certificateChain.filename = certificate
            pair.privateKey.filename = key
            context.commonTlsContext.tlsCertificates = [pair]
        }
        if !settings.insecureSkipVerify {
            var validation = Envoy_Extensions_TransportSockets_Tls_V3_CertificateValidationContext()
            validation.trustedCa.filename = settings.caCertificates ?? systemRootsFile
            let names = settings.subjectAltNames.isEmpty && settings.sni == nil ? [host] : settings.subjectAltNames
            validation.matchSubjectAltNames = names.map { name in
                var matcher = Envoy_Type_Matcher_V3_StringMatcher()
                matcher.exact = name
                return matcher
            }
            context.commonTlsContext.validationContext = validation
        }
        if http2 { context.commonTlsContext.alpnProtocols = ["h2"] }
        var socket = Envoy_Config_Core_V3_TransportSocket()
        socket.name = tlsTransportSocket
        socket.typedConfig = try Google_Protobuf_Any(message: context)
        return socket
    }

    /// istiod's chain for a TLS or HTTPS service port without addresses: it matches the service's host
    /// as the ClientHello's server name, and relays to the service's cluster, or to `route` (a mesh-bound
    /// VirtualService's `tls` route for the name, as Istio's egress gateway task sends it to the gateway).
    static func serverNameChain(host: String, port: Int,
                                route: Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.OneOf_ClusterSpecifier? = nil) throws -> Envoy_Config_Listener_V3_FilterChain {
        let cluster = clusterName(port: port, subset: "", host: host)
        var proxy = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy()
        proxy.clusterSpecifier = route ?? .cluster(cluster)
        if case .cluster(let name)? = proxy.clusterSpecifier { proxy.statPrefix = name } else { proxy.statPrefix = cluster }
        var filter = Envoy_Config_Listener_V3_Filter()
        filter.name = "envoy.filters.network.tcp_proxy"
        filter.typedConfig = try Google_Protobuf_Any(message: proxy)
        var chain = Envoy_Config_Listener_V3_FilterChain()
        chain.filterChainMatch.serverNames = [host]
        chain.filterChainMatch.destinationPort = Google_Protobuf_UInt32Value(UInt32(port))
        chain.filters = [filter]
        return chain
    }

    /// `0.0.0.0_PORT` for a port only TLS services without addresses (and TCP ones with addresses)
    /// have: `tls_inspector` reads the server name, the chains choose by it, and anything else takes
    /// the passthrough chain (ALLOW_ANY) or the black hole (REGISTRY_ONLY). It binds no port:
    /// `virtualOutbound` hands it the connections to that port.
    static func serverNameListener(port: Int, chains: [Envoy_Config_Listener_V3_FilterChain],
                                   policy: MeshSettings.OutboundTrafficPolicy) throws -> Envoy_Config_Listener_V3_Listener {
        var listener = Envoy_Config_Listener_V3_Listener()
        listener.name = HTTPRouteGenerator.outboundListenerName(port: port)
        listener.address = socketAddress("0.0.0.0", port: port)
        listener.bindToPort = Google_Protobuf_BoolValue(false)
        listener.trafficDirection = .outbound
        var inspector = Envoy_Config_Listener_V3_ListenerFilter()
        inspector.name = tlsInspectorFilter
        inspector.typedConfig = try Google_Protobuf_Any(message: Envoy_Extensions_Filters_Listener_TlsInspector_V3_TlsInspector())
        listener.listenerFilters = [inspector]
        listener.filterChains = chains.map { chain in
            // The listener is the port's: its chains need not match it again.
            var chain = chain
            chain.filterChainMatch.clearDestinationPort()
            return chain
        }
        listener.defaultFilterChain = passthroughChain(policy)
        return listener
    }
}
