import FoundationEssentials
import GRPCCore
import DNS
import Identity
import Logging
import XDS
#if canImport(Glibc)
import Glibc
#endif

/// `capstan agent`, the pilot-agent of a pod: brings the sidecar up in DESIGN.md's order (status
/// server, first certificate, SDS and the xDS relay, the proxy child with a generated bootstrap), reports
/// readiness, and takes it down without breaking the application's shutdown.
public final class Agent: Sendable {
    /// How the agent ended; the command turns it into the exit status.
    public enum Ending: Sendable, Equatable {
        /// SIGTERM's drain (or `/quitquitquit`) finished and the proxy was stopped: exit 0.
        case stopped
        /// The proxy kept crashing (more than the restart policy allows): exit non-zero.
        case proxyGaveUp(String)
        /// Something the agent needs could not start (a port, a socket, the proxy binary).
        case failedToStart(String)
    }

    public let settings: AgentSettings
    private let proxyExecutable: String
    private let proxyArguments: [String]
    private let restartPolicy: ProxyChild.RestartPolicy
    private let logger: Logger
    private let secrets = WorkloadSecrets()
    private let sds: ADSServer
    /// Finished by SIGTERM or `/quitquitquit`; the run waits for it to end.
    private let stopRequests = AsyncStream.makeStream(of: Void.self)

    /// `proxyExecutable` is started with `proxy --config BOOTSTRAP` plus `proxyArguments` (normally this
    /// same binary, as pilot-agent starts Envoy).
    public init(settings: AgentSettings, proxyExecutable: String, proxyArguments: [String] = [],
                restartPolicy: ProxyChild.RestartPolicy = .init(), logger: Logger) {
        self.settings = settings
        self.proxyExecutable = proxyExecutable
        self.proxyArguments = proxyArguments
        self.restartPolicy = restartPolicy
        self.logger = logger
        sds = ADSServer(source: secrets, logger: logger)
    }

