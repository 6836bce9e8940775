import SwiftProtobuf
import XDS

/// What istiod generates for a gateway proxy (a `router~` node), from the Gateways that select it and
/// the VirtualServices bound to them:
/// - a listener `0.0.0.0_PORT` per server port, bound on that port (no original destination, no
///   `virtualOutbound`/`virtualInbound`), whose one chain's connection manager takes its routes over
///   RDS: `http.PORT` for plaintext servers (all of a port's servers together), and
///   `https.PORT.PORTNAME.GATEWAY.NAMESPACE` for an HTTPS server, whose chain terminates TLS with the
///   certificate `kubernetes://CREDENTIAL` fetched over ADS (SDS through the aggregated stream), or,
///   for ISTIO_MUTUAL, mesh mutual TLS with the gateway's workload certificate from its agent;
/// - a TCP server's listener relays to the first bound `tcp` route for its port (none bound: no listener);
/// - a PASSTHROUGH server's chains relay TLS as it is, by SNI, to its bound `tls` routes' destinations;
/// - an AUTO_PASSTHROUGH server's chains relay TLS as it is to the mesh cluster whose SNI the client
///   sends (``autoPassthroughChains(server:config:taken:)``), and the router gets the SNI-DNAT
///   clusters those name (``ProxyConfigGenerator/sniDnatCluster(from:port:subset:host:entry:selected:dnsRefreshRate:)``);
/// - OPTIONAL_MUTUAL is MUTUAL with the client certificate optional (`require_client_certificate: false`);
/// - virtual hosts `HOST:PORT`, one per host a server and a bound VirtualService have in common (the
///   more specific of the two), with the VirtualServices' routes in order; a server with
///   `httpsRedirect` answers every request with a 301 to `https://`; a port with no host bound gets
///   istiod's `blackhole:PORT`, 404 for everything.
enum GatewayGenerator {
    /// A router's share of the resources, besides the clusters and endpoints every proxy gets.
    struct RouterResources: Sendable {
        var listeners: [MeshResources.Resource] = []
        var routes: [MeshResources.Resource] = []
        /// The `credentialName`s its listeners use, whose secrets it may fetch.
        var credentials: Set<String> = []
        /// Some server is AUTO_PASSTHROUGH: the router gets the SNI-DNAT clusters and their endpoints.
        var autoPassthrough = false
    }

    /// The Gateways (in configuration order) selecting a proxy with `labels`.
    static func gateways(in config: MeshConfig, selecting labels: [String: String]) -> [Gateway] {
        config.gateways.filter { $0.selects(labels) }
    }

