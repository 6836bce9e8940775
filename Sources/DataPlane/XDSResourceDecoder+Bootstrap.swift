import Configuration
import NIOCore
import XDS

/// A bootstrap's `Bootstrap` message: its static listeners and clusters through the decoder xDS resources
/// take, with paths from the document's root, and what only a bootstrap has: the admin address, the node,
/// and where the control plane is.
extension XDSResourceDecoder {
    static func bootstrap(_ proto: Envoy_Config_Bootstrap_V3_Bootstrap, warnings: [String]) throws(ConfigError) -> BootstrapConfig {
        var adminPort: Int?
        if proto.hasAdmin && proto.admin.hasAddress {
            adminPort = try self.adminPort(proto.admin.address, path: "admin.address")
        }
        let resources = proto.staticResources
        var clusters: [BootstrapConfig.Cluster] = []
        for (index, message) in resources.clusters.enumerated() {
            let path = "static_resources.clusters[\(index)]"
            let decoded = try cluster(message, path: path)
            if decoded.dns != nil {
                throw ConfigError(path: "\(path).type",
                                  message: "STRICT_DNS and LOGICAL_DNS are supported for clusters from CDS, not in a bootstrap yet")
            }
            if decoded.endpointService != nil {
                throw ConfigError(path: "\(path).type",
                                  message: "EDS is not supported in a bootstrap: Capstan asks for endpoints only for clusters from CDS")
            }
            if clusters.contains(where: { $0.name == decoded.cluster.name }) {
                throw ConfigError(path: "\(path).name", message: "duplicate cluster \"\(decoded.cluster.name)\"")
            }
            clusters.append(decoded.cluster)
        }
        var listeners: [BootstrapConfig.Listener] = []
        for (index, message) in resources.listeners.enumerated() {
            let path = "static_resources.listeners[\(index)]"
            let decoded = try listener(message, path: path)
            if listeners.contains(where: { $0.name == decoded.name }) {
                throw ConfigError(path: "\(path).name", message: "duplicate listener \"\(decoded.name)\"")
            }
            try checkAddress(of: decoded, against: listeners, path: "\(path).address")
            listeners.append(decoded)
        }
        let node = proto.hasNode ? proto.node : nil
        var notActedOn: [FieldNotActedOn] = []
        let dynamic = proto.hasDynamicResources
            ? try dynamicResources(proto.dynamicResources, node: node, clusters: clusters, notActedOn: &notActedOn) : nil
        let config = BootstrapConfig(listeners: listeners, clusters: clusters, adminPort: adminPort, dynamicResources: dynamic,
                                     warnings: warnings, node: node, fieldsNotActedOn: notActedOn)
        for (index, listener) in listeners.enumerated() {
            for (chain, chainPath) in chainPaths(of: listener, path: "static_resources.listeners[\(index)]") {
                let configPath = "\(chainPath).filters[\(chain.terminalFilterIndex)].typed_config"
                // Without CDS no other cluster can come: a route to one that is not here is a mistake.
                if dynamic == nil {
                    for name in chain.route?.clusterNames ?? [] where !clusters.contains(where: { $0.name == name }) {
                        throw ConfigError(path: configPath, message: "routes to unknown cluster \"\(name)\"")
                    }
                    // Without ADS no route configuration can come either.
                    if chain.httpConnectionManager?.discoveredRouteName != nil {
                        throw ConfigError(path: "\(configPath).rds", message: "needs dynamic_resources: route configurations come over ADS")
                    }
                }
                try config.checkSecretSources(chain.transportSocket, path: "\(chainPath).transport_socket")
            }
        }
        for (index, cluster) in clusters.enumerated() {
            try config.checkSecretSources(cluster.transportSocket, path: "static_resources.clusters[\(index)].transport_socket")
            for (matchIndex, match) in cluster.transportSocketMatches.enumerated() {
                try config.checkSecretSources(match.transportSocket,
                                              path: "static_resources.clusters[\(index)].transport_socket_matches[\(matchIndex)].transport_socket")
            }
        }
        return config
    }

    /// Each chain of a listener with its path: `filter_chains[N]`, then `default_filter_chain`.
    private static func chainPaths(of listener: BootstrapConfig.Listener, path: String) -> [(BootstrapConfig.FilterChain, String)] {
        listener.chains.enumerated().map { ($1, "\(path).filter_chains[\($0)]") }
            + (listener.defaultChain.map { [($0, "\(path).default_filter_chain")] } ?? [])
    }

