import Foundation

/// Runs a tool we did not write (openssl) to completion with posix_spawn and keeps what it printed.
enum ExternalTool {
    struct Result: CustomStringConvertible {
        var status: Int32
        var output: String
        var description: String { "exit \(status): \(output)" }
    }

    /// Runs `arguments[0]` (looked up in PATH) with standard output and error captured together.
    static func run(_ arguments: [String], scratch: Scratch) throws -> Result {
        let outputPath = scratch.file("tool-output-\(UUID().uuidString)")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        let spawned = posix_spawnp(&pid, arguments[0], &actions, nil, argv, environ)
        guard spawned == 0 else { throw ScratchError("cannot run \(arguments[0]): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw ScratchError("waitpid \(pid): errno \(errno)") }
        }
        let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        let exited = status & 0x7f == 0
        return Result(status: exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), output: output)
    }

    /// `openssl` with `arguments`, which must succeed.
    @discardableResult
    static func openssl(_ arguments: [String], scratch: Scratch) throws -> String {
        let result = try run(["openssl"] + arguments, scratch: scratch)
        guard result.status == 0 else { throw ScratchError("openssl \(arguments.joined(separator: " ")) failed: \(result)") }
        return result.output
    }
}