    static func resources(for gateways: [Gateway], config: MeshConfig) throws -> RouterResources {
        var result = RouterResources()
        // Servers by port, in the order the Gateways list them.
        var ports: [Int: [(gateway: Gateway, server: Gateway.Server)]] = [:]
        for gateway in gateways {
            for server in gateway.servers { ports[server.portNumber, default: []].append((gateway, server)) }
        }
        for (port, servers) in ports.sorted(by: { $0.key < $1.key }) {
            let secure = servers.filter { $0.server.protocol.matchesServerName && $0.server.tls?.mode != nil }
            if !secure.isEmpty {
                // A chain per TLS server, told apart by SNI (the readers make sure their names differ),
                // each with its certificate and its own route configuration, as istiod makes them; a
                // PASSTHROUGH server's chains come from its bound `tls` routes, one per match.
                var chains: [Envoy_Config_Listener_V3_FilterChain] = []
                var taken: Set<String> = []
                for (gateway, server) in secure {
                    guard let tls = server.tls, let mode = tls.mode else { continue }
                    if mode == .passthrough {
                        chains += try passthroughChains(port: port, gateway: gateway, server: server, config: config, taken: &taken)
                        continue
                    }
                    if mode == .autoPassthrough {
                        chains += try autoPassthroughChains(server: server, config: config, taken: &taken)
                        result.autoPassthrough = true
                        continue
                    }
                    if server.protocol == .tls {
                        // TLS terminated, then bytes: istiod's chain with the first bound `tcp` route for the
                        // server (none: no chain); ISTIO_MUTUAL offers `istio-peer-exchange` first, as istiod does.
                        guard let route = tcpRoute(port: port, servers: [(gateway, server)], config: config) else { continue }
                        var chain = Envoy_Config_Listener_V3_FilterChain()
                        chain.filterChainMatch.serverNames = server.serverNames
                        if mode == .istioMutual {
                            chain.transportSocket = try istioMutualTLS(alpn: ["istio-peer-exchange", "h2", "http/1.1"])
                        } else if let credential = tls.credentialName {
                            chain.transportSocket = try downstreamTLS(credential: credential, mode: mode)
                            result.credentials.insert(credential)
                        } else {
                            continue
                        }
                        chain.filters = [try tcpProxyFilter(route.destinations, port: port, config: config)]
                        taken.formUnion(server.serverNames)
                        chains.append(chain)
                        continue
                    }
                    let name = httpsRouteName(port: port, portName: server.portName, gateway: gateway)
                    result.routes.append((name, try .packed(routeConfiguration(name: name, port: port, servers: [(gateway, server)], config: config),
                                                            as: .route)))
                    var chain = listener(port: port, routeName: name, mesh: config.mesh).filterChains[0]
                    chain.filterChainMatch.serverNames = server.serverNames
                    if mode == .istioMutual {
                        chain.transportSocket = try istioMutualTLS()
                    } else if let credential = tls.credentialName {
                        chain.transportSocket = try downstreamTLS(credential: credential, mode: mode)
                        result.credentials.insert(credential)
                    } else {
                        continue
                    }
                    taken.formUnion(server.serverNames)
                    chains.append(chain)
                }
                // As istiod: no chain (no bound route for a PASSTHROUGH port), no listener.
                guard !chains.isEmpty else { continue }
                var combined = listener(port: port, routeName: "", mesh: config.mesh)
                combined.listenerFilters = [try tlsInspector()]
                combined.filterChains = chains
                result.listeners.append((combined.name, try .packed(combined, as: .listener)))
            } else if servers.contains(where: { $0.server.protocol == .tcp }) {
                // As istiod: no bound VirtualService with a `tcp` route for the port, no listener.
                guard let route = tcpRoute(port: port, servers: servers, config: config) else { continue }
                let listener = try tcpListener(port: port, route: route, config: config)
                result.listeners.append((listener.name, try .packed(listener, as: .listener)))
            } else {
                let name = "http.\(port)"
                result.routes.append((name, try .packed(routeConfiguration(name: name, port: port, servers: servers, config: config), as: .route)))
                let listener = listener(port: port, routeName: name, mesh: config.mesh)
                result.listeners.append((listener.name, try .packed(listener, as: .listener)))
            }
        }
        return result
    }

    /// The first `tcp` route for `port` of the VirtualServices bound to one of `servers`' Gateways whose
    /// hosts a server's hosts take, in configuration order.
    static func tcpRoute(port: Int, servers: [(gateway: Gateway, server: Gateway.Server)], config: MeshConfig) -> VirtualService.TCPRoute? {
        for (gateway, server) in servers {
            for service in config.virtualServices where service.gateways.contains(gateway.reference) {
                let bound = service.hosts.contains { host in
                    server.hosts.contains { $0.domain(forVirtualServiceHost: host, namespace: service.namespace, gatewayNamespace: gateway.namespace) != nil }
                }
                guard bound else { continue }
                if let route = service.tcp.first(where: { $0.applies(port: port, gateway: gateway.reference) }) { return route }
            }
        }
        return nil
    }

    /// A PASSTHROUGH server's chains, as istiod's `buildGatewayNetworkFiltersFromTLSRoutes` makes them: for
    /// each VirtualService bound to its Gateway whose hosts its hosts take, each `tls` route's matches
    /// that apply to the port and Gateway give a chain matching their `sniHosts` (`*`: any name), no TLS
    /// context, `tcp_proxy` to the route's destinations. A match naming a server name an earlier chain
    /// of the port has is left out, as istiod does (Envoy refuses two chains with one match); the
    /// reader warns about it.
    static func passthroughChains(port: Int, gateway: Gateway, server: Gateway.Server, config: MeshConfig,
                                  taken: inout Set<String>) throws -> [Envoy_Config_Listener_V3_FilterChain] {
        var chains: [Envoy_Config_Listener_V3_FilterChain] = []
        for service in config.virtualServices where !service.tls.isEmpty && service.gateways.contains(gateway.reference) {
            let bound = service.hosts.contains { host in
                server.hosts.contains { $0.domain(forVirtualServiceHost: host, namespace: service.namespace, gatewayNamespace: gateway.namespace) != nil }
            }
            guard bound else { continue }
            for route in service.tls {
                for match in route.matches where (match.port ?? port) == port && (match.gateways.isEmpty || match.gateways.contains(gateway.reference)) {
                    let names = match.sniHosts.contains("*") ? ["*"] : match.sniHosts
                    guard taken.isDisjoint(with: names), !taken.contains("*") else { continue }
                    taken.formUnion(names)
                    var chain = Envoy_Config_Listener_V3_FilterChain()
                    if names != ["*"] { chain.filterChainMatch.serverNames = names }
                    chain.filters = [try tcpProxyFilter(route.destinations, port: port, config: config)]
                    chains.append(chain)
                }
            }
        }
        return chains
    }

