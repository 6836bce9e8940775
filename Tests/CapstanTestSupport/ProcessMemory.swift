import Foundation

/// A process's memory in the ways that answer different questions (all in MB), read from /proc (needs root
/// for another user's process).
///
/// - `resident` (RSS) counts every page mapped, also the executable's code that other processes map too.
/// - `proportional` (PSS) shares each such page among the processes that map it.
/// - `privateBytes` (USS) is what only this process holds: its heap, stacks and written data.
///
/// `capstan agent` and `capstan proxy` are one executable, so most of the agent's RSS is code the proxy maps
/// as well; ``pagesNotMapped(by:)`` measures what the agent adds to the pod beyond its proxy.
public struct ProcessMemory: Sendable {
    public var resident: Double
    public var proportional: Double
    public var privateBytes: Double
    public let pid: Int32

    /// Reads `/proc/PID/smaps_rollup`; nil when the process is gone.
    public init?(pid: Int32) {
        guard let rollup = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8) else { return nil }
        var kilobytes: [Substring: Double] = [:]
        for line in rollup.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count >= 2, fields[0].hasSuffix(":") { kilobytes[fields[0].dropLast()] = Double(fields[1]) ?? 0 }
        }
        self.pid = pid
        resident = (kilobytes["Rss"] ?? 0) / 1024
        proportional = (kilobytes["Pss"] ?? 0) / 1024
        privateBytes = ((kilobytes["Private_Clean"] ?? 0) + (kilobytes["Private_Dirty"] ?? 0)) / 1024
    }

    /// MB of physical pages this process maps that `other` does not map at all: its private memory plus
    /// the code and data pages only it touched.
    public func pagesNotMapped(by other: Int32) -> Double {
        let own = Self.physicalPages(of: pid), theirs = Self.physicalPages(of: other)
        return Double(own.subtracting(theirs).count) * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576
    }

    /// The page frame numbers of every resident page the process maps (`/proc/PID/pagemap`, bit 63: present,
    /// bits 0–54: frame).
    static func physicalPages(of pid: Int32) -> Set<UInt64> {
        guard let maps = try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8) else { return [] }
        let descriptor = open("/proc/\(pid)/pagemap", O_RDONLY)
        guard descriptor >= 0 else { return [] }
        defer { close(descriptor) }
        let pageSize = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        var frames = Set<UInt64>()
        for line in maps.split(separator: "\n") where !line.hasSuffix("[vsyscall]") {
            let range = line.prefix { $0 != " " }.split(separator: "-")
            guard range.count == 2, let start = UInt64(range[0], radix: 16), let end = UInt64(range[1], radix: 16) else { continue }
            var entries = [UInt64](repeating: 0, count: Int((end - start) / pageSize))
            let bytes = entries.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, off_t(start / pageSize * 8)) }
            guard bytes > 0 else { continue }
            for entry in entries.prefix(bytes / 8) where entry >> 63 == 1 {
                frames.insert(entry & ((1 << 55) - 1))
            }
        }
        return frames
    }

    /// The pids of a process's children: `/proc/PID/task/TID/children` lists those each thread started.
    public static func children(of pid: Int32) -> [Int32] {
        let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return threads.flatMap { thread in
            let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(thread)/children", encoding: .utf8)) ?? ""
            return text.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { Int32($0) }
        }
    }
}
