import CAllocator
import FoundationEssentials
import Identity
import Logging
import Synchronization
import XDS

/// `capstan control-plane`: reads a directory of Istio-style YAML, serves it to proxies over ADS, and
/// pushes a new version when the files change. A directory that does not read cleanly is reported
/// with file, document and field, and the last good configuration keeps being served.
public final class ControlPlaneServer: Sendable {
    public let directory: String
    /// Where Gateways' `credentialName` secrets are read (``GatewaySecrets``); nil: none can be named.
    public let secretsDirectory: String?
    public let ads: ADSServer
    private let store = MeshSnapshotStore()
    /// The credentials the Gateways named at the last good read, and, while ``run(at:listening:)`` runs,
    /// a watcher on each one's directory, so that a certificate rotated in place (a Kubernetes secret
    /// volume swaps its `..data` link inside that directory) is pushed too.
    private let credentials = Mutex<(names: Set<String>, watchers: [String: ConfigDirectoryWatcher]?)>(([], nil))
    private let generator: ProxyConfigGenerator
    private let logger: Logger

    /// Reads `directory` once; fails with every problem found if it is not valid, so that a control
    /// plane never starts by serving less than the proxies already have. `trustDomain` is the one the
    /// SPIFFE IDs of the mesh's workloads are in.
    public init(directory: String, secretsDirectory: String? = nil, trustDomain: String = "cluster.local",
                logger: Logger) throws(MeshConfigProblems) {
        self.directory = directory
        self.secretsDirectory = secretsDirectory
        do {
            self.generator = try ProxyConfigGenerator(trustDomain: trustDomain)
        } catch {
            throw MeshConfigProblems(problems: [MeshConfigProblem(origin: "--trust-domain", resource: nil, field: "", message: error.description)])
        }
        self.logger = logger
        self.ads = ADSServer(source: store, logger: logger)
        let reading = MeshConfigReader.read(directory: directory)
        for warning in reading.warnings { logger.warning("\(warning)") }
        guard let config = reading.config else { throw MeshConfigProblems(problems: reading.problems) }
        let secrets = GatewaySecrets.read(for: config, directory: secretsDirectory)
        guard secrets.problems.isEmpty else { throw MeshConfigProblems(problems: secrets.problems) }
        do {
            var resources = try generator.resources(for: config)
            resources.gatewaySecrets = secrets.secrets
            store.update(resources)
            credentials.withLock { $0.names = Set(secrets.secrets.credentials.keys) }
        } catch {
            throw MeshConfigProblems(problems: [MeshConfigProblem(origin: directory, resource: nil, field: "", message: "\(error)")])
        }
        logger.info("configuration loaded", metadata: [
            "directory": "\(directory)", "files": "\(reading.files)", "version": "\(store.version)",
            "services": "\(config.serviceEntries.count)", "workloads": "\(config.workloadEntries.count)",
            "gateways": "\(config.gateways.count)", "credentials": "\(secrets.secrets.credentials.count)",
            // Whether some exportTo makes sidecars' resources differ by namespace (made per namespace on request).
            "sidecar_resources": "\(config.dependsOnNamespace ? "per namespace" : "shared")",
        ])
    }

    /// The configuration version, counted from 1 at start.
    public var version: Int { store.version }

    /// Where the control plane serves: plaintext ADS (Istio's 15010), and, with a CA, ADS and the CA over
    /// TLS (Istio's 15012) with a serving certificate from that CA.
    public struct Endpoints: Sendable {
        public var plaintext: [XDSServerAddress]
        public var secure: [XDSServerAddress]
        public var certificates: CertificateService?

        public init(plaintext: [XDSServerAddress], secure: [XDSServerAddress] = [], certificates: CertificateService? = nil) {
            self.plaintext = plaintext
            self.secure = secure
            self.certificates = certificates
        }
    }

