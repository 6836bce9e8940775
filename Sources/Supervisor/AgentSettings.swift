import Configuration
import Identity
import XDS
#if canImport(Glibc)
import Glibc
#endif

/// What `capstan agent` runs with, read from the environment under Istio's names (`POD_NAME`,
/// `POD_NAMESPACE`, `INSTANCE_IP`, `SERVICE_ACCOUNT`, `TRUST_DOMAIN`, `CA_ADDR`, `PROXY_CONFIG`,
/// `ISTIO_META_*`, …) so a manifest written for pilot-agent carries over. Every value is checked; a
/// refused one is an ``AgentSettingsError`` naming the variable and the value.
///
/// The workload's identity is fixed once read; the agent's own paths, ports and the plaintext switch
/// are `var`s a command line may override (then call ``validate()`` again).
public struct AgentSettings: Sendable {
    // MARK: The workload

    public let podName: String
    public let podNamespace: String
    /// The pod's addresses, first the primary (`INSTANCE_IP`, comma-separated for dual stack).
    public let instanceIPs: [String]
    public let serviceAccount: String
    public let trustDomain: String
    /// `spiffe://TRUST_DOMAIN/ns/POD_NAMESPACE/sa/SERVICE_ACCOUNT`, what the certificate will carry.
    public let identity: WorkloadIdentity
    /// `ISTIO_META_CLUSTER_ID` (Istio's default: `Kubernetes`).
    public let clusterID: String
    /// Every `ISTIO_META_*` variable, by its name without the prefix (`INTERCEPTION_MODE`).
    public let nodeMetadata: [String: String]
    /// Every `ISTIO_METAJSON_*` variable (a JSON value, as Istio reads it), by its name without the prefix.
    public let nodeMetadataJSON: [String: ConfigValue]
    /// `PROXY_CONFIG` as given, sent on in the node metadata as istiod expects.
    public let proxyConfigDocument: ConfigValue?
    /// `NODE_NAME` (downward API `spec.nodeName`), if set.
    public let nodeName: String?
    /// Where the injector mounts the pod's labels and annotations (downward API files `labels`, `annotations`).
    public var podInfoDirectory: String
    /// The node's `cluster` (PROXY_CONFIG `serviceCluster`; Istio's default `istio-proxy`).
    public let serviceCluster: String
    /// `sidecar` (the default) or `router` (`--type router`, Istio's `proxy router`).
    public var proxyType: ProxyType = .sidecar
    /// `TYPE~INSTANCE_IP~POD_NAME.POD_NAMESPACE~POD_NAMESPACE.svc.cluster.local`, TYPE `sidecar` or `router`.
    public var nodeID: ProxyNodeID {
        ProxyNodeID(type: proxyType.rawValue, ipAddresses: instanceIPs, podName: podName, namespace: podNamespace)
    }

    // MARK: The control plane and certificates

    /// PROXY_CONFIG `discoveryAddress` (default `istiod.istio-system.svc:15012`): where the xDS relay connects.
    public let discoveryAddress: XDSServerAddress
    /// `CA_ADDR` (default: the discovery address): where certificates are requested.
    public let caAddress: XDSServerAddress
    /// `SECRET_TTL` (default 24h): the lifetime asked of the CA.
    public let secretTTL: Duration
    /// `SECRET_GRACE_PERIOD_RATIO` (default 0.5): rotate once this fraction of the lifetime is left.
    public let secretGracePeriodRatio: Double
    /// `OUTPUT_CERTS`: a directory the key, chain and root are also written to; nil: nowhere.
    public let outputCertsDirectory: String?
    /// `ECC_SIGNATURE_ALGORITHM` and `WORKLOAD_RSA_KEY_SIZE`. Istio's default is RSA (2048); ours is
    /// ECDSA P-256, as the issue asks: `ECC_SIGNATURE_ALGORITHM=RSA` requests RSA.
    public let keyAlgorithm: KeyAlgorithm
    /// The Kubernetes token presented to the CA and the control plane. Istio's path depends on
    /// `JWT_POLICY` (`third-party-jwt`, the default, or `first-party-jwt`); a flag may override it.
    public var tokenPath: String
    /// Root certificate the xDS server's TLS is checked with (`XDS_ROOT_CA`, default
    /// `/var/run/secrets/istio/root-cert.pem`).
    public var xdsRootCertPath: String
    /// Root certificate the CA's TLS is checked with (`CA_ROOT_CA`, default: the xDS root).
    public var caRootCertPath: String
    /// Talk to the CA and the control plane without TLS. Only when asked
    /// (`CAPSTAN_PLAINTEXT_CONTROL_PLANE=true` or a flag): tests, demos, a local control plane.
    public var plaintextControlPlane: Bool

