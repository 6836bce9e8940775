import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Calls back when a file in a directory is written, created, removed or renamed (inotify), after
/// the burst of events an editor or a ConfigMap update makes has settled for `settle`.
final class ConfigDirectoryWatcher: @unchecked Sendable {
    private let descriptor: Int32
    private let source: DispatchSourceRead
    private let queue = DispatchQueue(label: "capstan.control-plane.watch")
    /// Touched only on `queue`.
    private var pending: DispatchWorkItem?

    init(directory: String, settle: DispatchTimeInterval = .milliseconds(15), onChange: @escaping @Sendable () -> Void) throws(WatchError) {
        descriptor = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard descriptor >= 0 else { throw WatchError(directory: directory, errno: errno) }
        let mask = UInt32(IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF)
        guard inotify_add_watch(descriptor, directory, mask) >= 0 else {
            let error = errno
            close(descriptor)
            throw WatchError(directory: directory, errno: error)
        }
        source = DispatchSource.makeReadSource(fileDescriptor: descriptor, queue: queue)
        let descriptor = self.descriptor
        source.setEventHandler { [unowned self] in
            // Drain the events; which file changed does not matter, the directory is read again.
            var buffer = [UInt8](repeating: 0, count: 4096)
            while read(descriptor, &buffer, buffer.count) > 0 {}
            pending?.cancel()
            let work = DispatchWorkItem(block: onChange)
            pending = work
            queue.asyncAfter(deadline: .now() + settle, execute: work)
        }
        source.setCancelHandler { close(descriptor) }
        source.resume()
    }

    func stop() {
        source.cancel()
    }
}

public struct WatchError: Error, CustomStringConvertible {
    public var directory: String
    public var errno: Int32
    public var description: String { "cannot watch \(directory): \(String(cString: strerror(errno)))" }
}