    /// Serves `endpoints` and watches the directory until the task is cancelled.
    public func run(at endpoints: Endpoints, listening: @escaping @Sendable (XDSServerAddress, String) -> Void = { _, _ in }) async throws {
        // A push writes every stream a response the size of the mesh's configuration, hundreds of them at
        // once; the buffers live until the proxy has read them. Mapped apart, they go back to the system
        // when freed, instead of staying in the heap as the largest burst left it.
        _ = capstan_map_large_allocations(Self.largeAllocation)
        let watcher = try ConfigDirectoryWatcher(directory: directory) { [self] in reload() }
        defer { watcher.stop() }
        // A secret added, replaced or removed (its directory, at the top level) is read again too.
        let secretsWatcher = try secretsDirectory.map { directory throws(WatchError) in
            try ConfigDirectoryWatcher(directory: directory) { [self] in reload() }
        }
        defer { secretsWatcher?.stop() }
        credentials.withLock { $0.watchers = [:] }
        watchCredentials()
        defer {
            let watchers = credentials.withLock { credentials in
                defer { credentials.watchers = nil }
                return credentials.watchers ?? [:]
            }
            for watcher in watchers.values { watcher.stop() }
        }
        var secure: GRPCEndpoint.ServerCredentials?
        if let certificates = endpoints.certificates, !endpoints.secure.isEmpty {
            let issued = try certificates.authority.issueServingCertificate(for: Self.servingNames(endpoints.secure),
                                                                            lifetime: CertificateAuthority.defaultMaximumLifetime)
            secure = .init(certificateChainPEM: issued.chainPEM, privateKeyPEM: issued.key.pkcs8PEM)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for address in endpoints.plaintext {
                group.addTask { try await GRPCEndpoint(address: address).serve([self.ads]) { listening(address, $0) } }
            }
            if let secure, let certificates = endpoints.certificates {
                for address in endpoints.secure {
                    group.addTask {
                        try await GRPCEndpoint(address: address, tls: secure).serve([self.ads, certificates]) { listening(address, $0) }
                    }
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// The size from which an allocation is mapped apart (glibc's initial threshold, kept fixed).
    static let largeAllocation = 128 * 1024

    /// Reads the directory again and pushes what changed; keeps the last good version on a problem.
    public func reload() {
        let started = ContinuousClock.now
        let reading = MeshConfigReader.read(directory: directory)
        guard let config = reading.config else {
            for problem in reading.problems { logger.error("invalid configuration, still serving version \(store.version): \(problem)") }
            return
        }
        let secrets = GatewaySecrets.read(for: config, directory: secretsDirectory)
        guard secrets.problems.isEmpty else {
            for problem in secrets.problems { logger.error("invalid configuration, still serving version \(store.version): \(problem)") }
            return
        }
        let changed: [XDSResourceType]
        do {
            var resources = try generator.resources(for: config)
            resources.gatewaySecrets = secrets.secrets
            changed = store.update(resources)
            credentials.withLock { $0.names = Set(secrets.secrets.credentials.keys) }
            watchCredentials()
        } catch {
            logger.error("cannot build resources, still serving version \(store.version): \(error)")
            return
        }
        guard !changed.isEmpty else { return }
        ads.push()
        logger.info("pushed", metadata: [
            "version": "\(store.version)", "changed": "\(changed.map(\.service).joined(separator: ","))",
            "streams": "\(ads.stats.streamsActive.load(ordering: .relaxed))", "build": "\(ContinuousClock.now - started)",
        ])
    }
}

extension ControlPlaneServer {
    /// Watches the directory of every credential in use that is not watched yet (while running).
    private func watchCredentials() {
        guard let secretsDirectory else { return }
        let fresh = credentials.withLock { credentials -> [String] in
            guard let watchers = credentials.watchers else { return [] }
            return credentials.names.filter { watchers[$0] == nil }.sorted()
        }
        for name in fresh {
            let path = "\(secretsDirectory.hasSuffix("/") ? String(secretsDirectory.dropLast()) : secretsDirectory)/\(name)"
            do {
                let watcher = try ConfigDirectoryWatcher(directory: path) { [self] in reload() }
                let kept = credentials.withLock { credentials -> Bool in
                    guard credentials.watchers != nil, credentials.watchers?[name] == nil else { return false }
                    credentials.watchers?[name] = watcher
                    return true
                }
                if !kept { watcher.stop() }
            } catch {
                logger.warning("a change to secret \(name) will be read at the next reload only: \(error)")
            }
        }
    }

    /// What is wrong with the TLS secrets `config`'s Gateways name, read from `secretsDirectory` as the
    /// server reads them (for `--validate`); empty when all are there and fit together.
    public static func secretProblems(for config: MeshConfig, secretsDirectory: String) -> [MeshConfigProblem] {
        GatewaySecrets.read(for: config, directory: secretsDirectory).problems
    }

    /// istiod's names, plus the address the secure port is bound to when it is a specific one (agents
    /// in VMs and tests dial an IP address and verify it).
    static func servingNames(_ addresses: [XDSServerAddress]) -> [String] {
        var names = ["istiod.istio-system.svc", "istiod"]
        for case .tcp(let host, _) in addresses where !["0.0.0.0", "::", ""].contains(host) && !names.contains(host) {
            names.append(host)
        }
        return names
    }
}

/// Everything wrong with a configuration directory.
public struct MeshConfigProblems: Error, CustomStringConvertible {
    public var problems: [MeshConfigProblem]
    public var description: String { problems.map(\.description).joined(separator: "\n") }
}
