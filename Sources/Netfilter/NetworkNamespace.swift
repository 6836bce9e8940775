import CMNL
#if canImport(Glibc)
import Glibc
#endif

/// A failure to open or enter a network namespace.
public struct NetworkNamespaceError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let operation: String
    public let errno: Int32

    public var description: String {
        "network namespace \(path): \(operation) failed: \(String(cString: strerror(errno)))"
    }
}

/// A network namespace, named by a path such as `/var/run/netns/NAME` or `/proc/PID/ns/net`.
///
/// Work that must happen inside the namespace (libnftables contexts, netlink and test sockets) runs
/// through ``run(_:)``, on a dedicated thread that joins the namespace and ends afterwards, so no other
/// work of the process ever runs in a namespace by accident.
public struct NetworkNamespace: Sendable, Hashable, CustomStringConvertible {
    /// The namespace file, or `nil` for the namespace the process already runs in.
    public let path: String?

    /// The caller's own namespace: work runs on the calling thread.
    public static let current = NetworkNamespace(path: nil)

    public init(path: String?) {
        self.path = path
    }

    public var description: String { path ?? "current network namespace" }

    /// Why `path` cannot name a network namespace (missing, or not a namespace file), or nil if it can.
    public static func problem(with path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return String(cString: strerror(errno)) }
        defer { close(fd) }
        var filesystem = statfs()
        // Namespace files live on nsfs ("nsfs" in ASCII); a bind mount of one keeps that.
        guard fstatfs(fd, &filesystem) == 0, filesystem.f_type == 0x6e73_6673 else {
            return "not a network namespace (expected a file such as /var/run/netns/NAME or /proc/PID/ns/net)"
        }
        return nil
    }

    /// Runs `body` inside this namespace and returns its result.
    public func run<Result>(_ body: @Sendable () throws -> Result) throws -> Result {
        guard let path else { return try body() }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw NetworkNamespaceError(path: path, operation: "open", errno: errno)
        }
        defer { close(fd) }

        return try withoutActuallyEscaping(body) { body in
            try runOnNamespaceThread(fd: fd, path: path, body)
        }
    }

    private func runOnNamespaceThread<Result>(fd: Int32, path: String, _ body: @escaping () throws -> Result) throws -> Result {
        let job = NamespaceJob(fd: fd, path: path, body: body)
        var thread = pthread_t()
        let retained = Unmanaged.passRetained(job)
        let created = pthread_create(&thread, nil, { raw in
            let job = Unmanaged<AnyObject>.fromOpaque(raw!).takeRetainedValue() as! NamespaceJobRunner
            job.runInNamespace()
            return nil
        }, retained.toOpaque())
        guard created == 0 else {
            retained.release()
            throw NetworkNamespaceError(path: path, operation: "pthread_create", errno: created)
        }
        pthread_join(thread, nil)
        return try job.result!.get()
    }
}

private protocol NamespaceJobRunner: AnyObject {
    func runInNamespace()
}

/// One piece of work handed to a namespace thread; the joining thread reads `result` after join.
private final class NamespaceJob<Result>: NamespaceJobRunner, @unchecked Sendable {
    let fd: Int32
    let path: String
    let body: () throws -> Result
    var result: Swift.Result<Result, any Error>?

    init(fd: Int32, path: String, body: @escaping () throws -> Result) {
        self.fd = fd
        self.path = path
        self.body = body
    }

    func runInNamespace() {
        guard capstan_enter_network_namespace(fd) == 0 else {
            result = .failure(NetworkNamespaceError(path: path, operation: "setns", errno: errno))
            return
        }
        result = Swift.Result { try body() }
    }
}