    /// Istio's mutual TLS ALPNs (`allIstioMtlsALPNs`): what a sidecar offers when it originates
    /// ISTIO_MUTUAL. An AUTO_PASSTHROUGH chain takes only these, so that the bytes it relays reach a
    /// sidecar's mutual TLS chain and nothing else.
    static let istioMutualTLSALPN = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"]

    /// An AUTO_PASSTHROUGH server's chains, as istiod (1.19 on: `builtAutoPassthroughFilterChains`)
    /// makes them: for each port of each mesh-internal service whose host one of the server's hosts
    /// takes (their namespaces play no part), a chain matching the SNI-DNAT cluster's name
    /// `outbound_.PORT_._.HOST` as server name and Istio's mutual TLS ALPNs, with no TLS context and
    /// `tcp_proxy` to that cluster; the same for each subset of the host's DestinationRule
    /// (`outbound_.PORT_.SUBSET_.HOST`). No VirtualService takes part. A name an earlier chain of the
    /// port has is left out.
    ///
    /// istiod before 1.19 could instead send one chain matching the server's hosts with
    /// `envoy.filters.network.sni_cluster` before a `tcp_proxy` (PILOT_ENABLE_LEGACY_AUTO_PASSTHROUGH),
    /// which let a client name any cluster; the proxy takes that form too.
    static func autoPassthroughChains(server: Gateway.Server, config: MeshConfig,
                                      taken: inout Set<String>) throws -> [Envoy_Config_Listener_V3_FilterChain] {
        var chains: [Envoy_Config_Listener_V3_FilterChain] = []
        for entry in config.serviceEntries where entry.location != .meshExternal {
            let rule = config.destinationRules.first { rule in entry.hosts.contains(rule.host) }
            for host in entry.hosts where server.hosts.contains(where: { Gateway.Host.matches(pattern: $0.host, host) }) {
                for port in entry.ports {
                    for subset in [""] + (rule?.subsets.map(\.name) ?? []) {
                        let name = ProxyConfigGenerator.sni(port: port.number, subset: subset, host: host)
                        guard !taken.contains(name) else { continue }
                        taken.insert(name)
                        var proxy = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy()
                        proxy.statPrefix = name
                        proxy.cluster = name
                        var filter = Envoy_Config_Listener_V3_Filter()
                        filter.name = "envoy.filters.network.tcp_proxy"
                        filter.typedConfig = try Google_Protobuf_Any(message: proxy)
                        var chain = Envoy_Config_Listener_V3_FilterChain()
                        chain.filterChainMatch.serverNames = [name]
                        chain.filterChainMatch.applicationProtocols = istioMutualTLSALPN
                        chain.filters = [filter]
                        chains.append(chain)
                    }
                }
            }
        }
        return chains
    }

    /// A TCP server's listener: `tcp_proxy` to the route's cluster, or its weighted clusters.
    static func tcpListener(port: Int, route: VirtualService.TCPRoute, config: MeshConfig) throws -> Envoy_Config_Listener_V3_Listener {
        var listener = Envoy_Config_Listener_V3_Listener()
        listener.name = HTTPRouteGenerator.outboundListenerName(port: port)
        listener.address = ProxyConfigGenerator.socketAddress("0.0.0.0", port: port)
        listener.trafficDirection = .outbound
        var chain = Envoy_Config_Listener_V3_FilterChain()
        chain.filters = [try tcpProxyFilter(route.destinations, port: port, config: config)]
        listener.filterChains = [chain]
        return listener
    }

    /// `tcp_proxy` to a route's cluster (its stat prefix), or its weighted clusters.
    static func tcpProxyFilter(_ destinations: [VirtualService.Destination], port: Int,
                               config: MeshConfig) throws -> Envoy_Config_Listener_V3_Filter {
        var proxy = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy()
        let clusters = destinations.map { destination in
            (HTTPRouteGenerator.clusterName(destination, port: port, config: config), destination.weight)
        }
        if clusters.count == 1 {
            proxy.cluster = clusters[0].0
            proxy.statPrefix = clusters[0].0
        } else {
            var weighted = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.WeightedCluster()
            weighted.clusters = clusters.map { name, weight in
                var cluster = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy.WeightedCluster.ClusterWeight()
                cluster.name = name
                cluster.weight = UInt32(weight)
                return cluster
            }
            proxy.weightedClusters = weighted
            proxy.statPrefix = "outbound_0.0.0.0_\(port)"
        }
        var filter = Envoy_Config_Listener_V3_Filter()
        filter.name = "envoy.filters.network.tcp_proxy"
        filter.typedConfig = try Google_Protobuf_Any(message: proxy)
        return filter
    }

