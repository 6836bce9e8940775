#if canImport(Glibc)
import Glibc
#endif

/// Small text files from /proc, /sys and /etc, read whole.
public enum SystemFile {
    /// The file's contents, or nil if it cannot be opened.
    public static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += chunk[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension SystemFile {
    /// Replaces `path` with `contents` atomically: a reader sees the old file or the new one, never a part.
    /// The new file has `mode` (0600 for anything secret or private). `durable` syncs it to disk before
    /// the rename, for files that must survive a power loss rather than only a process crash.
    ///
    /// Bytes, not any collection: copying a generic collection element by element across the module
    /// boundary cost the node agent 7 ms for a 20 KB state file.
    public static func replace(_ path: String, with contents: [UInt8], mode: mode_t,
                               durable: Bool = true) throws(SystemFileError) {
        try replaceAtomically(path, mode: mode, durable: durable) { fd, temporary throws(SystemFileError) in
            try writeAll(contents[...], to: fd, path: temporary)
        }
    }

    /// Writes a temporary file next to `path` with `write`, gives it `mode`, optionally syncs it, and
    /// renames it over `path`; on any failure the temporary file is removed and `path` is untouched.
    private static func replaceAtomically(_ path: String, mode: mode_t, durable: Bool,
                                          write: (Int32, String) throws(SystemFileError) -> Void) throws(SystemFileError) {
        let temporary = "\(path).tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw SystemFileError(path: temporary, operation: "create", errno: errno) }
        var failure: SystemFileError?
        do throws(SystemFileError) {
            try write(fd, temporary)
            // open() honours the umask; set the mode we were asked for.
            if fchmod(fd, mode) != 0 { throw SystemFileError(path: temporary, operation: "chmod", errno: errno) }
            if durable && fsync(fd) != 0 { throw SystemFileError(path: temporary, operation: "sync", errno: errno) }
        } catch {
            failure = error
        }
        close(fd)
        if failure == nil && rename(temporary, path) != 0 { failure = SystemFileError(path: path, operation: "rename", errno: errno) }
        if let failure {
            unlink(temporary)
            throw failure
        }
    }

    private static func writeAll(_ bytes: ArraySlice<UInt8>, to fd: Int32, path: String) throws(SystemFileError) {
        var offset = bytes.startIndex
        while offset < bytes.endIndex {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { throw SystemFileError(path: path, operation: "write", errno: errno) }
            offset += written
        }
    }

    /// Creates a directory and its parents that are missing, with `mode` for the ones it creates.
    public static func makeDirectory(_ path: String, mode: mode_t = 0o755) throws(SystemFileError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, mode) != 0 && errno != EEXIST {
                throw SystemFileError(path: prefix, operation: "mkdir", errno: errno)
            }
        }
    }
}

/// A file operation that failed: which file, what was tried and the system's reason.
public struct SystemFileError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let operation: String
    public let errno: Int32

    public init(path: String, operation: String, errno: Int32) {
        self.path = path
        self.operation = operation
        self.errno = errno
    }

    public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
}

extension SystemFile {
    /// The names in a directory (without `.` and `..`), sorted; nil if it cannot be read.
    public static func names(in directory: String) -> [String]? {
        guard let handle = opendir(directory) else { return nil }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Copies a file to `destination` atomically, with `mode`, streaming (binaries are large).
    public static func copy(_ source: String, to destination: String, mode: mode_t) throws(SystemFileError) {
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw SystemFileError(path: source, operation: "open", errno: errno) }
        defer { close(input) }
        try replaceAtomically(destination, mode: mode, durable: true) { output, temporary throws(SystemFileError) in
            var chunk = [UInt8](repeating: 0, count: 1 << 20)
            while true {
                let count = chunk.withUnsafeMutableBytes { Glibc.read(input, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                if count < 0 { throw SystemFileError(path: source, operation: "read", errno: errno) }
                if count == 0 { return }
                try writeAll(chunk[..<count], to: output, path: temporary)
            }
        }
    }

    /// The file's size, or nil if it does not exist.
    public static func size(of path: String) -> Int? {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : nil
    }
}