    /// The admin API's port. It is served on 127.0.0.1 only, so that is the one address it may name.
    private static func adminPort(_ address: Envoy_Config_Core_V3_Address, path: String) throws(ConfigError) -> Int {
        guard case .socketAddress(let socket)? = address.address, case .portValue(let port)? = socket.portSpecifier else {
            throw ConfigError(path: path, message: "needs a socket_address with a port_value")
        }
        guard socket.address == "127.0.0.1" else {
            throw ConfigError(path: "\(path).socket_address.address", message: "\"\(socket.address)\" is not supported: the admin API is served on 127.0.0.1")
        }
        guard (0...65535).contains(port) else {
            throw ConfigError(path: "\(path).socket_address.port_value", message: "\(port) is out of range 0-65535")
        }
        return Int(port)
    }

    /// `dynamic_resources`: listeners and clusters over ADS, state of the world over gRPC. The server is a
    /// static cluster named by `envoy_grpc` (as Istio's `xds-grpc`, often a `pipe`), or a `google_grpc`
    /// target URI.
    private static func dynamicResources(_ proto: Envoy_Config_Bootstrap_V3_Bootstrap.DynamicResources,
                                         node: Envoy_Config_Core_V3_Node?, clusters: [BootstrapConfig.Cluster],
                                         notActedOn: inout [FieldNotActedOn]) throws(ConfigError) -> BootstrapConfig.DynamicResources {
        let path = "dynamic_resources"
        for (field, given, source) in [("lds_config", proto.hasLdsConfig, proto.ldsConfig), ("cds_config", proto.hasCdsConfig, proto.cdsConfig)] {
            let sourcePath = "\(path).\(field)"
            guard given else {
                throw ConfigError(path: sourcePath, message: "is required: Capstan takes both listeners and clusters from the control plane")
            }
            guard case .ads? = source.configSourceSpecifier else {
                throw ConfigError(path: sourcePath, message: "only ADS is supported (\"ads\": {})")
            }
            if source.resourceApiVersion == .v2 {
                throw ConfigError(path: "\(sourcePath).resource_api_version", message: "V2 is not supported: Capstan speaks xDS v3")
            }
            if source.hasInitialFetchTimeout && duration(source.initialFetchTimeout) != .zero {
                notActedOn.append(.init(path: "\(sourcePath).initial_fetch_timeout", reason: "Capstan waits for the first clusters and listeners without a deadline (as 0s does)"))
            }
        }
        guard proto.hasAdsConfig else { throw ConfigError(path: "\(path).ads_config", message: "is required with lds_config and cds_config over ADS") }
        let ads = proto.adsConfig
        let adsPath = "\(path).ads_config"
        guard ads.apiType == .grpc else {
            throw ConfigError(path: "\(adsPath).api_type",
                              message: ads.apiType.rawValue == 0 ? "is required: GRPC (Capstan speaks state-of-the-world GRPC)"
                                                                 : "\(spelling("api_type", in: ads)) is not supported: Capstan speaks state-of-the-world GRPC")
        }
        if ads.transportApiVersion == .v2 {
            throw ConfigError(path: "\(adsPath).transport_api_version", message: "V2 is not supported: Capstan speaks xDS v3")
        }
        guard ads.grpcServices.count == 1, let service = ads.grpcServices.first else {
            throw ConfigError(path: "\(adsPath).grpc_services", message: "needs one gRPC service, not \(ads.grpcServices.count)")
        }
        let servicePath = "\(adsPath).grpc_services[0]"
        let server: XDSServerAddress
        switch service.targetSpecifier {
        case .envoyGrpc(let grpc)?:
            guard let address = BootstrapConfig.grpcServer(cluster: grpc.clusterName, in: clusters) else {
                throw ConfigError(path: "\(servicePath).envoy_grpc", message: "cluster \"\(grpc.clusterName)\" must be a static cluster with an endpoint")
            }
            server = address
        case .googleGrpc(let grpc)?:
            do throws(XDSAddressError) {
                server = try XDSServerAddress(parsing: grpc.targetUri)
            } catch {
                throw ConfigError(path: "\(servicePath).google_grpc.target_uri", message: error.reason)
            }
        case nil:
            throw ConfigError(path: servicePath, message: "needs envoy_grpc or google_grpc")
        }
        guard let node else { throw ConfigError(path: "node", message: "is required with dynamic_resources (the control plane identifies the proxy by node.id)") }
        guard !node.id.isEmpty else { throw ConfigError(path: "node.id", message: "is required with dynamic_resources") }
        return BootstrapConfig.DynamicResources(server: server, node: node, nodeOnEveryRequest: !ads.setNodeOnFirstMessageOnly)
    }
}