    /// istiod's RDS name of an HTTPS server: `https.PORT.PORTNAME.GATEWAY.NAMESPACE`.
    static func httpsRouteName(port: Int, portName: String, gateway: Gateway) -> String {
        "https.\(port).\(portName).\(gateway.name).\(gateway.namespace)"
    }

    // MARK: Listeners

    static func listener(port: Int, routeName: String, mesh: MeshSettings = MeshSettings()) -> Envoy_Config_Listener_V3_Listener {
        var listener = Envoy_Config_Listener_V3_Listener()
        listener.name = HTTPRouteGenerator.outboundListenerName(port: port)
        listener.address = ProxyConfigGenerator.socketAddress("0.0.0.0", port: port)
        listener.trafficDirection = .outbound
        var manager = HTTPRouteGenerator.baseConnectionManager(statPrefix: "outbound_0.0.0.0_\(port)",
                                                               accessLog: (try? HTTPRouteGenerator.accessLogs(mesh)) ?? [])
        // The edge: the client's address is the peer's, and client certificate headers from outside are replaced.
        manager.useRemoteAddress = Google_Protobuf_BoolValue(true)
        manager.forwardClientCertDetails = .sanitizeSet
        manager.setCurrentClientCertDetails.subject = Google_Protobuf_BoolValue(true)
        manager.setCurrentClientCertDetails.cert = true
        manager.setCurrentClientCertDetails.dns = true
        manager.setCurrentClientCertDetails.uri = true
        manager.normalizePath = Google_Protobuf_BoolValue(true)
        manager.pathWithEscapedSlashesAction = .keepUnchanged
        manager.httpProtocolOptions = Envoy_Config_Core_V3_Http1ProtocolOptions()
        var rds = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_Rds()
        rds.configSource.ads = Envoy_Config_Core_V3_AggregatedConfigSource()
        rds.configSource.resourceApiVersion = .v3
        rds.routeConfigName = routeName
        manager.rds = rds
        // Packing these fixed filters cannot fail.
        manager.httpFilters = [try? HTTPRouteGenerator.upstreamALPNFilter(), try? HTTPRouteGenerator.faultFilter(),
                               try? HTTPRouteGenerator.corsFilter(), try? HTTPRouteGenerator.routerFilter()].compactMap { $0 }
        var chain = Envoy_Config_Listener_V3_FilterChain()
        chain.filters = [(try? HTTPRouteGenerator.filter(manager)) ?? Envoy_Config_Listener_V3_Filter()]
        listener.filterChains = [chain]
        return listener
    }

    private static func tlsInspector() throws -> Envoy_Config_Listener_V3_ListenerFilter {
        var inspector = Envoy_Config_Listener_V3_ListenerFilter()
        inspector.name = ProxyConfigGenerator.tlsInspectorFilter
        inspector.typedConfig = try Google_Protobuf_Any(message: Envoy_Extensions_Filters_Listener_TlsInspector_V3_TlsInspector())
        return inspector
    }

    /// istiod's server side of SIMPLE, MUTUAL and OPTIONAL_MUTUAL: the credential's certificate over
    /// ADS, `h2` and `http/1.1` offered, and for MUTUAL and OPTIONAL_MUTUAL a client certificate
    /// verified against `kubernetes://NAME-cacert`: required with MUTUAL; with OPTIONAL_MUTUAL one
    /// presented is verified, and a client without one is served too (`require_client_certificate: false`).
    static func downstreamTLS(credential: String, mode: Gateway.TLSMode) throws -> Envoy_Config_Core_V3_TransportSocket {
        var context = Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext()
        context.commonTlsContext.alpnProtocols = ["h2", "http/1.1"]
        context.commonTlsContext.tlsCertificateSdsSecretConfigs = [adsSecret(GatewaySecrets.certificateResourceName(credential))]
        if mode.verifiesClientsWithCredential {
            var combined = Envoy_Extensions_TransportSockets_Tls_V3_CommonTlsContext.CombinedCertificateValidationContext()
            combined.defaultValidationContext = .init()
            combined.validationContextSdsSecretConfig = adsSecret(GatewaySecrets.caResourceName(credential))
            context.commonTlsContext.combinedValidationContext = combined
        }
        context.requireClientCertificate = Google_Protobuf_BoolValue(mode == .mutual)
        var socket = Envoy_Config_Core_V3_TransportSocket()
        socket.name = ProxyConfigGenerator.tlsTransportSocket
        socket.typedConfig = try Google_Protobuf_Any(message: context)
        return socket
    }

