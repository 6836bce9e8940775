@testable import ControlPlane
import Foundation
import Synchronization
import Testing

/// The watcher reads a file once it is whole: soon after it is closed or renamed into place, and not
/// while it is being written.
@Suite struct ConfigDirectoryWatcherTests {
    @Test func theLastEventOfABatchDecidesTheWait() {
        // Two events: a create with a 16-byte name, then a close after writing with no name.
        var events: [UInt8] = []
        func event(_ mask: Int32, name: Int) {
            for value in [UInt32(1), UInt32(mask), 0, UInt32(name)] { withUnsafeBytes(of: value) { events += $0 } }
            events += [UInt8](repeating: 0, count: name)
        }
        event(IN_CREATE, name: 16)
        event(IN_CLOSE_WRITE, name: 0)
        #expect(ConfigDirectoryWatcher.lastEventMask(events[...]) == UInt32(IN_CLOSE_WRITE))
        #expect(ConfigDirectoryWatcher.lastEventMask(events.prefix(32)) == UInt32(IN_CREATE))
        #expect(ConfigDirectoryWatcher.lastEventMask([]) == 0)
    }

    @Test func aFileIsReadWhenItIsWholeNotWhileItIsWritten() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-watch-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let seen = Mutex<[String]>([])
        let path = "\(directory)/mesh.yaml"
        let watcher = try ConfigDirectoryWatcher(directory: directory, settle: .milliseconds(2), settleWhileWriting: .seconds(5)) {
            seen.withLock { $0.append((try? String(contentsOfFile: path, encoding: .utf8)) ?? "") }
        }
        defer { watcher.stop() }

        // Created and half written: no read during the long wait's first part.
        let file = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        try #require(file >= 0)
        #expect(write(file, "first half, ", 12) == 12)
        usleep(300_000)
        #expect(seen.withLock { $0 }.isEmpty)
        // Closed: read soon after, whole.
        #expect(write(file, "second half", 11) == 11)
        close(file)
        #expect(eventually(within: 3) { !seen.withLock { $0 }.isEmpty })
        #expect(seen.withLock { $0 } == ["first half, second half"])

        // Renamed into place: read soon after.
        try "renamed".write(toFile: "\(directory)/.next", atomically: false, encoding: .utf8)
        seen.withLock { $0 = [] }
        #expect(rename("\(directory)/.next", path) == 0)
        #expect(eventually(within: 3) { seen.withLock { $0 }.last == "renamed" })
    }

    func eventually(within seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }
}
