import Foundation
import NIOCore
import NIOPosix
import Testing
@testable import HTTPProxy

/// The writer on a real file and real event loops: lines buffered per loop, written by the background
/// thread within the flush interval or on `flush()`, one writer per path.
@Suite struct AccessLogWriterTests {
    static func temporaryPath() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("capstan-accesslog-\(getpid())-\(UUID().uuidString).log").path
    }

    static func contents(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    @Test func linesFromTwoLoopsAreAppendedOnFlush() throws {
        let path = Self.temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "before\n".write(toFile: path, atomically: true, encoding: .utf8)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        defer { try? group.syncShutdownGracefully() }
        let files = AccessLogFiles()
        let writer = try #require(files.writer(for: path))
        #expect(files.writer(for: path) === writer, "one writer per path")
        let format = try AccessLogFormat(text: "%REQ(:PATH)% %RESPONSE_CODE%\n")
        let entry = AccessLogFormatTests.noRoute()
        for (index, loop) in group.makeIterator().enumerated() {
            try loop.submit {
                var mine = entry
                mine.record.path = "/loop\(index)"
                writer.log(mine, format: format)
            }.wait()
        }
        #expect(Self.contents(path) == "before\n", "buffered on the loops, not written yet")
        files.flush()
        let lines = Self.contents(path).split(separator: "\n").map(String.init)
        #expect(lines.first == "before", "appended, not truncated")
        #expect(Set(lines.dropFirst()) == ["/loop0 404", "/loop1 404"])
    }

    @Test func aNewFileIsCreatedWithMode0644AndWrittenWithinTheFlushInterval() throws {
        let path = Self.temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let files = AccessLogFiles()
        let writer = try #require(files.writer(for: path))
        #expect(Self.permissions(path) == 0o644)
        let format = try AccessLogFormat(text: "%RESPONSE_FLAGS%\n")
        try group.next().submit { writer.log(AccessLogFormatTests.noRoute(), format: format) }.wait()
        let deadline = Date().addingTimeInterval(3)
        while Self.contents(path).isEmpty && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(Self.contents(path) == "NR\n")
    }

    @Test func aBufferPastTheSizeGoesOutAtOnce() throws {
        let path = Self.temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let writer = try #require(AccessLogFiles().writer(for: path))
        let format = try AccessLogFormat(text: String(repeating: "x", count: 1023) + "\n")
        try group.next().submit {
            for _ in 0..<(AccessLogWriter.flushSize / 1024) { writer.log(AccessLogFormatTests.noRoute(), format: format) }
        }.wait()
        let deadline = Date().addingTimeInterval(0.5)  // well before the 1 s interval
        while Self.contents(path).isEmpty && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(Self.contents(path).utf8.count == AccessLogWriter.flushSize)
    }

    @Test func aFileThatCannotBeOpenedIsLeftOut() {
        let files = AccessLogFiles()
        #expect(files.writer(for: "/nonexistent-directory-\(UUID().uuidString)/access.log") == nil)
    }

    static func permissions(_ path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? Int
    }
}
