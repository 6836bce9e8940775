import Configuration
import Logging
import Synchronization
import XDS

/// An SDS secret by name (`default`, `ROOTCA`), and the static cluster of the bootstrap it is fetched
/// from (Istio's `sds-grpc`, the agent's unix socket), or nil for the ADS stream itself (`sds_config:
/// {ads: {}}`, as istiod configures a gateway's `kubernetes://NAME` credentials).
struct SecretReference: Sendable, Hashable {
    var name: String
    var cluster: String?

    init(name: String, cluster: String?) {
        self.name = name
        self.cluster = cluster
    }

    /// Reads `SdsSecretConfig`: a name, and an `api_config_source` of type GRPC naming an `envoy_grpc`
    /// cluster, or `ads`.
    init(_ proto: Envoy_Extensions_TransportSockets_Tls_V3_SdsSecretConfig, path: String) throws(ConfigError) {
        guard !proto.name.isEmpty else { throw ConfigError(path: "\(path).name", message: "is required") }
        guard proto.hasSdsConfig else {
            throw ConfigError(path: "\(path).sds_config",
                              message: "is required: Capstan has no static secrets; name the agent's SDS cluster (Istio's sds-grpc)")
        }
        let sourcePath = "\(path).sds_config"
        switch proto.sdsConfig.configSourceSpecifier {
        case .apiConfigSource(let api)?:
            guard api.apiType == .grpc else {
                throw ConfigError(path: "\(sourcePath).api_config_source.api_type", message: "\(api.apiType) is not supported: SDS is fetched over GRPC")
            }
            guard let service = api.grpcServices.first, case .envoyGrpc(let grpc)? = service.targetSpecifier, !grpc.clusterName.isEmpty else {
                throw ConfigError(path: "\(sourcePath).api_config_source.grpc_services", message: "needs a service with envoy_grpc.cluster_name")
            }
            self.init(name: proto.name, cluster: grpc.clusterName)
        case .ads?:
            self.init(name: proto.name, cluster: nil)
        case nil:
            throw ConfigError(path: sourcePath, message: "needs api_config_source")
        }
    }
}

/// The proxy's SDS client: one stream per SDS cluster (with Istio, one: `sds-grpc`), opened when the
/// configuration first names a secret it serves, and subscribed to every secret the configuration in
/// force names. A response is parsed whole before anything changes: a secret that is not PEM, or a key
/// that is not its certificate's, NACKs the response with the reason, and the secrets in force stay.
final class SecretDiscovery: ADSResponseHandler {
    private struct Stream {
        let client: ADSClient
        let task: Task<Void, Never>
    }

    private let store: SecretStore
    private let node: Envoy_Config_Core_V3_Node
    private let backoff: RetryBackoff
    private let logger: Logger
    /// Where the gRPC server of a static cluster is.
    private let servers: @Sendable (String) -> XDSServerAddress?
    private let streams = Mutex<[String: Stream]>([:])
    private let stopped = Mutex(false)

    init(store: SecretStore, node: Envoy_Config_Core_V3_Node, servers: @escaping @Sendable (String) -> XDSServerAddress?,
         backoff: RetryBackoff, logger: Logger) {
        self.store = store
        self.node = node
        self.servers = servers
        self.backoff = backoff
        self.logger = logger
    }

    /// Subscribes to `references`, each on its cluster's stream (opened now if it is the first).
    /// References to clusters with no gRPC server are left out (configurations naming them are refused
    /// before they get here).
    func request(_ references: Set<SecretReference>) {
        guard !stopped.withLock({ $0 }) else { return }
        // Those on the ADS stream are subscribed to there (``Proxy/requestSecrets()``).
        for (cluster, wanted) in Dictionary(grouping: references.filter { $0.cluster != nil }, by: { $0.cluster! }) {
            let names = Set(wanted.map(\.name)).sorted()
            let client = streams.withLock { streams -> ADSClient? in
                if let open = streams[cluster] { return open.client }
                guard let server = servers(cluster) else { return nil }
                let client = ADSClient(server: server, node: node, api: .secrets, backoff: backoff, logger: logger)
                client.subscribe(.secret, to: names)
                streams[cluster] = Stream(client: client, task: Task { await client.run(handler: self) })
                logger.info("SDS stream opened", metadata: ["cluster": "\(cluster)", "server": "\(server)", "secrets": "\(names)"])
                return client
            }
            client?.subscribe(.secret, to: names)
        }
    }

    /// Closes the streams; secrets in force stay.
    func stop() {
        stopped.withLock { $0 = true }
        for stream in streams.withLock({ Array($0.values) }) { stream.task.cancel() }
    }

    func apply(_ response: DiscoveryResponse, type: XDSResourceType, client: ADSClient) async -> ADSVerdict {
        guard type == .secret else { return .reject("\(type.service) resources on the SDS stream") }
        do throws(ConfigError) {
            let contents = try SecretStore.decode(response.resources)
            store.update(contents, version: response.versionInfo)
            logger.info("secrets in force", metadata: ["version": "\(response.versionInfo)", "secrets": "\(contents.keys.sorted())"])
            return .accept
        } catch {
            return .reject(error.description)
        }
    }

    func connectionChanged(connected: Bool) {}
}