    // MARK: Drain

    /// `MINIMUM_DRAIN_DURATION` (Go duration, default 5s): after SIGTERM, the least time inbound drains
    /// before the agent may exit because no inbound connection is left.
    public let minimumDrainDuration: Duration
    /// `TERMINATION_DRAIN_DURATION_SECONDS` (default 5), else PROXY_CONFIG `terminationDrainDuration`:
    /// after SIGTERM, the longest the agent waits for inbound connections to finish.
    public let terminationDrainDuration: Duration

    // MARK: The agent's ports and files, and the proxy child

    /// The status server (`/healthz/ready`, `/quitquitquit`, `/drain`, `/stats/prometheus`); PROXY_CONFIG `statusPort`.
    public var statusPort: Int
    /// `/healthz/ready` alone, for kubelet probes.
    public var readinessPort: Int
    /// The proxy's admin API on 127.0.0.1; PROXY_CONFIG `proxyAdminPort`.
    public var proxyAdminPort: Int
    /// The proxy's Prometheus endpoint.
    public var proxyStatsPort: Int
    /// Where the status and readiness servers listen: all addresses, as Istio (kubelet probes come from
    /// the node); `::` when every pod address is IPv6.
    public var statusBindAddress: String
    /// Holds the unix sockets the proxy reaches the agent by: `XDS` (the relay) and `SDS` (secrets).
    public var socketDirectory: String
    /// The proxy runs as this uid/gid (`PROXY_UID`/`PROXY_GID`, as `capstan init -u/-g`; default 1337).
    public var proxyUID: UInt32
    public var proxyGID: UInt32
    /// The proxy's event loops (PROXY_CONFIG `concurrency`, default 2).
    public var proxyConcurrency: Int
    /// How long the proxy's own drain lets connections run when it is stopped (PROXY_CONFIG
    /// `drainDuration`, Istio's default 45s; the proxy's `--drain-time-s`).
    public var proxyDrainDuration: Duration

    /// PROXY_CONFIG fields Capstan does not use, ignored.
    public let warnings: [String]

    /// The xDS relay's socket, the proxy's `xds-grpc` cluster.
    public var xdsSocketPath: String { socketDirectory + "/XDS" }
    /// The SDS server's socket, the proxy's `sds-grpc` cluster.
    public var sdsSocketPath: String { socketDirectory + "/SDS" }

    public static let defaultDiscoveryAddress = "istiod.istio-system.svc:15012"
    public static let thirdPartyTokenPath = "/var/run/secrets/tokens/istio-token"
    public static let firstPartyTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    public static let defaultRootCertPath = "/var/run/secrets/istio/root-cert.pem"
    public static let defaultSocketDirectory = "/etc/istio/proxy"
    public static let defaultPodInfoDirectory = "/etc/istio/pod"

