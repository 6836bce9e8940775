import Netfilter

/// What to capture in a network namespace: the normalized meaning of istio-iptables' flags.
///
/// A spec is always valid: it is built by ``CaptureSpec/init(options:)``, which refuses bad input, and it
/// round-trips through ``canonicalArguments`` so the kernel's table can record the spec it came from.
public struct CaptureSpec: Sendable, Hashable {
    /// How inbound connections reach the proxy.
    public enum InterceptionMode: String, Sendable, Hashable, CaseIterable {
        /// NAT to the inbound port; the proxy reads `SO_ORIGINAL_DST`.
        case redirect = "REDIRECT"
        /// `tproxy` to the inbound port with policy routing; addresses stay untouched.
        case tproxy = "TPROXY"
    }

    /// Which inbound ports are captured: all (minus exclusions) or a list; an empty list captures none.
    public enum PortSelection: Sendable, Hashable {
        case all
        case only([UInt16])
    }

    /// Which outbound destinations are captured: all (minus exclusions) or a list of CIDRs.
    public enum DestinationSelection: Sendable, Hashable {
        case all
        case only([IPPrefix])
    }

    /// DNS capture to the agent's DNS proxy.
    public enum DNSCapture: Sendable, Hashable {
        case off
        /// Port 53 to these nameservers (from resolv.conf) only.
        case nameservers([IPAddress])
        /// All port 53 traffic.
        case all
    }

    public var outboundCapturePort: UInt16 = 15001
    public var inboundCapturePort: UInt16 = 15006
    public var inboundTunnelPort: UInt16 = 15008
    public var proxyUIDs: [UInt32] = [1337]
    public var proxyGIDs: [UInt32] = [1337]
    public var interceptionMode: InterceptionMode = .redirect
    public var tproxyMark: UInt32 = 1337
    public var tproxyRouteTable: UInt32 = 133
    public var inboundPorts: PortSelection = .all
    public var inboundExcludePorts: [UInt16] = [15020, 15021, 15090]
    public var outboundDestinations: DestinationSelection = .all
    public var outboundExcludeCIDRs: [IPPrefix] = []
    public var outboundPorts: [UInt16] = []
    public var outboundExcludePorts: [UInt16] = []
    public var kubeVirtInterfaces: [String] = []
    public var excludeInterfaces: [String] = []
    public var dns: DNSCapture = .off
    public var dropInvalid = false

    /// The port the agent's DNS proxy listens on.
    public static let dnsCapturePort: UInt16 = 15053

    /// The Istio injector's sidecar defaults.
    public init() {}

    public var capturesInbound: Bool { inboundPorts != .only([]) }
}
