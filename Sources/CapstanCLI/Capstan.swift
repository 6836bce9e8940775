import ArgumentParser

/// The `capstan` executable: one binary, one subcommand per role.
@main
struct Capstan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capstan",
        abstract: "Transparent traffic interception for a service mesh on Linux.",
        subcommands: [InitCommandHelp.self, StatusCommand.self]
    )

    /// Usage errors exit 2 (as istio-iptables and most Unix tools do), not ArgumentParser's 64.
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        // `init` runs at every pod start: its own fast, istio-iptables compatible parser (see InitFlags).
        if arguments.first == "init" {
            Glibc.exit(InitCommand.main(Array(arguments.dropFirst())))
        }
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                printError(fullMessage(for: error))
                Self.exit(withError: ExitCode(2))
            }
            Self.exit(withError: error)
        }
    }
}

/// Writes a line to standard error.
func printError(_ message: String) {
    var stderr = StandardError()
    print(message, to: &stderr)
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        let bytes = Array(string.utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

#if canImport(Glibc)
import Glibc
#endif