    /// istiod's server side of ISTIO_MUTUAL (`BuildListenerTLSContext`): `h2` and `http/1.1` offered on
    /// an HTTPS server (`alpn`: `istio-peer-exchange` first on a TLS one), the gateway's workload
    /// certificate (`default`) and the mesh roots (`ROOTCA`) from the agent's SDS (`sds-grpc`), as a
    /// sidecar's inbound has them, and a client certificate required: only mesh workloads get through.
    static func istioMutualTLS(alpn: [String] = ["h2", "http/1.1"]) throws -> Envoy_Config_Core_V3_TransportSocket {
        var context = Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext()
        context.commonTlsContext = ProxyConfigGenerator.commonTLSContext(validation: .init(), alpn: alpn)
        context.requireClientCertificate = Google_Protobuf_BoolValue(true)
        var socket = Envoy_Config_Core_V3_TransportSocket()
        socket.name = ProxyConfigGenerator.tlsTransportSocket
        socket.typedConfig = try Google_Protobuf_Any(message: context)
        return socket
    }

    /// A secret istiod serves on the ADS stream itself (`sds_config: {ads: {}}`).
    static func adsSecret(_ name: String) -> Envoy_Extensions_TransportSockets_Tls_V3_SdsSecretConfig {
        var secret = Envoy_Extensions_TransportSockets_Tls_V3_SdsSecretConfig()
        secret.name = name
        secret.sdsConfig.ads = Envoy_Config_Core_V3_AggregatedConfigSource()
        secret.sdsConfig.resourceApiVersion = .v3
        return secret
    }

    // MARK: Routes

    static func routeConfiguration(name: String, port: Int, servers: [(gateway: Gateway, server: Gateway.Server)],
                                   config: MeshConfig) -> Envoy_Config_Route_V3_RouteConfiguration {
        var routes = Envoy_Config_Route_V3_RouteConfiguration()
        routes.name = name
        // Domains in the order first met, each with the VirtualServices bound to it (and the Gateway they
        // are bound through, which their matches' `gateways` name) and whether its server redirects.
        var domains: [(domain: String, services: [(service: VirtualService, gateway: String)], redirect: Bool)] = []
        for (gateway, server) in servers {
            for service in config.virtualServices where service.gateways.contains(gateway.reference) {
                for host in service.hosts {
                    for serverHost in server.hosts {
                        guard let domain = serverHost.domain(forVirtualServiceHost: host, namespace: service.namespace,
                                                             gatewayNamespace: gateway.namespace) else { continue }
                        if let index = domains.firstIndex(where: { $0.domain == domain }) {
                            if !domains[index].services.contains(where: { $0.service == service }) {
                                domains[index].services.append((service, gateway.reference))
                            }
                        } else {
                            domains.append((domain, [(service, gateway.reference)], server.tls?.httpsRedirect == true))
                        }
                    }
                }
            }
        }
        routes.virtualHosts = domains.map { domain, services, redirect in
            var virtualHost = Envoy_Config_Route_V3_VirtualHost()
            virtualHost.name = "\(domain):\(port)"
            virtualHost.domains = [domain]
            virtualHost.includeRequestAttemptCount = true
            if redirect {
                // istiod says `require_tls: ALL` on the virtual host; the proxy's answer is the same 301 to https.
                var route = Envoy_Config_Route_V3_Route()
                route.name = "https_redirect"
                route.match.prefix = "/"
                route.redirect.httpsRedirect = true
                route.redirect.responseCode = .movedPermanently
                virtualHost.routes = [route]
            } else {
                virtualHost.routes = services.flatMap { service, gateway in
                    service.http.flatMap { HTTPRouteGenerator.routes($0, port: port, config: config, gateway: gateway) }
                }
            }
            return virtualHost
        }
        if routes.virtualHosts.isEmpty {
            var blackhole = Envoy_Config_Route_V3_VirtualHost()
            blackhole.name = "blackhole:\(port)"
            blackhole.domains = ["*"]
            var route = Envoy_Config_Route_V3_Route()
            route.name = "default"
            route.match.prefix = "/"
            route.directResponse.status = 404
            blackhole.routes = [route]
            routes.virtualHosts = [blackhole]
        }
        routes.validateClusters = Google_Protobuf_BoolValue(false)
        routes.maxDirectResponseBodySizeBytes = Google_Protobuf_UInt32Value(1_048_576)
        routes.ignorePortInHostMatching = true
        return routes
    }
}
