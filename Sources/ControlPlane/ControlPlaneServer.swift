import FoundationEssentials
import Logging
import Synchronization
import XDS

/// `capstan control-plane`: reads a directory of Istio-style YAML, serves it to proxies over ADS, and
/// pushes a new version when the files change. A directory that does not read cleanly is reported
/// with file, document and field, and the last good configuration keeps being served.
public final class ControlPlaneServer: Sendable {
    public let directory: String
    public let ads: ADSServer
    private let store = MeshSnapshotStore()
    private let logger: Logger

    /// Reads `directory` once; fails with every problem found if it is not valid, so that a control
    /// plane never starts by serving less than the proxies already have.
    public init(directory: String, logger: Logger) throws(MeshConfigProblems) {
        self.directory = directory
        self.logger = logger
        self.ads = ADSServer(source: store, logger: logger)
        let reading = MeshConfigReader.read(directory: directory)
        for warning in reading.warnings { logger.warning("\(warning)") }
        guard let config = reading.config else { throw MeshConfigProblems(problems: reading.problems) }
        do {
            store.update(try ProxyConfigGenerator.resources(for: config))
        } catch {
            throw MeshConfigProblems(problems: [MeshConfigProblem(origin: directory, resource: nil, field: "", message: "\(error)")])
        }
        logger.info("configuration loaded", metadata: [
            "directory": "\(directory)", "files": "\(reading.files)", "version": "\(store.version)",
            "services": "\(config.serviceEntries.count)", "workloads": "\(config.workloadEntries.count)",
        ])
    }

    /// The configuration version, counted from 1 at start.
    public var version: Int { store.version }

    /// Serves ADS at `addresses` and watches the directory until the task is cancelled.
    public func run(at addresses: [XDSServerAddress], listening: @escaping @Sendable (XDSServerAddress, String) -> Void = { _, _ in }) async throws {
        let watcher = try ConfigDirectoryWatcher(directory: directory) { [self] in reload() }
        defer { watcher.stop() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for address in addresses {
                group.addTask { try await self.ads.serve(at: address) { listening(address, $0) } }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// Reads the directory again and pushes what changed; keeps the last good version on a problem.
    public func reload() {
        let started = ContinuousClock.now
        let reading = MeshConfigReader.read(directory: directory)
        guard let config = reading.config else {
            for problem in reading.problems { logger.error("invalid configuration, still serving version \(store.version): \(problem)") }
            return
        }
        let changed: [XDSResourceType]
        do {
            changed = store.update(try ProxyConfigGenerator.resources(for: config))
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

/// Everything wrong with a configuration directory.
public struct MeshConfigProblems: Error, CustomStringConvertible {
    public var problems: [MeshConfigProblem]
    public var description: String { problems.map(\.description).joined(separator: "\n") }
}