    /// Reads `environment` (the process's, or a test's). PROXY_CONFIG's `proxyMetadata` entries count
    /// as environment variables that are not otherwise set, as in Istio.
    public init(environment given: [String: String]) throws(AgentSettingsError) {
        let proxyConfig = try ProxyConfigFields(given["PROXY_CONFIG"])
        var environment = proxyConfig.metadata
        environment.merge(given) { _, set in set }
        let env = Environment(values: environment)

        podName = try env.required("POD_NAME", "the pod's name (downward API metadata.name)")
        try Self.checkName(podName, variable: "POD_NAME", maxLength: 253, dots: true)
        podNamespace = try env.required("POD_NAMESPACE", "the pod's namespace (downward API metadata.namespace)")
        try Self.checkName(podNamespace, variable: "POD_NAMESPACE", maxLength: 63, dots: false)
        let ips = try env.required("INSTANCE_IP", "the pod's IP addresses (downward API status.podIP)")
        instanceIPs = ips.split(separator: ",", omittingEmptySubsequences: false).map { String($0).trimmingSpaces }
        for ip in instanceIPs where !Self.isIPAddress(ip) {
            throw AgentSettingsError(variable: "INSTANCE_IP", value: ips, reason: "\"\(ip)\" is not an IPv4 or IPv6 address")
        }
        serviceAccount = env.optional("SERVICE_ACCOUNT") ?? "default"
        try Self.checkName(serviceAccount, variable: "SERVICE_ACCOUNT", maxLength: 253, dots: true)
        trustDomain = env.optional("TRUST_DOMAIN") ?? "cluster.local"
        do throws(WorkloadIdentityError) {
            identity = try WorkloadIdentity(trustDomain: trustDomain, namespace: podNamespace, serviceAccount: serviceAccount)
        } catch {
            throw AgentSettingsError(variable: "TRUST_DOMAIN", value: trustDomain, reason: "not usable in a SPIFFE ID: \(error)")
        }

        var metadata: [String: String] = [:]
        for (name, value) in environment where name.hasPrefix("ISTIO_META_") && name.count > "ISTIO_META_".count {
            metadata[String(name.dropFirst("ISTIO_META_".count))] = value
        }
        nodeMetadata = metadata
        var metadataJSON: [String: ConfigValue] = [:]
        for (name, text) in environment where name.hasPrefix("ISTIO_METAJSON_") && name.count > "ISTIO_METAJSON_".count {
            do {
                metadataJSON[String(name.dropFirst("ISTIO_METAJSON_".count))] = try ConfigValue.parse(json: text)
            } catch {
                throw AgentSettingsError(variable: name, value: text, reason: "not valid JSON: \(error)")
            }
        }
        nodeMetadataJSON = metadataJSON
        proxyConfigDocument = proxyConfig.document
        nodeName = env.optional("NODE_NAME")
        podInfoDirectory = Self.defaultPodInfoDirectory
        clusterID = metadata["CLUSTER_ID"].flatMap { $0.isEmpty ? nil : $0 } ?? "Kubernetes"
        serviceCluster = proxyConfig.serviceCluster ?? "istio-proxy"

        discoveryAddress = try Self.address(proxyConfig.discoveryAddress ?? Self.defaultDiscoveryAddress,
                                            variable: "PROXY_CONFIG.discoveryAddress")
        if let ca = env.optional("CA_ADDR") {
            caAddress = try Self.address(ca, variable: "CA_ADDR")
        } else {
            caAddress = discoveryAddress
        }
        secretTTL = try env.duration("SECRET_TTL") ?? .seconds(24 * 3600)
        guard secretTTL > .zero else {
            throw AgentSettingsError(variable: "SECRET_TTL", value: env.optional("SECRET_TTL"), reason: "must be longer than 0")
        }
        if let text = env.optional("SECRET_GRACE_PERIOD_RATIO") {
            guard let ratio = Double(text), ratio > 0, ratio < 1 else {
                throw AgentSettingsError(variable: "SECRET_GRACE_PERIOD_RATIO", value: text, reason: "must be between 0 and 1")
            }
            secretGracePeriodRatio = ratio
        } else {
            secretGracePeriodRatio = 0.5
        }
        outputCertsDirectory = env.optional("OUTPUT_CERTS")

        // Istio: empty means RSA; "ECDSA" asks for a P-256 key. Capstan defaults to ECDSA (see above).
        switch env.optional("ECC_SIGNATURE_ALGORITHM")?.uppercased() {
        case nil, "ECDSA":
            keyAlgorithm = .default
        case "RSA":
            let text = env.optional("WORKLOAD_RSA_KEY_SIZE") ?? "2048"
            guard let bits = Int(text), let algorithm = try? KeyAlgorithm.rsa(bits: bits).validated() else {
                throw AgentSettingsError(variable: "WORKLOAD_RSA_KEY_SIZE", value: text,
                                         reason: "must be \(KeyAlgorithm.rsaBits.lowerBound)-\(KeyAlgorithm.rsaBits.upperBound) bits, a multiple of 128")
            }
            keyAlgorithm = algorithm
        case .some:
            throw AgentSettingsError(variable: "ECC_SIGNATURE_ALGORITHM", value: env.optional("ECC_SIGNATURE_ALGORITHM"),
                                     reason: "must be ECDSA or RSA")
        }

        switch env.optional("JWT_POLICY") {
        case nil, "third-party-jwt": tokenPath = Self.thirdPartyTokenPath
        case "first-party-jwt": tokenPath = Self.firstPartyTokenPath
        case let other:
            throw AgentSettingsError(variable: "JWT_POLICY", value: other, reason: "must be third-party-jwt or first-party-jwt")
        }
        xdsRootCertPath = env.optional("XDS_ROOT_CA") ?? Self.defaultRootCertPath
        caRootCertPath = env.optional("CA_ROOT_CA") ?? xdsRootCertPath
        plaintextControlPlane = try env.bool("CAPSTAN_PLAINTEXT_CONTROL_PLANE") ?? false

        minimumDrainDuration = try env.duration("MINIMUM_DRAIN_DURATION") ?? .seconds(5)
        if let text = env.optional("TERMINATION_DRAIN_DURATION_SECONDS") {
            guard let seconds = Int(text), seconds >= 0, seconds <= 86_400 else {
                throw AgentSettingsError(variable: "TERMINATION_DRAIN_DURATION_SECONDS", value: text,
                                         reason: "must be whole seconds, 0-86400")
            }
            terminationDrainDuration = .seconds(seconds)
        } else {
            terminationDrainDuration = proxyConfig.terminationDrainDuration ?? .seconds(5)
        }

        statusPort = proxyConfig.statusPort ?? 15020
        readinessPort = 15021
        proxyAdminPort = proxyConfig.proxyAdminPort ?? 15000
        proxyStatsPort = 15090
        statusBindAddress = instanceIPs.allSatisfy { $0.contains(":") } ? "::" : "0.0.0.0"
        socketDirectory = Self.defaultSocketDirectory
        proxyUID = try env.id("PROXY_UID") ?? 1337
        proxyGID = try env.id("PROXY_GID") ?? 1337
        proxyConcurrency = proxyConfig.concurrency ?? 2
        proxyDrainDuration = proxyConfig.drainDuration ?? .seconds(45)
        warnings = proxyConfig.warnings
        try validate()
    }

