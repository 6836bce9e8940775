import ArgumentParser
import ControlPlane
import Logging
import XDS

/// `capstan control-plane`: Istio-style YAML in a directory, served to proxies over ADS.
struct ControlPlaneCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "control-plane",
        abstract: "Serve a directory of Istio-style YAML to proxies over xDS (ADS), pushing every change.",
        discussion: """
            Reads ServiceEntry, WorkloadEntry, VirtualService (tcp routes) and DestinationRule resources from \
            the *.yaml, *.yml and *.json files of --config-dir (multi-document files are fine), and serves \
            each proxy its listeners, clusters (named outbound|PORT|SUBSET|HOST) and endpoints. Changes to the \
            directory are pushed as they happen; an invalid change is reported with file, document and field, \
            and the last good configuration keeps being served. At start, an invalid directory is an error, \
            so a restarted control plane never hands proxies less than they have. --validate DIR checks a \
            directory and exits.
            """
    )

    @Option(name: .customLong("config-dir"), help: "Directory of Istio-style YAML to serve and watch.")
    var configDir: String?
    @Option(name: .customLong("validate"), help: "Check a configuration directory, print every problem, exit non-zero if any.")
    var validateDir: String?
    @Option(name: .customLong("xds-address"), help: "Where to serve ADS: HOST:PORT or unix:///PATH (repeatable; default 0.0.0.0:15010, Istio's plaintext xDS port).")
    var xdsAddresses: [String] = []
    @Option(name: .customLong("log-level"), help: "debug, info, warning or error.")
    var logLevel = "info"

    func validate() throws {
        guard (configDir == nil) != (validateDir == nil) else {
            throw ValidationError("give either --config-dir DIR (serve) or --validate DIR (check)")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("invalid value \"\(logLevel)\" for --log-level: must be debug, info, warning or error")
        }
        for address in xdsAddresses {
            do throws(XDSAddressError) {
                _ = try XDSServerAddress(parsing: address)
            } catch {
                throw ValidationError("invalid value \"\(address)\" for --xds-address: \(error.reason)")
            }
        }
    }

    func run() async throws {
        if let validateDir {
            let reading = MeshConfigReader.read(directory: validateDir)
            for warning in reading.warnings { printError("warning: \(warning)") }
            for problem in reading.problems { printError("error: \(problem)") }
            guard reading.config != nil else { throw ExitCode(1) }
            writeLine("\(validateDir): \(reading.files) files valid")
            return
        }
        var logger = Logger(label: "capstan.control-plane")
        logger.logLevel = Logger.Level(rawValue: logLevel)!
        let server: ControlPlaneServer
        do {
            server = try ControlPlaneServer(directory: configDir!, logger: logger)
        } catch {
            for problem in error.problems { printError("capstan control-plane: error: \(problem)") }
            throw ExitCode(1)
        }
        let addresses = try (xdsAddresses.isEmpty ? ["0.0.0.0:15010"] : xdsAddresses).map { try XDSServerAddress(parsing: $0) }
        let termination = TerminationSignal()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await server.run(at: addresses) { address, bound in
                    printError("capstan control-plane: serving ADS on \(address) (\(bound)), version \(server.version)")
                }
            }
            group.addTask { await termination.wait() }
            try await group.next()
            group.cancelAll()
        }
    }
}
