import DNS
import Netfilter

/// The nameservers of a resolv.conf, which `--redirect-dns` captures. Read by the DNS module's parser, the
/// same one the agent's DNS forwarder and the proxy's resolver use, so all three agree on the list.
public enum ResolvConf {
    public static let defaultPath = ResolverConfiguration.defaultPath

    /// `nameserver ADDR` lines; a link-local zone (`%eth0`) is dropped, lines that are not addresses are skipped.
    public static func nameservers(in text: String) -> [IPAddress] {
        ResolverConfiguration(parsing: text).nameservers.compactMap { IPAddress($0.description) }
    }
}
