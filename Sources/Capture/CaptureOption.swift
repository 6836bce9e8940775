import Netfilter

/// One of istio-iptables' rule-shaping flags, with its short name and environment variable.
///
/// Every flag can also be set by the environment variable that is its long name in UPPER_SNAKE; a flag
/// given on the command line wins.
public enum CaptureOption: String, CaseIterable, Sendable, Hashable {
    case envoyPort = "envoy-port"
    case inboundCapturePort = "inbound-capture-port"
    case inboundTunnelPort = "inbound-tunnel-port"
    case proxyUID = "proxy-uid"
    case proxyGID = "proxy-gid"
    case interceptionMode = "istio-inbound-interception-mode"
    case tproxyMark = "istio-inbound-tproxy-mark"
    case tproxyRouteTable = "istio-inbound-tproxy-route-table"
    case inboundPorts = "istio-inbound-ports"
    case inboundExcludePorts = "istio-local-exclude-ports"
    case outboundCIDRs = "istio-service-cidr"
    case outboundExcludeCIDRs = "istio-service-exclude-cidr"
    case outboundPorts = "istio-outbound-ports"
    case outboundExcludePorts = "istio-local-outbound-ports-exclude"
    case kubeVirtInterfaces = "kube-virt-interfaces"
    case excludeInterfaces = "istio-exclude-interfaces"
    case redirectDNS = "redirect-dns"
    case captureAllDNS = "capture-all-dns"
    /// Capstan's addition: the nameservers `--redirect-dns` captures (default: resolv.conf's).
    case dnsServers = "dns-servers"
    case dropInvalid = "drop-invalid"

    public var longName: String { rawValue }

    public var shortName: Character? {
        switch self {
        case .envoyPort: "p"
        case .inboundCapturePort: "z"
        case .inboundTunnelPort: "e"
        case .proxyUID: "u"
        case .proxyGID: "g"
        case .interceptionMode: "m"
        case .tproxyMark: "t"
        case .tproxyRouteTable: "r"
        case .inboundPorts: "b"
        case .inboundExcludePorts: "d"
        case .outboundCIDRs: "i"
        case .outboundExcludeCIDRs: "x"
        case .outboundPorts: "q"
        case .outboundExcludePorts: "o"
        case .kubeVirtInterfaces: "k"
        case .excludeInterfaces: "c"
        case .redirectDNS, .captureAllDNS, .dnsServers, .dropInvalid: nil
        }
    }

    /// `ENVOY_PORT` for `--envoy-port`.
    public var environmentName: String {
        String(rawValue.map { $0 == "-" ? "_" : Character($0.uppercased()) })
    }

    /// How errors name the flag: `-p/--envoy-port`.
    public var displayName: String {
        shortName.map { "-\($0)/--\(longName)" } ?? "--\(longName)"
    }

    /// Options whose default is an empty list (absent from a recorded spec when empty).
    var defaultsToEmpty: Bool {
        switch self {
        case .outboundExcludeCIDRs, .outboundPorts, .outboundExcludePorts, .kubeVirtInterfaces, .excludeInterfaces,
             .dnsServers: true
        default: false
        }
    }

    /// Whether the option is a switch (`true`/`false`) rather than a value.
    public var isSwitch: Bool {
        switch self {
        case .redirectDNS, .captureAllDNS, .dropInvalid: true
        default: false
        }
    }
}
