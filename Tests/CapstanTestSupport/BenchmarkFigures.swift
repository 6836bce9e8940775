import Foundation

/// What the benchmarks compute and print: percentiles, durations, a process's memory.
public enum BenchmarkFigures {
    /// The value at `fraction` (0.5 for the median) of `values`, nearest rank; NaN for none.
    public static func percentile(_ values: [Double], _ fraction: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * fraction).rounded()))]
    }

    /// Seconds shown as milliseconds.
    public static func milliseconds(_ seconds: Double, digits: Int = 2) -> String {
        String(format: "%.\(digits)f ms", seconds * 1000)
    }

    /// `VmRSS` and `VmHWM` (peak) of a process, in MB, from /proc.
    public static func memory(of pid: Int32) -> (resident: Double, peak: Double) {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Double {
            let line = status.split(separator: "\n").first { $0.hasPrefix(name) } ?? ""
            return (Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
        }
        return (field("VmRSS:"), field("VmHWM:"))
    }
}
