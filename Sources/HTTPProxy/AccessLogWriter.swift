#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// One access log file (or `/dev/stdout`, `/dev/stderr`), shared by every listener that names it. Lines
/// are rendered into a buffer of the event loop that served the request (no lock per request), and
/// each loop's buffer is handed to one background thread, which writes it with `write(2)`, every
/// second (Envoy's `file_flush_interval`) or as soon as it passes 64 KiB. No event loop ever waits on
/// the file. Opened with `O_APPEND|O_CREAT`, mode 0644.
public final class AccessLogWriter: Sendable {
    public let path: String
    private let descriptor: CInt
    private let closesDescriptor: Bool
    /// One thread: writes go out in the order they were handed over.
    private let thread: NIOThreadPool
    private let buffers = ThreadSpecificVariable<LoopBuffer>()
    private let loops = NIOLockedValueBox<[LoopBuffer]>([])

    /// Envoy's `file_flush_interval` default, and the size at which a buffer goes out at once.
    public static let flushInterval = TimeAmount.seconds(1)
    public static let flushSize = 64 * 1024

    /// Lines waiting on one event loop; touched only on that loop's thread.
    final class LoopBuffer: @unchecked Sendable {
        var bytes: [UInt8] = []
        let eventLoop: (any EventLoop)?
        var timer: RepeatedTask?
        init(eventLoop: (any EventLoop)?) { self.eventLoop = eventLoop }
    }

    /// Opens `path` for appending (`/dev/stdout` and `/dev/stderr` are the process's own descriptors).
    /// Throws the `errno` of a failed `open`.
    public init(path: String, thread: NIOThreadPool) throws {
        self.path = path
        self.thread = thread
        switch path {
        case "/dev/stdout":
            descriptor = STDOUT_FILENO
            closesDescriptor = false
        case "/dev/stderr":
            descriptor = STDERR_FILENO
            closesDescriptor = false
        default:
            let opened = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            guard opened >= 0 else { throw IOError(errnoCode: errno, reason: "open(\(path))") }
            descriptor = opened
            closesDescriptor = true
        }
    }

    deinit {
        if closesDescriptor { close(descriptor) }
    }

    /// Renders `entry` in `format` into the calling event loop's buffer. Called on the request's event loop.
    public func log(_ entry: AccessLogEntry, format: AccessLogFormat) {
        let buffer = currentBuffer()
        format.render(entry, into: &buffer.bytes)
        if buffer.bytes.count >= Self.flushSize || buffer.eventLoop == nil { handOff(buffer) }
    }

    /// The calling thread's buffer, made (with its flush timer) the first time this thread logs here.
    private func currentBuffer() -> LoopBuffer {
        if let buffer = buffers.currentValue { return buffer }
        let eventLoop = MultiThreadedEventLoopGroup.currentEventLoop
        let buffer = LoopBuffer(eventLoop: eventLoop)
        buffers.currentValue = buffer
        if let eventLoop {
            loops.withLockedValue { $0.append(buffer) }
            buffer.timer = eventLoop.scheduleRepeatedTask(initialDelay: Self.flushInterval, delay: Self.flushInterval) { [self] _ in
                handOff(buffer)
            }
        }
        return buffer
    }

    /// What `buffer` holds goes to the writing thread.
    private func handOff(_ buffer: LoopBuffer) {
        guard !buffer.bytes.isEmpty else { return }
        let bytes = buffer.bytes
        buffer.bytes.removeAll(keepingCapacity: true)
        let descriptor = descriptor
        thread.submit { _ in Self.write(bytes, to: descriptor) }
    }

    /// Hands every loop's lines to the writing thread, on each loop, and waits until they are written:
    /// for drain and exit. Not to be called on an event loop.
    public func flush() {
        for buffer in loops.withLockedValue({ $0 }) {
            guard let eventLoop = buffer.eventLoop else { continue }
            try? eventLoop.submit { [self] in handOff(buffer) }.wait()
        }
        // The thread writes in order: once this runs, everything before it is written.
        let done = ConditionLock(value: false)
        thread.submit { _ in
            done.lock()
            done.unlock(withValue: true)
        }
        if done.lock(whenValue: true, timeoutSeconds: 5) { done.unlock() }
    }

    private static func write(_ bytes: [UInt8], to descriptor: CInt) {
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Glibc.write(descriptor, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return  // the line is lost, as Envoy loses it when its file cannot be written
                }
                offset += written
            }
        }
    }
}