    /// Checks the overridable settings (after a command line changed them): ports, paths, bind address.
    public func validate() throws(AgentSettingsError) {
        var ports: [(String, Int)] = [("status port", statusPort), ("readiness port", readinessPort),
                                      ("proxy admin port", proxyAdminPort), ("proxy stats port", proxyStatsPort)]
        for (name, port) in ports where !(1...65535).contains(port) {
            throw AgentSettingsError(variable: name, value: String(port), reason: "a port must be 1-65535")
        }
        while let (name, port) = ports.popLast() {
            if let other = ports.first(where: { $0.1 == port }) {
                throw AgentSettingsError(variable: name, value: String(port), reason: "the \(other.0) uses it too")
            }
        }
        for (name, path) in [("socket directory", socketDirectory), ("token path", tokenPath),
                             ("XDS_ROOT_CA", xdsRootCertPath), ("CA_ROOT_CA", caRootCertPath)] {
            guard path.hasPrefix("/") || path.hasPrefix("./") else {
                throw AgentSettingsError(variable: name, value: path, reason: "must be an absolute path (or start with ./)")
            }
        }
        if let outputCertsDirectory, outputCertsDirectory.isEmpty {
            throw AgentSettingsError(variable: "OUTPUT_CERTS", value: outputCertsDirectory, reason: "must be a directory")
        }
        // A unix socket path holds at most 107 bytes.
        guard sdsSocketPath.utf8.count < 108 else {
            throw AgentSettingsError(variable: "socket directory", value: socketDirectory,
                                     reason: "too long for a unix socket path (at most 103 bytes)")
        }
        guard Self.isIPAddress(statusBindAddress) else {
            throw AgentSettingsError(variable: "status bind address", value: statusBindAddress, reason: "not an IP address")
        }
        guard (1...256).contains(proxyConcurrency) else {
            throw AgentSettingsError(variable: "PROXY_CONFIG.concurrency", value: String(proxyConcurrency), reason: "must be 1-256")
        }
        guard proxyDrainDuration >= .seconds(1) else {
            throw AgentSettingsError(variable: "PROXY_CONFIG.drainDuration", value: GoDuration.format(proxyDrainDuration),
                                     reason: "must be at least 1s")
        }
    }

