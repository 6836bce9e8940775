import DNS
import XDS

/// The agent's DNS proxy when `ISTIO_META_DNS_CAPTURE=true`: `DNSProxyServer` on 127.0.0.1:15053 (where
/// `capstan init --redirect-dns` sends the application's queries), fed by NDS name tables from the relay.
/// The agent runs as the proxy's uid, so its own upstream queries to the resolv.conf nameservers are
/// not captured again.
public final class AgentDNSProxy: Sendable {
    public static let port = 15053

    public let server: DNSProxyServer
    private let configuration: ResolverConfiguration
    private let proxyNamespace: String
    private let proxyDomain: String

    /// `resolvConf` is the text of resolv.conf (its nameservers are the upstreams, its first search
    /// domain the CNAME expansion); `proxyDomain` is `NS.svc.cluster.local`.
    public init(resolvConf: String, proxyNamespace: String, proxyDomain: String) {
        configuration = ResolverConfiguration(parsing: resolvConf)
        self.proxyNamespace = proxyNamespace
        self.proxyDomain = proxyDomain
        server = DNSProxyServer(resolver: StubResolver(configuration: configuration))
    }

    /// Whether the node metadata turns the DNS proxy on (pilot-agent's `ISTIO_META_DNS_CAPTURE`).
    public static func isEnabled(_ settings: AgentSettings) -> Bool {
        settings.nodeMetadata["DNS_CAPTURE"]?.lowercased() == "true"
    }

    public var upstreams: [HostAddress] { configuration.nameservers }

    /// Binds UDP and TCP on `host`:`port`.
    public func start(host: String = "127.0.0.1", port: Int = AgentDNSProxy.port) async throws {
        try await server.start(host: host, port: port)
    }

    public func stop() async { await server.stop() }

    /// Puts Istio's NameTable in force; returns the hosts refused (no valid address or name), each with why.
    @discardableResult
    public func update(_ nameTable: Istio_Networking_Nds_V1_NameTable) -> [String] {
        var hosts: [String: DNSNameTable.Host] = [:]
        var refused: [String] = []
        for (hostname, info) in nameTable.table {
            var addresses: [HostAddress] = []
            for ip in info.ips {
                if let address = HostAddress(ip) { addresses.append(address) } else { refused.append("\(hostname): ips: \"\(ip)\" is not an address") }
            }
            hosts[hostname] = DNSNameTable.Host(addresses: addresses, registry: info.registry, shortName: info.shortname,
                                                namespace: info.namespace)
        }
        let table = DNSNameTable(hosts: hosts, proxyNamespace: proxyNamespace, proxyDomain: proxyDomain,
                                 searchDomains: configuration.searchDomains)
        server.update(table)
        return refused + table.refusals
    }
}
