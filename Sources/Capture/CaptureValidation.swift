import CMNL
import Netfilter
#if canImport(Glibc)
import Glibc
#endif

/// `--run-validation` (istio-validation): proves that capture works with a real connection.
///
/// Listens on 127.0.0.1 at both capture ports, connects as the proxy uid/gid from 127.0.0.1 to
/// 127.0.0.6:PROBE_PORT, and expects the connection to arrive on a capture port with that original
/// destination. Capstan sets the probe socket's owner itself (filesystem uid/gid of its thread), so the
/// check does not depend on the uid the command runs as.
public enum CaptureValidation {
    public struct Outcome: Sendable, Equatable {
        public var passed: Bool
        public var detail: String
    }

    public static let probeAddress = IPAddress.inboundPassthroughV4

    public static func run(_ spec: CaptureSpec, in namespace: NetworkNamespace, probePort: UInt16,
                           timeoutMilliseconds: Int) throws -> Outcome {
        try namespace.run {
            let listeners: [ProbeSocket]
            do {
                listeners = try [spec.outboundCapturePort, spec.inboundCapturePort].map {
                    try ProbeSocket.listener(on: SocketAddress(.loopbackV4, $0), reusePort: true)
                }
            } catch {
                return Outcome(passed: false, detail: "cannot listen on the capture ports: \(error)")
            }
            // Sockets take their owner from the thread's filesystem ids; this thread ends after the probe.
            setfsgid(__gid_t(spec.proxyGIDs[0]))
            setfsuid(__uid_t(spec.proxyUIDs[0]))

            let target = SocketAddress(probeAddress, probePort)
            var lastProblem = "no attempt made"
            let clock = ContinuousClock()
            let deadline = clock.now.advanced(by: .milliseconds(timeoutMilliseconds))
            repeat {
                let attemptEnds = clock.now.advanced(by: .seconds(1))
                do {
                    let client = try ProbeSocket.tcp(.ipv4)
                    try client.bind(SocketAddress(.loopbackV4, 0))
                    try client.connect(to: target, timeoutMilliseconds: 1000)
                    for listener in listeners {
                        guard let accepted = try listener.accept(timeoutMilliseconds: 200) else { continue }
                        let original = accepted.originalDestination
                        if original == target {
                            return Outcome(passed: true, detail: "a connection from uid \(spec.proxyUIDs[0]) to \(target) "
                                + "arrived at \(listener.localAddress.map(String.init(describing:)) ?? "a capture port") "
                                + "with original destination \(target)")
                        }
                        lastProblem = "arrived with original destination \(original.map(String.init(describing:)) ?? "none")"
                    }
                } catch {
                    lastProblem = "\(error)"
                }
                // One attempt a second, as istio-validation.
                while clock.now < min(attemptEnds, deadline) { usleep(20_000) }
            } while clock.now < deadline
            return Outcome(passed: false, detail: "connections to \(target) were not captured: \(lastProblem)")
        }
    }
}