    // MARK: Checks

    /// Kubernetes names: DNS-1123 labels (namespaces), or subdomains (pods, service accounts).
    private static func checkName(_ value: String, variable: String, maxLength: Int, dots: Bool) throws(AgentSettingsError) {
        let allowed = value.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" || (dots && $0 == ".")
        }
        guard !value.isEmpty, value.utf8.count <= maxLength, allowed, value.first != "-", value.last != "-",
              value.first != ".", value.last != "." else {
            throw AgentSettingsError(variable: variable, value: value,
                                     reason: "not a Kubernetes name (lower-case letters, digits, '-'\(dots ? ", '.'" : ""); at most \(maxLength))")
        }
    }

    private static func address(_ text: String, variable: String) throws(AgentSettingsError) -> XDSServerAddress {
        do throws(XDSAddressError) {
            return try XDSServerAddress(parsing: text)
        } catch {
            throw AgentSettingsError(variable: variable, value: text, reason: error.reason)
        }
    }

    static func isIPAddress(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }
}

/// Reads variables: empty counts as unset, as Istio's `env.Register` treats it.
private struct Environment {
    var values: [String: String]

    func optional(_ name: String) -> String? {
        guard let value = values[name], !value.isEmpty else { return nil }
        return value
    }

    func required(_ name: String, _ what: String) throws(AgentSettingsError) -> String {
        guard let value = optional(name) else { throw AgentSettingsError(variable: name, value: nil, reason: "needed: \(what)") }
        return value
    }

    func duration(_ name: String) throws(AgentSettingsError) -> Duration? {
        guard let text = optional(name) else { return nil }
        guard let duration = GoDuration.parse(text), duration >= .zero else {
            throw AgentSettingsError(variable: name, value: text, reason: "not a duration such as \"5s\", \"1m30s\" or \"24h\"")
        }
        return duration
    }

    func bool(_ name: String) throws(AgentSettingsError) -> Bool? {
        guard let text = optional(name) else { return nil }
        switch text.lowercased() {
        case "true", "1": return true
        case "false", "0": return false
        default: throw AgentSettingsError(variable: name, value: text, reason: "must be true or false")
        }
    }

    func id(_ name: String) throws(AgentSettingsError) -> UInt32? {
        guard let text = optional(name) else { return nil }
        guard let id = UInt32(text), id < UInt32.max else {
            throw AgentSettingsError(variable: name, value: text, reason: "not a numeric user or group id")
        }
        return id
    }
}

