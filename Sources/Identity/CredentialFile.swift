#if canImport(Glibc)
import Glibc
#endif

/// Reads and writes the small PEM files that hold keys and certificates. A write replaces the file
/// atomically (temporary file in the same directory, then rename), so a reader never sees half a key.
public enum CredentialFile {
    /// The file's contents as UTF-8 text.
    public static func read(_ path: String) throws(CredentialFileError) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CredentialFileError(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count < 0 { throw CredentialFileError(path: path, operation: "read", errno: errno) }
            if count == 0 { break }
            // Credential files are a few KB; anything huge is not one of ours.
            guard bytes.count + count <= 1 << 20 else { throw CredentialFileError(path: path, operation: "read", errno: EFBIG) }
            bytes += chunk[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Whether something exists at `path` (without following a final symbolic link's target).
    public static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    /// Replaces `path` with `contents`, giving it `mode` whatever the umask.
    static func replace(_ path: String, with contents: String, mode: mode_t) throws(CredentialFileError) {
        // A random suffix keeps two writers in one process from sharing a temporary file.
        let temporary = "\(path).tmp-\(getpid())-\(UInt32.random(in: .min ... .max))"
        // Created 0600 and exclusive: the key is never readable by others, not even for a moment.
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CredentialFileError(path: temporary, operation: "create", errno: errno) }
        var failure: CredentialFileError?
        let bytes = Array(contents.utf8)
        var offset = 0
        while failure == nil && offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written < 0 && errno == EINTR { continue }
            if written <= 0 { failure = CredentialFileError(path: temporary, operation: "write", errno: errno) } else { offset += written }
        }
        if failure == nil && fchmod(fd, mode) != 0 { failure = CredentialFileError(path: temporary, operation: "chmod", errno: errno) }
        if close(fd) != 0 && failure == nil { failure = CredentialFileError(path: temporary, operation: "close", errno: errno) }
        if failure == nil && rename(temporary, path) != 0 { failure = CredentialFileError(path: path, operation: "rename", errno: errno) }
        if let failure {
            unlink(temporary)
            throw failure
        }
    }

    /// Creates `path` and any missing parents; the directories it creates get `mode` whatever the umask.
    /// An existing directory is left as it is.
    static func makeDirectory(_ path: String, mode: mode_t) throws(CredentialFileError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, mode) == 0 {
                if chmod(prefix, mode) != 0 { throw CredentialFileError(path: prefix, operation: "chmod", errno: errno) }
            } else if errno != EEXIST {
                throw CredentialFileError(path: prefix, operation: "mkdir", errno: errno)
            }
        }
        var info = stat()
        guard stat(path, &info) == 0 else { throw CredentialFileError(path: path, operation: "stat", errno: errno) }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw CredentialFileError(path: path, operation: "mkdir", errno: ENOTDIR) }
    }
}

/// A file operation on a key or certificate file that failed: which file, what was tried, the system's reason.
public struct CredentialFileError: Error, Equatable, Sendable, CustomStringConvertible {
    public let path: String
    public let operation: String
    public let errno: Int32

    public init(path: String, operation: String, errno: Int32) {
        self.path = path
        self.operation = operation
        self.errno = errno
    }

    /// The file is not there (as opposed to unreadable).
    public var isMissing: Bool { errno == ENOENT }

    public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
}
