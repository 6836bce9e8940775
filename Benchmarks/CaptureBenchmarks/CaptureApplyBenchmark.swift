import Capture
import Netfilter
#if canImport(Glibc)
import Glibc
#endif

/// Measures the in-process apply the node agent uses: enter a fresh namespace, create a libnftables
/// context there, apply the sidecar ruleset as one transaction. Prints one JSON line per run.
///
/// Usage: capstan-capture-benchmarks NAMESPACES (paths created by the caller, e.g. hack/bench-init.sh)
@main
struct CaptureApplyBenchmark {
    static func main() throws {
        let paths = Array(CommandLine.arguments.dropFirst())
        guard !paths.isEmpty else {
            print("usage: capstan-capture-benchmarks /var/run/netns/NAME …")
            exit(2)
        }
        let spec = CaptureSpec()
        let clock = ContinuousClock()
        var applies: [Duration] = []
        var releases: [Duration] = []
        for path in paths {
            let namespace = NetworkNamespace(path: path)
            var released = clock.now
            let applied = try clock.measure {
                let (_, handles) = try CaptureEngine.applyKeepingHandles(spec, in: namespace)
                released = clock.now
                handles.release()
            }
            releases.append(clock.now - released)
            applies.append(applied - (clock.now - released))
        }
        print(summary("apply", applies) + "\n" + summary("release", releases))
    }

    static func summary(_ name: String, _ samples: [Duration]) -> String {
        let sorted = samples.sorted()
        func ms(_ d: Duration) -> String {
            let value = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
            return String(Int((value * 1000).rounded())) + "us"
        }
        return "\(name): n=\(sorted.count) median=\(ms(sorted[sorted.count / 2])) p90=\(ms(sorted[sorted.count * 9 / 10])) max=\(ms(sorted.last!))"
    }
}
