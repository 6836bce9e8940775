import NIOCore
import XDS

/// How the packaged proxy listens and forwards: Istio's ports and Envoy's defaults.
public struct ProxyOptions: Sendable {
    /// How inbound connections were captured, which decides how their original destination is found
    /// and how the proxy reaches the application.
    public enum InboundInterception: String, Sendable, CaseIterable {
        /// NAT'd to the inbound port: `SO_ORIGINAL_DST`; the application is reached from 127.0.0.6.
        case redirect = "REDIRECT"
        /// TPROXY'd: the accepted socket's local address; the application is reached from the client's
        /// own address (transparent bind), so it sees the real client.
        case tproxy = "TPROXY"
    }

    public var outboundPort = 15001
    public var inboundPort = 15006
    public var inboundInterception = InboundInterception.redirect
    /// The mark TPROXY's policy routing sends back to the proxy (`capstan init -t`).
    public var tproxyMark: UInt32 = 1337
    public var adminPort = 15000
    public var statsPort = 15090
    /// Event loops (Envoy's `--concurrency`).
    public var concurrency = 2
    /// How long a graceful drain lets open connections run (Envoy's `--drain-time-s`).
    public var drainTime = TimeAmount.seconds(45)
    public var connectTimeout = TimeAmount.seconds(10)
    /// A connection with no bytes either way for this long is closed (Envoy tcp_proxy's default: 1 h).
    public var idleTimeout = TimeAmount.hours(1)
    /// How long listener filters (tls_inspector) wait for a client's first bytes before treating the
    /// connection as plaintext (Envoy's `listener_filters_timeout`).
    public var listenerFiltersTimeout = TimeAmount.seconds(15)
    /// How long a client has to complete the TLS handshake on a chain that terminates TLS. (Upstream,
    /// the handshake counts toward the cluster's connect timeout, as in Envoy.)
    public var tlsHandshakeTimeout = TimeAmount.seconds(15)
    /// Listeners and clusters from a bootstrap file; nil: Istio's passthrough on the two capture ports.
    public var bootstrap: BootstrapConfig?
    /// Delays between attempts to reach the control plane.
    public var controlPlaneBackoff = RetryBackoff()
    /// How long a new EDS cluster waits for its endpoints before serving without them.
    public var warmingTimeout = Duration.seconds(15)

    public init() {}

    /// Read buffers grow with the traffic up to 256 KiB (fewer reads and writes for bulk transfers)
    /// and stay small for chatty or idle connections.
    static let readBuffers = AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 16 * 1024, maximum: 256 * 1024)
}
