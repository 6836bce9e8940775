import ArgumentParser
import Dispatch

/// The `capstan` executable: one binary, one subcommand per role.
@main
struct Capstan: ParsableCommand {
    /// What `capstan --version` prints (and what an image's check reads).
    static let version = "0.5.0-dev"

    static let configuration = CommandConfiguration(
        commandName: "capstan",
        abstract: "Transparent traffic interception for a service mesh on Linux.",
        version: version,
        subcommands: [InitCommandHelp.self, StatusCommand.self, AgentCommand.self, ProxyCommand.self, WaitCommand.self,
                      ControlPlaneCommand.self, NodeAgentCommand.self,
                      CNICommandHelp.self]
    )

    /// Usage errors exit 2 (as istio-iptables and most Unix tools do), not ArgumentParser's 64.
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        // `init` runs at every pod start: its own fast, istio-iptables compatible parser (see InitFlags).
        if arguments.first == "init" {
            Glibc.exit(InitCommand.main(Array(arguments.dropFirst())))
        }
        // The CNI plugin: run by the container runtime for every pod, by the name its configuration uses.
        if CommandLine.arguments.first?.split(separator: "/").last == "capstan-cni" 
            || (arguments.first == "cni" && !arguments.contains("--help") && !arguments.contains("-h")) {
            Glibc.exit(CNICommand.main())
        }
        do {
            let command = try parseAsRoot()
            if let command = command as? any AsyncParsableCommand {
                runAsync(command)
            }
            var synchronous = command
            try synchronous.run()
        } catch {
            exitReportingUsage(error)
        }
    }

    /// Runs an async subcommand (the node agent) on the concurrency runtime; never returns.
    private static func runAsync(_ command: any AsyncParsableCommand) -> Never {
        nonisolated(unsafe) var command = command
        Task {
            do {
                try await command.run()
                Glibc.exit(0)
            } catch {
                exitReportingUsage(error)
            }
        }
        dispatchMain()
    }

    private static func exitReportingUsage(_ error: any Error) -> Never {
        if exitCode(for: error) == .validationFailure {
            printError(fullMessage(for: error))
            Self.exit(withError: ExitCode(2))
        }
        Self.exit(withError: error)
    }
}

/// `capstan cni --help`: the plugin takes no arguments (see ``CNICommand``), but deserves a help page.
struct CNICommandHelp: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cni",
        abstract: "The CNI plugin (installed as capstan-cni): asks the node agent to capture each new pod.",
        discussion: """
            Run by the container runtime with CNI_COMMAND (ADD, DEL, CHECK, VERSION, STATUS, GC), the other \
            CNI_* variables, and the network configuration on standard input. It is chained after the \
            plugins that set up the pod's interface and returns their result unchanged. Configuration fields: \
            agent_socket (default /var/run/capstan/cni.sock), agent_timeout (default "5s") and \
            exclude_namespaces. `capstan node-agent --install-cni` installs and chains it.
            """
    )
}

/// Writes a line to standard error.
func printError(_ message: String) {
    writeLine(message, to: 2)
}

/// Writes a line straight to a file descriptor: unlike `print`, no dynamic casts (which cost a scan of
/// every protocol conformance in the binary the first time, on `init`'s pod-start path).
func writeLine(_ message: String, to fd: Int32 = 1) {
    var bytes = Array(message.utf8)
    bytes.append(UInt8(ascii: "\n"))
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written > 0 else { return }
        offset += written
    }
}

#if canImport(Glibc)
import Glibc
#endif
