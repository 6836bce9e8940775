import HTTPEndpoints
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The node agent process: the CNI socket, the health and metrics endpoints, the repair sweep and,
/// when asked, keeping the CNI plugin installed. Runs until `stop` finishes.
public struct NodeAgentDaemon: Sendable {
    public struct Settings: Sendable {
        public var socketPath = CNIPluginConfig.defaultAgentSocket
        public var sweepInterval: Duration = .seconds(10)
        public var healthAddress = "0.0.0.0"
        /// `/healthz` and `/readyz`, as Istio's CNI agent serves them.
        public var healthPort = 8000
        /// `/metrics` in Prometheus format.
        public var metricsPort = 15014
        public var installer: CNIInstaller?
        public var installCheckInterval: Duration = .seconds(1)
        /// Take the plugin out of the CNI configuration on exit (not for upgrades in place).
        public var uninstallOnExit = true

        public init() {}
    }

    public let settings: Settings
    public let configuration: NodeAgent.Configuration
    public let logger: Logger

    public init(settings: Settings, configuration: NodeAgent.Configuration, logger: Logger) {
        self.settings = settings
        self.configuration = configuration
        self.logger = logger
    }

    public func run(until stop: @Sendable () async -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let workers = NIOThreadPool(numberOfThreads: 4)
        workers.start()
        let agent = NodeAgent(configuration: configuration, workers: workers, logger: logger)
        var channels: [any Channel] = []
        do {
            try await serve(agent: agent, group: group, channels: &channels, until: stop)
        } catch {
            await shutDown(agent, channels, workers, group)
            throw error
        }
        await shutDown(agent, channels, workers, group)
    }

    private func shutDown(_ agent: NodeAgent, _ channels: [any Channel], _ workers: NIOThreadPool,
                          _ group: MultiThreadedEventLoopGroup) async {
        for channel in channels { try? await channel.close() }
        await agent.shutdown()
        try? await workers.shutdownGracefully()
        try? await group.shutdownGracefully()
    }

    private func serve(agent: NodeAgent, group: MultiThreadedEventLoopGroup, channels: inout [any Channel],
                       until stop: @Sendable () async -> Void) async throws {
        let ready = NIOLockedValueBox(false)
        try await agent.restore()
        channels.append(try await NodeAgentSocket.bind(path: settings.socketPath, agent: agent, group: group))
        var health = EndpointRoutes()
        health.get("/healthz") { _ in EndpointResponse(.ok, "OK\n") }
        health.get("/readyz") { _ in
            ready.withLockedValue { $0 } ? EndpointResponse(.ok, "OK\n") : EndpointResponse(.serviceUnavailable, "not ready\n")
        }
        var metrics = EndpointRoutes()
        metrics.get("/metrics") { _ in .prometheus(agent.metrics.prometheusText) }
        channels.append(try await EndpointServer.bind(host: settings.healthAddress, port: settings.healthPort, group: group, routes: health).get())
        channels.append(try await EndpointServer.bind(host: settings.healthAddress, port: settings.metricsPort, group: group, routes: metrics).get())
        logger.info("node agent listening", metadata: ["socket": "\(settings.socketPath)", "health": ":\(settings.healthPort)",
                                                       "metrics": ":\(settings.metricsPort)"])

        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: settings.sweepInterval)
                    await agent.sweep()
                }
            }
            if let installer = settings.installer {
                tasks.addTask { try await keepInstalled(installer, agent: agent, ready: ready) }
            } else {
                ready.withLockedValue { $0 = true }
            }
            await stop()
            tasks.cancelAll()
        }
        if let installer = settings.installer, settings.uninstallOnExit {
            for change in (try? installer.uninstall()) ?? [] { logger.info("\(change)") }
        }
        logger.info("node agent stopped")
    }

    /// Installs the plugin and re-installs it whenever something removes it.
    private func keepInstalled(_ installer: CNIInstaller, agent: NodeAgent, ready: NIOLockedValueBox<Bool>) async throws {
        var lastProblem: String?
        while !Task.isCancelled {
            do {
                for change in try installer.install() { logger.notice("\(change)") }
                agent.metrics.setCNIInstalled(true)
                ready.withLockedValue { $0 = true }
                lastProblem = nil
            } catch {
                agent.metrics.setCNIInstalled(false)
                ready.withLockedValue { $0 = false }
                if lastProblem != "\(error)" { logger.warning("CNI plugin not installed", metadata: ["reason": "\(error)"]) }
                lastProblem = "\(error)"
            }
            try await Task.sleep(for: settings.installCheckInterval)
        }
    }
}
