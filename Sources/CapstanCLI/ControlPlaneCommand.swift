import ArgumentParser
import ControlPlane
import Identity
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

            With --ca-dir it is also the mesh's CA (Istio's IstioCertificateService): the directory holds \
            Istio's cacerts files (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem), generated as a \
            self-signed root on first start if empty. Callers are authenticated by the bearer tokens of \
            --ca-tokens (lines "TOKEN NAMESPACE/SERVICE_ACCOUNT"); a certificate names the token's identity, \
            never what the CSR asks for. The CA and ADS are served over TLS on --secure-xds-address (default \
            0.0.0.0:15012), with a certificate from the same CA for istiod.istio-system.svc.

            Gateways configure gateway proxies (router~ nodes, `capstan agent --type router`) whose labels \
            their selector matches; VirtualServices bind to them with gateways:. A server's credentialName is \
            read from --secrets-dir/NAME/{tls.crt,tls.key,ca.crt} and served over ADS as kubernetes://NAME.
            """
    )

    @Option(name: .customLong("config-dir"), help: "Directory of Istio-style YAML to serve and watch.")
    var configDir: String?
    @Option(name: .customLong("validate"), help: "Check a configuration directory, print every problem, exit non-zero if any.")
    var validateDir: String?
    @Option(name: .customLong("xds-address"), help: "Where to serve ADS: HOST:PORT or unix:///PATH (repeatable; default 0.0.0.0:15010, Istio's plaintext xDS port).")
    var xdsAddresses: [String] = []
    @Option(name: .customLong("ca-dir"), help: "Be the mesh CA, with Istio's cacerts files in this directory (generated if empty).")
    var caDirectory: String?
    @Option(name: .customLong("ca-tokens"), help: "File of \"TOKEN NAMESPACE/SERVICE_ACCOUNT\" lines: who may ask the CA for which identity.")
    var caTokens: String?
    @Option(name: .customLong("trust-domain"), help: "The mesh's trust domain (SPIFFE IDs spiffe://TRUST_DOMAIN/ns/NS/sa/SA).")
    var trustDomain = "cluster.local"
    @Option(name: .customLong("secure-xds-address"), help: "Where to serve ADS and the CA over TLS (repeatable; default 0.0.0.0:15012 with --ca-dir).")
    var secureAddresses: [String] = []
    @Option(name: .customLong("secrets-dir"), help: "Directory of TLS secrets Gateways name by credentialName: one directory per secret with tls.crt, tls.key and optional ca.crt (served over ADS as kubernetes://NAME).")
    var secretsDirectory: String?
    @Option(name: .customLong("log-level"), help: "debug, info, warning or error.")
    var logLevel = "info"

    func validate() throws {
        guard (configDir == nil) != (validateDir == nil) else {
            throw ValidationError("give either --config-dir DIR (serve) or --validate DIR (check)")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("invalid value \"\(logLevel)\" for --log-level: must be debug, info, warning or error")
        }
        for (flag, addresses) in [("--xds-address", xdsAddresses), ("--secure-xds-address", secureAddresses)] {
            for address in addresses {
                do throws(XDSAddressError) {
                    _ = try XDSServerAddress(parsing: address)
                } catch {
                    throw ValidationError("invalid value \"\(address)\" for \(flag): \(error.reason)")
                }
            }
        }
        guard (caDirectory == nil) == (caTokens == nil) else {
            throw ValidationError("--ca-dir and --ca-tokens go together: the CA needs to know its callers")
        }
        guard caDirectory != nil || secureAddresses.isEmpty else {
            throw ValidationError("--secure-xds-address needs --ca-dir: its certificate comes from the CA")
        }
        do {
            try WorkloadIdentity.checkTrustDomain(trustDomain)
        } catch {
            throw ValidationError("invalid value \"\(trustDomain)\" for --trust-domain: \(error)")
        }
    }

    func run() async throws {
        if let validateDir {
            let reading = MeshConfigReader.read(directory: validateDir)
            for warning in reading.warnings { printError("warning: \(warning)") }
            var problems = reading.problems
            // With --secrets-dir, the Gateways' credentials are checked too, as a serving control plane reads them.
            if let config = reading.config, let secretsDirectory {
                problems += ControlPlaneServer.secretProblems(for: config, secretsDirectory: secretsDirectory)
            }
            for problem in problems { printError("error: \(problem)") }
            guard reading.config != nil, problems.isEmpty else { throw ExitCode(1) }
            writeLine("\(validateDir): \(reading.files) files valid")
            return
        }
        var logger = Logger(label: "capstan.control-plane")
        logger.logLevel = Logger.Level(rawValue: logLevel)!
        let server: ControlPlaneServer
        do {
            server = try ControlPlaneServer(directory: configDir!, secretsDirectory: secretsDirectory, trustDomain: trustDomain, logger: logger)
        } catch {
            for problem in error.problems { printError("capstan control-plane: error: \(problem)") }
            throw ExitCode(1)
        }
        var endpoints = ControlPlaneServer.Endpoints(
            plaintext: try (xdsAddresses.isEmpty ? ["0.0.0.0:15010"] : xdsAddresses).map { try XDSServerAddress(parsing: $0) })
        if let caDirectory, let caTokens {
            do {
                let authority = try CertificateAuthority.loadOrGenerate(directory: caDirectory, trustDomain: trustDomain)
                let tokens = try CallerTokens(contentsOf: caTokens)
                endpoints.certificates = CertificateService(authority: authority, tokens: tokens, trustDomain: trustDomain, logger: logger)
                endpoints.secure = try (secureAddresses.isEmpty ? ["0.0.0.0:15012"] : secureAddresses).map { try XDSServerAddress(parsing: $0) }
                printError("capstan control-plane: CA for \(trustDomain) from \(caDirectory), \(tokens.count) caller token(s)")
            } catch {
                printError("capstan control-plane: error: CA: \(error)")
                throw ExitCode(1)
            }
        }
        let termination = TerminationSignal()
        let secure = Set(endpoints.secure)
        let serving = endpoints
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await server.run(at: serving) { address, bound in
                    let what = secure.contains(address) ? "ADS and the CA over TLS" : "ADS"
                    printError("capstan control-plane: serving \(what) on \(address) (\(bound)), version \(server.version)")
                }
            }
            group.addTask { await termination.wait() }
            try await group.next()
            group.cancelAll()
        }
    }
}
