// The agent's DNS proxy (`DNSProxyServer`, the server `capstan agent` runs with ISTIO_META_DNS_CAPTURE)
// alone, with a name table of `--hosts` Kubernetes services in namespace `shop` (`svc-N.shop.svc.cluster.local`
// and `payments.shop.svc.cluster.local`), for hack/bench-dns.sh to load with dnsperf. Runs until killed.
import DNS
#if canImport(Glibc)
import Glibc
#endif

var port = 15053
var hostCount = 1000
var arguments = CommandLine.arguments.dropFirst()
while let flag = arguments.popFirst() {
    switch flag {
    case "--port": port = Int(arguments.popFirst() ?? "") ?? port
    case "--hosts": hostCount = Int(arguments.popFirst() ?? "") ?? hostCount
    default:
        print("usage: DNSBenchmarks [--port N] [--hosts N]")
        exit(2)
    }
}

var hosts: [String: DNSNameTable.Host] = [
    "payments.shop.svc.cluster.local": .init(addresses: [HostAddress("198.51.100.200")!], registry: "Kubernetes",
                                             shortName: "payments", namespace: "shop"),
]
for index in 0..<hostCount {
    hosts["svc-\(index).shop.svc.cluster.local"] = .init(addresses: [.ipv4(0xC633_6400 &+ UInt32(index))], registry: "Kubernetes",
                                                         shortName: "svc-\(index)", namespace: "shop")
}
let table = DNSNameTable(hosts: hosts, proxyNamespace: "shop", proxyDomain: "shop.svc.cluster.local",
                         searchDomains: ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"])
// Upstream forwarding is not measured here: no nameserver.
let server = DNSProxyServer(resolver: StubResolver(configuration: ResolverConfiguration(nameservers: [])))
server.update(table)
let bound = try await server.start(host: "127.0.0.1", port: port)
print("DNS proxy on 127.0.0.1:\(bound) with \(table.nameCount) names")
fflush(nil)
while true { try await Task.sleep(for: .seconds(3600)) }
