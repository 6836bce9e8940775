import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// Calls back when a file in a directory is written, created, removed or renamed (inotify), once the
/// burst of events an editor or a ConfigMap update makes has settled: `settle` after an event that
/// leaves a file complete (written and closed, renamed into place, removed), and `settleWhileWriting`
/// after one that may leave it half written (created, attributes changed), so that a file being
/// copied is read when it is whole.
final class ConfigDirectoryWatcher: @unchecked Sendable {
    private let descriptor: Int32
    private let source: DispatchSourceRead
    private let queue = DispatchQueue(label: "capstan.control-plane.watch")
    /// Touched only on `queue`.
    private var pending: DispatchWorkItem?

    init(directory: String, settle: DispatchTimeInterval = .milliseconds(2), settleWhileWriting: DispatchTimeInterval = .milliseconds(50),
         onChange: @escaping @Sendable () -> Void) throws(WatchError) {
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
            // Drain the events; which file changed does not matter, the directory is read again. What the
            // last event did decides how long to wait for more.
            var buffer = [UInt8](repeating: 0, count: 4096)
            var last: UInt32 = 0
            while true {
                let count = read(descriptor, &buffer, buffer.count)
                guard count > 0 else { break }
                last = Self.lastEventMask(buffer.prefix(count))
            }
            let complete = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF)
            pending?.cancel()
            let work = DispatchWorkItem(block: onChange)
            pending = work
            queue.asyncAfter(deadline: .now() + (last & complete != 0 ? settle : settleWhileWriting), execute: work)
        }
        source.setCancelHandler { close(descriptor) }
        source.resume()
    }

    func stop() {
        source.cancel()
    }

    /// The mask of the last `inotify_event` in `events`: a 16-byte header (`wd`, `mask`, `cookie`, `len`,
    /// in the machine's byte order) and `len` bytes of name each.
    static func lastEventMask(_ events: ArraySlice<UInt8>) -> UInt32 {
        events.withUnsafeBytes { bytes in
            var mask: UInt32 = 0
            var offset = 0
            while offset + 16 <= bytes.count {
                mask = bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)
                offset += 16 + Int(bytes.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
            }
            return mask
        }
    }
}

public struct WatchError: Error, CustomStringConvertible {
    public var directory: String
    public var errno: Int32
    public var description: String { "cannot watch \(directory): \(String(cString: strerror(errno)))" }
}
