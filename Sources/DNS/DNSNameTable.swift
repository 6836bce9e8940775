/// The names the agent's DNS proxy answers for itself, built once per NDS update from Istio's `NameTable`
/// and read lock-free by every query. Follows pilot-agent's lookup table:
/// - every host answers for its own name (`*.example.com` for any name below `example.com`);
/// - a Kubernetes host `NAME.NS.svc.cluster.local` in the proxy's cluster domain also answers for
///   `NAME.NS`, `NAME.NS.svc`, and `NAME` when `NS` is the proxy's namespace;
/// - each of those names with the first resolv.conf search domain appended (what a resolver with
///   `ndots:5` asks first) answers with a CNAME to the name, so the client's next query is answered too.
/// Answers carry a 30 s TTL, as pilot-agent's do.
public struct DNSNameTable: Sendable {
    /// One host of the control plane's table.
    public struct Host: Sendable, Hashable {
        public var addresses: [HostAddress]
        /// `Kubernetes` makes `shortName` and `namespace` apply.
        public var registry: String
        public var shortName: String
        public var namespace: String

        public init(addresses: [HostAddress], registry: String = "", shortName: String = "", namespace: String = "") {
            self.addresses = addresses
            self.registry = registry
            self.shortName = shortName
            self.namespace = namespace
        }
    }

    /// What one name answers: addresses, or a CNAME to another name of the table.
    struct Entry: Sendable {
        var ipv4: [HostAddress] = []
        var ipv6: [HostAddress] = []
        var alias: DNSName?
    }

    public static let answerTTL: UInt32 = 30

    let entries: [[UInt8]: Entry]
    /// How many hosts the control plane sent (before expansion).
    public let hostCount: Int
    /// Hosts refused while building (name or addresses invalid), each with why.
    public let refusals: [String]

    /// Builds the table for a proxy in `proxyNamespace` whose cluster domain is `proxyDomain`
    /// (`NS.svc.cluster.local` or `svc.cluster.local`), with the resolv.conf `searchDomains`.
    public init(hosts: [String: Host], proxyNamespace: String, proxyDomain: String, searchDomains: [String]) {
        var domainParts = proxyDomain.split(separator: ".").map(String.init)
        if domainParts.first == proxyNamespace { domainParts.removeFirst() }
        let domain = domainParts.joined(separator: ".")
        var entries: [[UInt8]: Entry] = [:]
        var refusals: [String] = []
        let firstSearch = searchDomains.first.flatMap { try? DNSName($0) }
        for (hostname, host) in hosts.sorted(by: { $0.key < $1.key }) {
            let ipv4 = host.addresses.filter(\.isIPv4)
            let ipv6 = host.addresses.filter { !$0.isIPv4 }
            guard !host.addresses.isEmpty else {
                refusals.append("\(hostname): no addresses")
                continue
            }
            var names = [hostname]
            if host.registry == "Kubernetes", !domain.isEmpty, hostname.hasSuffix(domain), !host.shortName.isEmpty {
                names.append("\(host.shortName).\(host.namespace)")
                if host.namespace == proxyNamespace { names.append(host.shortName) }
                if let svc = domainParts.first { names.append("\(host.shortName).\(host.namespace).\(svc)") }
            }
            var parsed: [DNSName] = []
            for name in names {
                do { parsed.append(try DNSName(name)) } catch {
                    refusals.append("\(hostname): \(name): \(error.reason)")
                }
            }
            let own = Set(parsed)
            for name in parsed {
                entries[name.canonicalWireBytes] = Entry(ipv4: ipv4, ipv6: ipv6)
                if let firstSearch, let expanded = try? name.appending(firstSearch), !own.contains(expanded),
                   entries[expanded.canonicalWireBytes] == nil {
                    entries[expanded.canonicalWireBytes] = Entry(alias: name)
                }
            }
        }
        self.entries = entries
        self.hostCount = hosts.count
        self.refusals = refusals
    }

    /// The answer records for `name` and `type` (A or AAAA), or nil when the table does not know the name
    /// (or the type is not an address type): the query is then forwarded. A known name without addresses of
    /// the type answers with no records (NODATA), never NXDOMAIN, as pilot-agent does.
    public func answers(for name: DNSName, type: DNSRecordType, rotation: Int = 0) -> [DNSResourceRecord]? {
        guard type == .a || type == .aaaa else { return nil }
        var owner = name
        var entry = entries[name.canonicalWireBytes]
        if entry == nil {
            var parent = name
            while !parent.isRoot, entry == nil {
                parent = parent.parent
                entry = entries[[1, UInt8(ascii: "*")] + parent.canonicalWireBytes]
            }
        }
        guard var found = entry else { return nil }
        var records: [DNSResourceRecord] = []
        if let alias = found.alias {
            records.append(DNSResourceRecord(name: name, ttl: Self.answerTTL, data: .cname(alias)))
            owner = alias
            found = entries[alias.canonicalWireBytes] ?? Entry()
        }
        let addresses = type == .a ? found.ipv4 : found.ipv6
        let start = addresses.isEmpty ? 0 : rotation % addresses.count
        for index in 0..<addresses.count {
            let address = addresses[(start + index) % addresses.count]
            records.append(DNSResourceRecord(name: owner, ttl: Self.answerTTL, data: .address(address)))
        }
        return records
    }

    /// How many names (with expansions) the table answers for.
    public var nameCount: Int { entries.count }
}
