import Configuration
#if canImport(Glibc)
import Glibc
#endif

/// The Envoy bootstrap the agent hands its proxy child (`capstan proxy --config`), shaped as Istio's
/// `envoy-rev.json`: the node (id, cluster, metadata), the admin API on 127.0.0.1, the static clusters
/// `xds-grpc` and `sds-grpc` reaching the agent over unix sockets, and ADS over `xds-grpc` for
/// listeners and clusters. Only fields `capstan proxy` reads, so it loads without warnings.
public struct ProxyBootstrap: Sendable {
    /// The file name Istio uses in its socket directory.
    public static let fileName = "envoy-rev.json"
    public static let xdsClusterName = "xds-grpc"
    public static let sdsClusterName = "sds-grpc"

    public var nodeID: String
    /// The node's `cluster` (Istio's service cluster).
    public var serviceCluster: String
    /// Node metadata, as istiod reads it (``NodeMetadata``).
    public var metadata: [String: ConfigValue]
    public var adminPort: Int
    public var xdsSocketPath: String
    public var sdsSocketPath: String

    /// The bootstrap for `settings`, with `metadata` (``NodeMetadata``) as the node's.
    public init(settings: AgentSettings, metadata: NodeMetadata) {
        nodeID = settings.nodeID.description
        serviceCluster = settings.serviceCluster
        self.metadata = metadata.fields
        adminPort = settings.proxyAdminPort
        xdsSocketPath = settings.xdsSocketPath
        sdsSocketPath = settings.sdsSocketPath
    }

    public init(nodeID: String, serviceCluster: String, metadata: [String: ConfigValue], adminPort: Int,
                xdsSocketPath: String, sdsSocketPath: String) {
        self.nodeID = nodeID
        self.serviceCluster = serviceCluster
        self.metadata = metadata
        self.adminPort = adminPort
        self.xdsSocketPath = xdsSocketPath
        self.sdsSocketPath = sdsSocketPath
    }

    /// The node's locality as pilot-agent takes it from the pod's labels: `topology.istio.io/locality`,
    /// else `istio-locality`, `region.zone.subzone` (or with `/`); nil without either.
    static func locality(labels: ConfigValue?) -> [String]? {
        guard case .object(let fields)? = labels else { return nil }
        let given = [fields["topology.istio.io/locality"], fields["istio-locality"]].lazy.compactMap { $0?.stringValue }.first { !$0.isEmpty }
        guard let given else { return nil }
        let separator: Character = given.contains("/") ? "/" : "."
        let parts = given.split(separator: separator, omittingEmptySubsequences: false).map(String.init) + ["", "", ""]
        return parts[0].isEmpty ? nil : Array(parts.prefix(3))
    }

    /// The bootstrap as a JSON tree.
    public var document: ConfigValue {
        func object(_ fields: [String: ConfigValue]) -> ConfigValue { .object(fields) }
        func pipeCluster(_ name: String, _ path: String) -> ConfigValue {
            object([
                "name": .string(name),
                "type": .string("STATIC"),
                "connect_timeout": .string("1s"),
                "load_assignment": object([
                    "cluster_name": .string(name),
                    "endpoints": .array([object(["lb_endpoints": .array([
                        object(["endpoint": object(["address": object(["pipe": object(["path": .string(path)])])])]),
                    ])])]),
                ]),
            ])
        }
        let adsSource = object(["ads": object([:]), "resource_api_version": .string("V3"), "initial_fetch_timeout": .string("0s")])
        var node: [String: ConfigValue] = ["id": .string(nodeID), "cluster": .string(serviceCluster), "metadata": .object(metadata)]
        if let locality = Self.locality(labels: metadata["LABELS"]) {
            node["locality"] = object(["region": .string(locality[0]), "zone": .string(locality[1]), "sub_zone": .string(locality[2])])
        }
        return object([
            "node": object(node),
            "admin": object(["address": object(["socket_address": object([
                "address": .string("127.0.0.1"), "port_value": .number(Double(adminPort)),
            ])])]),
            "static_resources": object([
                "clusters": .array([pipeCluster(Self.xdsClusterName, xdsSocketPath), pipeCluster(Self.sdsClusterName, sdsSocketPath)]),
            ]),
            "dynamic_resources": object([
                "lds_config": adsSource,
                "cds_config": adsSource,
                "ads_config": object([
                    "api_type": .string("GRPC"),
                    "transport_api_version": .string("V3"),
                    "set_node_on_first_message_only": .bool(true),
                    "grpc_services": .array([object(["envoy_grpc": object(["cluster_name": .string(Self.xdsClusterName)])])]),
                ]),
            ]),
        ])
    }

    /// The bootstrap as JSON text (keys sorted, so the same settings always give the same file).
    public var json: String { document.jsonText(pretty: true) + "\n" }

    /// Writes the bootstrap as `directory/envoy-rev.json`, mode 0644, replacing any older one at once
    /// (written aside, then renamed). Returns the file's path.
    @discardableResult
    public func write(toDirectory directory: String) throws(ProxyBootstrapError) -> String {
        let path = directory.hasSuffix("/") ? directory + Self.fileName : directory + "/" + Self.fileName
        let temporary = path + ".tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw ProxyBootstrapError(path: temporary, reason: Self.lastError) }
        let bytes = Array(json.utf8)
        var written = 0
        while written < bytes.count {
            let count = bytes[written...].withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                let reason = Self.lastError
                close(descriptor)
                unlink(temporary)
                throw ProxyBootstrapError(path: temporary, reason: reason)
            }
            written += count
        }
        // The umask may have narrowed the mode; the proxy (another uid) must read the file.
        guard fchmod(descriptor, 0o644) == 0, fsync(descriptor) == 0 else {
            let reason = Self.lastError
            close(descriptor)
            unlink(temporary)
            throw ProxyBootstrapError(path: temporary, reason: reason)
        }
        close(descriptor)
        guard rename(temporary, path) == 0 else {
            let reason = Self.lastError
            unlink(temporary)
            throw ProxyBootstrapError(path: path, reason: reason)
        }
        return path
    }

    private static var lastError: String { String(cString: strerror(errno)) }
}
