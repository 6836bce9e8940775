#if canImport(Glibc)
import Glibc
#endif

/// The directory holding the agent's unix sockets (`XDS`, `SDS`) and the proxy's bootstrap: Istio's
/// `/etc/istio/proxy`, an emptyDir in a pod.
enum SocketDirectory {
    /// Creates `path` (0755) if it is missing; refuses a path that exists and is not a directory.
    static func prepare(_ path: String) throws(SocketDirectoryError) {
        var info = stat()
        if stat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFDIR else { throw SocketDirectoryError(path: path, reason: "not a directory") }
            return
        }
        guard errno == ENOENT, mkdir(path, 0o755) == 0 || errno == EEXIST else {
            throw SocketDirectoryError(path: path, reason: String(cString: strerror(errno)))
        }
    }
}

struct SocketDirectoryError: Error, CustomStringConvertible {
    let path: String
    let reason: String
    var description: String { "socket directory \(path): \(reason)" }
}
