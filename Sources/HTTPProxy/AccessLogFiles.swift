#if canImport(Glibc)
import Glibc
#endif
import NIOConcurrencyHelpers
import NIOPosix

/// The proxy's access log writers, one per distinct path, opened the first time a connection needs one
/// and shared by every listener that names the path; all write on one background thread.
public final class AccessLogFiles: Sendable {
    private let thread: NIOThreadPool
    private let writers = NIOLockedValueBox<[String: AccessLogWriter]>([:])
    /// Paths that could not be opened: said once on standard error, not retried per connection.
    private let failed = NIOLockedValueBox<Set<String>>([])

    public init() {
        thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
    }

    /// A connection's loggers: each configured access log with its writer (one lock per connection, none
    /// per request). A file that cannot be opened is left out.
    public func sinks(for logs: [AccessLogConfig]) -> [AccessLogSink] {
        logs.compactMap { log in writer(for: log.path).map { AccessLogSink(format: log.format, writer: $0) } }
    }

    public func writer(for path: String) -> AccessLogWriter? {
        writers.withLockedValue { writers -> AccessLogWriter? in
            if let writer = writers[path] { return writer }
            guard !failed.withLockedValue({ $0.contains(path) }) else { return nil }
            do {
                let writer = try AccessLogWriter(path: path, thread: thread)
                writers[path] = writer
                return writer
            } catch {
                failed.withLockedValue { _ = $0.insert(path) }
                let message = Array("capstan proxy: access log \(path): \(error): not written\n".utf8)
                _ = message.withUnsafeBytes { Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count) }
                return nil
            }
        }
    }

    /// Writes out everything buffered (drain and exit). Not to be called on an event loop.
    public func flush() {
        for writer in writers.withLockedValue({ Array($0.values) }) { writer.flush() }
    }
}

/// One access log as a connection uses it: the compiled format and the file's writer.
public struct AccessLogSink: Sendable {
    public var format: AccessLogFormat
    public var writer: AccessLogWriter

    public init(format: AccessLogFormat, writer: AccessLogWriter) {
        self.format = format
        self.writer = writer
    }
}