/// The parts of Istio's `PROXY_CONFIG` (a ProxyConfig in JSON or YAML) the agent uses.
private struct ProxyConfigFields {
    var discoveryAddress: String?
    var terminationDrainDuration: Duration?
    var drainDuration: Duration?
    var serviceCluster: String?
    var statusPort: Int?
    var proxyAdminPort: Int?
    var concurrency: Int?
    var metadata: [String: String] = [:]
    var warnings: [String] = []
    /// The whole document, as given.
    var document: ConfigValue?

    static let used: Set<String> = ["discoveryAddress", "terminationDrainDuration", "drainDuration", "serviceCluster",
                                    "statusPort", "proxyAdminPort", "concurrency", "proxyMetadata"]

    init(_ text: String?) throws(AgentSettingsError) {
        guard let text, !text.allSatisfy({ $0 == " " || $0 == "\n" || $0 == "\t" }) else { return }
        let document: ConfigValue
        let trimmed = text.drop { $0 == " " || $0 == "\n" || $0 == "\t" }
        if trimmed.hasPrefix("{") {
            // JSON, as the injector writes it.
            do {
                document = try ConfigValue.parse(json: text)
            } catch {
                throw AgentSettingsError(variable: "PROXY_CONFIG", value: text, reason: "not valid JSON: \(error)")
            }
        } else {
            let documents: [YAMLDocument]
            do throws(YAMLError) {
                documents = try YAMLDocument.parseAll(text)
            } catch {
                throw AgentSettingsError(variable: "PROXY_CONFIG", value: text, reason: "not JSON or YAML: \(error)")
            }
            guard documents.count <= 1 else {
                throw AgentSettingsError(variable: "PROXY_CONFIG", value: text, reason: "holds \(documents.count) documents, expected one")
            }
            guard let only = documents.first else { return }
            document = only.value
        }
        self.document = document
        let root = ConfigReader(document, path: "PROXY_CONFIG")
        do throws(ConfigError) {
            let fields = try root.fields()
            for key in fields.keys.sorted() where !Self.used.contains(key) {
                warnings.append("PROXY_CONFIG.\(key): not used by capstan agent, ignored")
            }
            discoveryAddress = try root.optional("discoveryAddress")?.string()
            terminationDrainDuration = try root.optional("terminationDrainDuration")?.goDuration()
            drainDuration = try root.optional("drainDuration")?.goDuration()
            serviceCluster = try root.optional("serviceCluster")?.string()
            statusPort = try root.optional("statusPort")?.integer(in: 1...65535)
            proxyAdminPort = try root.optional("proxyAdminPort")?.integer(in: 1...65535)
            concurrency = try root.optional("concurrency")?.integer(in: 0...256)
            if concurrency == 0 { concurrency = nil }  // Istio: 0 means "as many as CPUs"; we keep our default.
            if let entries = try root.optional("proxyMetadata") {
                for (key, value) in try entries.fields() {
                    guard let text = value.stringValue else {
                        throw ConfigError(path: "PROXY_CONFIG.proxyMetadata.\(key)", message: "expected a string, found \(value.kind)")
                    }
                    metadata[key] = text
                }
            }
        } catch {
            throw AgentSettingsError(variable: error.path, value: Self.valueText(at: error.path, in: document),
                                     reason: error.message)
        }
    }

    /// The offending value as text, for the error.
    private static func valueText(at path: String, in root: ConfigValue) -> String? {
        var value: ConfigValue? = root
        for key in path.split(separator: ".").dropFirst() { value = value?[String(key)] }
        guard let value else { return nil }
        return value.stringValue ?? value.jsonText()
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        var text = Substring(self)
        while text.first == " " { text.removeFirst() }
        while text.last == " " { text.removeLast() }
        return String(text)
    }
}