    /// Runs until SIGTERM's drain completes (`terminate()`), `/quitquitquit`, or the proxy gives up.
    public func run() async -> Ending {
        let admin = ProxyAdminClient(port: settings.proxyAdminPort)
        let relay: XDSRelay
        let bootstrapPath: String
        let authority: CertificateAuthorityClient
        // ISTIO_META_DNS_CAPTURE: the DNS proxy on :15053, fed by NDS through the relay.
        let dnsProxy: AgentDNSProxy? = AgentDNSProxy.isEnabled(settings)
            ? AgentDNSProxy(resolvConf: ResolverConfiguration.text(atPath: ResolverConfiguration.defaultPath) ?? "",
                            proxyNamespace: settings.podNamespace, proxyDomain: "\(settings.podNamespace).svc.cluster.local")
            : nil
        let nameTableSink: (@Sendable (Istio_Networking_Nds_V1_NameTable) -> Void)? = dnsProxy.map { proxy in
            { @Sendable [logger] table in
                for refusal in proxy.update(table) { logger.warning("NDS: \(refusal)") }
            }
        }
        do {
            try SocketDirectory.prepare(settings.socketDirectory)
            // The token is read afresh for every upstream stream; a failure fails that attempt, which is retried.
            relay = try XDSRelay(upstream: settings.discoveryAddress, security: try controlPlaneSecurity(rootPath: settings.xdsRootCertPath),
                                 credentials: { [settings] in
                                     try CertificateAuthorityClient.credentials(tokenPath: settings.tokenPath, clusterID: settings.clusterID)
                                 },
                                 logger: logger, nameTables: nameTableSink)
            // An unreadable root is a start failure, never a reason to talk to the CA in plaintext.
            authority = CertificateAuthorityClient(address: settings.caAddress, security: try controlPlaneSecurity(rootPath: settings.caRootCertPath),
                                                   tokenPath: settings.tokenPath, clusterID: settings.clusterID)
            let metadata = NodeMetadata(settings: settings)
            for warning in metadata.warnings { logger.warning("node metadata: \(warning)") }
            bootstrapPath = try ProxyBootstrap(settings: settings, metadata: metadata).write(toDirectory: settings.socketDirectory)
        } catch {
            return .failedToStart("\(error)")
        }
        let provisioner = CertificateProvisioner(
            settings: .init(identity: settings.identity, keyAlgorithm: settings.keyAlgorithm,
                            requestedLifetime: settings.secretTTL, graceRatio: settings.secretGracePeriodRatio),
            authority: authority, logger: logger)
        let child = ProxyChild(command: .init(executable: proxyExecutable,
                                              arguments: ["proxy", "--config", bootstrapPath] + proxyArguments),
                               policy: restartPolicy)
        let drain = DrainCoordinator(admin: admin, child: child, timing: .init(settings: settings),
                                     log: { [logger] in logger.info("\($0)") })

        // 1. Status server: up first, so kubelet's probes get "not ready" (not refused) during start.
        let readiness: @Sendable () async -> Readiness = {
            let status = relay.status
            return Readiness(proxyState: try? await admin.state(),
                             listenersAccepted: status.accepted[.listener] != nil,
                             clustersAccepted: status.accepted[.cluster] != nil,
                             certificateExpiry: provisioner.current?.notAfter,
                             upstreamConnected: status.upstreamConnected,
                             draining: drain.isDraining)
        }
        let status: StatusServer
        do {
            status = try await StatusServer.start(
                host: settings.statusBindAddress, statusPort: settings.statusPort, readinessPort: settings.readinessPort,
                sources: .init(readiness: readiness, proxyRestarts: { child.restarts },
                               proxyMetrics: { try? await admin.prometheusText() },
                               quit: { [self] in await drain.quit(); requestStop() },
                               drain: { await drain.drainInbound() }))
        } catch {
            return .failedToStart("\(error)")
        }

        if let dnsProxy {
            do {
                try await dnsProxy.start()
                logger.info("DNS proxy listening", metadata: ["address": "127.0.0.1:\(AgentDNSProxy.port)",
                                                              "upstreams": "\(dnsProxy.upstreams.map(\.description))"])
            } catch {
                await status.close()
                return .failedToStart("DNS proxy on 127.0.0.1:\(AgentDNSProxy.port): \(error)")
            }
        }

        let ending: Ending = await withTaskGroup(of: Ending?.self) { group in
            // 2. Identity: the first certificate, then rotation; each one goes to SDS and OUTPUT_CERTS.
            let firstCertificate = AsyncStream.makeStream(of: Void.self)
            group.addTask { [self] in
                await provisioner.run { event in
                    self.publish(event)
                    firstCertificate.continuation.yield()
                }
                return nil
            }
            // 3. SDS and the xDS relay on the pod's unix sockets.
            // The agent runs as the proxy's uid (the command becomes it first), so the sockets are the proxy's to use.
            group.addTask { [self] in
                do {
                    try await GRPCEndpoint(address: .unixSocket(path: settings.sdsSocketPath)).serve([sds.secretDiscovery])
                    return nil
                } catch {
                    return .failedToStart("SDS socket \(settings.sdsSocketPath): \(error)")
                }
            }
            group.addTask { [settings] in
                do {
                    try await relay.run(serving: GRPCEndpoint(address: .unixSocket(path: settings.xdsSocketPath)))
                    return nil
                } catch {
                    return .failedToStart("xDS socket \(settings.xdsSocketPath): \(error)")
                }
            }
            // 4. The proxy, once there is a certificate to give it.
            group.addTask { [self] in
                for await _ in firstCertificate.stream { break }
                guard !Task.isCancelled else { return nil }
                do {
                    try child.start()
                } catch {
                    return .failedToStart("cannot start the proxy: \(error)")
                }
                logger.info("proxy started", metadata: ["pid": "\(child.pid.map(String.init) ?? "-")", "bootstrap": "\(bootstrapPath)"])
                let outcome = await child.finished()
                if case .gaveUp = outcome { return .proxyGaveUp(outcome.description) }
                return nil
            }
            group.addTask { [self] in
                for await event in child.events { logger.info("proxy: \(event)") }
                return nil
            }
            // 5. SIGTERM or /quitquitquit.
            group.addTask { [self] in
                await waitForStop()
                if !Task.isCancelled {
                    let report = await drain.drain()
                    logger.info("drained", metadata: ["ending": "\(report.ending)", "after": "\(report.drainedFor)"])
                }
                return .stopped
            }
            var ending: Ending = .stopped
            for await result in group {
                guard let result else { continue }
                ending = result
                break
            }
            group.cancelAll()
            requestStop()
            return ending
        }
        _ = await child.stop(grace: .seconds(5))
        await dnsProxy?.stop()
        await status.close()
        unlink(settings.xdsSocketPath)
        unlink(settings.sdsSocketPath)
        return ending
    }

    /// SIGTERM: drain, then stop (the run returns once the drain is done).
    public func terminate() {
        requestStop()
    }

    private func requestStop() {
        stopRequests.continuation.finish()
    }

    private func waitForStop() async {
        for await _ in stopRequests.stream {}
    }

    /// A new certificate (or its expiry) reaches the proxy over SDS and the OUTPUT_CERTS files.
    private func publish(_ event: CertificateProvisioner.Event) {
        let certificate: WorkloadCertificate? = if case .issued(let certificate) = event { certificate } else { nil }
        do {
            let version = try secrets.serve(certificate)
            sds.push()
            logger.debug("SDS version \(version)")
        } catch {
            logger.error("cannot serve the certificate over SDS: \(error)")
        }
        if let certificate, let directory = settings.outputCertsDirectory {
            do {
                try CertificateFiles(directory: directory).write(certificate)
            } catch {
                logger.error("cannot write OUTPUT_CERTS", metadata: ["directory": "\(directory)", "error": "\(error)"])
            }
        }
    }

    /// TLS to the control plane verified against `rootPath`, or plaintext when asked for.
    private func controlPlaneSecurity(rootPath: String) throws -> XDSTransportSecurity {
        if settings.plaintextControlPlane { return .plaintext }
        return .tls(trustRootsPEM: try CredentialFile.read(rootPath), serverName: nil)
    }
}

