import Capture
#if canImport(Glibc)
import Glibc
#endif

/// The process environment, where istio-iptables' settings may come from.
struct ProcessEnvironment {
    subscript(name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// The option's own variable, then the aliases Istio also reads.
    func value(for option: CaptureOption) -> String? {
        let aliases: [String] = switch option {
        case .redirectDNS: ["ISTIO_META_DNS_CAPTURE"]
        case .dropInvalid: ["INVALID_DROP"]
        default: []
        }
        return ([option.environmentName] + aliases).lazy.compactMap { self[$0] }.first
    }
}
