import ArgumentParser

/// The `capstan` executable: one binary, one subcommand per role.
@main
struct Capstan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capstan",
        abstract: "Transparent traffic interception for a service mesh on Linux.",
        subcommands: [InitCommandHelp.self, StatusCommand.self, ProxyCommand.self]
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
