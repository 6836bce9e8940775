import Configuration
@testable import DataPlane
import NIOCore
import Synchronization
import SwiftProtobuf
import Testing
import XDS

/// STRICT_DNS and LOGICAL_DNS clusters: decoded from Envoy's fields, and their hosts kept by lookups
/// as Envoy keeps them (TTL or refresh rate, a failed lookup keeps the last addresses).
@Suite struct DNSClusterTests {
    static func cluster(_ type: Envoy_Config_Cluster_V3_Cluster.DiscoveryType, hosts: [(String, UInt32)],
                        configure: (inout Envoy_Config_Cluster_V3_Cluster) throws -> Void = { _ in }) rethrows -> Envoy_Config_Cluster_V3_Cluster {
        var cluster = Envoy_Config_Cluster_V3_Cluster()
        cluster.name = "outbound|443||auth.external-service.com"
        cluster.type = type
        var group = Envoy_Config_Endpoint_V3_LocalityLbEndpoints()
        group.lbEndpoints = hosts.map { host, port in
            var endpoint = Envoy_Config_Endpoint_V3_LbEndpoint()
            endpoint.endpoint.address.socketAddress.address = host
            endpoint.endpoint.address.socketAddress.portValue = port
            return endpoint
        }
        cluster.loadAssignment.endpoints = [group]
        try configure(&cluster)
        return cluster
    }

    func decode(_ cluster: Envoy_Config_Cluster_V3_Cluster) throws -> XDSResourceDecoder.DiscoveredCluster {
        try XDSResourceDecoder.cluster(cluster)
    }

    func refusal(_ cluster: Envoy_Config_Cluster_V3_Cluster) -> String? {
        do {
            _ = try XDSResourceDecoder.cluster(cluster)
            return nil
        } catch {
            return error.description
        }
    }

    @Test func strictDNSIsDecodedWithIstiodsSettings() throws {
        let proto = try Self.cluster(.strictDns, hosts: [("auth.external-service.com", 443), ("192.0.2.9", 8443)]) { cluster in
            cluster.dnsRefreshRate = Google_Protobuf_Duration(seconds: 60)
            cluster.respectDnsTtl = true
            cluster.dnsLookupFamily = .v4Only
            var cares = Envoy_Extensions_Network_DnsResolver_Cares_V3_CaresDnsResolverConfig()
            var resolver = Envoy_Config_Core_V3_Address()
            resolver.socketAddress.address = "192.0.2.53"
            resolver.socketAddress.portValue = 5353
            cares.resolvers = [resolver]
            cluster.typedDnsResolverConfig.name = "envoy.network.dns_resolver.cares"
            cluster.typedDnsResolverConfig.typedConfig = try Google_Protobuf_Any(message: cares)
        }
        let decoded = try decode(proto)
        let dns = try #require(decoded.dns)
        #expect(dns.kind == .strict && dns.refreshRate == .seconds(60) && dns.respectTTL && dns.family == .v4Only)
        #expect(dns.targets.map(\.host) == ["auth.external-service.com", "192.0.2.9"] && dns.targets.map(\.port) == [443, 8443])
        #expect(dns.nameservers == [try SocketAddress(ipAddress: "192.0.2.53", port: 5353)])
        #expect(decoded.endpointService == nil)
        #expect(decoded.cluster.discovery == .endpoints([]))
    }

    @Test func defaultsAreEnvoys() throws {
        let dns = try #require(try decode(Self.cluster(.logicalDns, hosts: [("example.org", 80)])).dns)
        #expect(dns.kind == .logical && dns.refreshRate == .seconds(5) && !dns.respectTTL && dns.family == .auto && dns.nameservers.isEmpty)
    }

    @Test func refusalsNameTheField() throws {
        let name = "cluster \"outbound|443||auth.external-service.com\""
        #expect(try refusal(Self.cluster(.logicalDns, hosts: [("a.example.org", 80), ("b.example.org", 80)]))
            == "\(name).load_assignment.endpoints: LOGICAL_DNS takes exactly one endpoint (2 given)")
        #expect(try refusal(Self.cluster(.strictDns, hosts: [])) == "\(name).load_assignment.endpoints: a DNS cluster needs at least one host name to look up")
        #expect(try refusal(Self.cluster(.strictDns, hosts: [("bad name!", 80)]))
            == "\(name).load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: \"bad name!\" is not a host name or an IP address")
        #expect(try refusal(Self.cluster(.strictDns, hosts: [("example.org", 0)]))
            == "\(name).load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: needs a port 1-65535")
        #expect(try refusal(Self.cluster(.strictDns, hosts: [("example.org", 80)]) { $0.typedDnsResolverConfig.name = "envoy.network.dns_resolver.apple" })
            == "\(name).typed_dns_resolver_config.name: \"envoy.network.dns_resolver.apple\" is not supported (envoy.network.dns_resolver.cares, envoy.network.dns_resolver.getaddrinfo)")
    }

    @Test func localityIsListedAsNotActedOn() throws {
        let proto = try Self.cluster(.strictDns, hosts: [("example.org", 80)]) { cluster in
            cluster.loadAssignment.endpoints[0].locality.region = "europe"
        }
        #expect(try decode(proto).cluster.fieldsNotActedOn.map(\.path) == ["load_assignment.endpoints[0].locality"])
    }

    // MARK: Lookups

    /// Answers from a script, one entry per lookup (a failure throws); counts the lookups.
    final class ScriptedResolution: HostnameResolution {
        let answers: Mutex<[String: [Result<[ResolvedAddress], HostnameResolutionError>]]>
        let asked = Mutex<[String]>([])
        var takesNameservers: Bool { true }

        init(_ answers: [String: [Result<[ResolvedAddress], HostnameResolutionError>]]) { self.answers = Mutex(answers) }

        func lookup(_ name: String, ipv6: Bool, nameservers: [SocketAddress]) async throws -> [ResolvedAddress] {
            let key = "\(name)/\(ipv6 ? "AAAA" : "A")"
            asked.withLock { $0.append(key) }
            let next = answers.withLock { answers -> Result<[ResolvedAddress], HostnameResolutionError> in
                guard var list = answers[key], !list.isEmpty else { return .success([]) }
                let first = list.removeFirst()
                if list.isEmpty { list = [first] }
                answers[key] = list
                return first
            }
            return try next.get()
        }
    }

    static func config(_ kind: DNSClusterConfig.Kind, hosts: [String], family: Envoy_Config_Cluster_V3_Cluster.DnsLookupFamily = .v4Only,
                       respectTTL: Bool = true) throws -> DNSClusterConfig {
        var notActedOn: [FieldNotActedOn] = []
        return try DNSClusterConfig(try cluster(kind == .strict ? .strictDns : .logicalDns, hosts: hosts.map { ($0, 443) }) { cluster in
            cluster.dnsLookupFamily = family
            cluster.respectDnsTtl = respectTTL
            cluster.dnsRefreshRate = Google_Protobuf_Duration(seconds: 30)
        }, path: "cluster", notActedOn: &notActedOn)
    }

    @Test func strictDNSUsesEveryAddressAndAFailureKeepsTheLast() async throws {
        let script = ScriptedResolution([
            "a.example.org/A": [.success([.init(address: "192.0.2.1", ttl: .seconds(20)), .init(address: "192.0.2.2", ttl: .seconds(7))]),
                                .failure(.init(description: "SERVFAIL"))],
            "b.example.org/A": [.success([.init(address: "192.0.2.3", ttl: .seconds(300))])],
        ])
        let config = try Self.config(.strict, hosts: ["a.example.org", "b.example.org"])
        let resolver = DNSClusterResolver(config: config, resolver: script, stats: ClusterStats(name: "c")) { _ in }
        let first = await resolver.lookUpAll(keeping: [[], []])
        #expect(!first.failed)
        let hosts = DNSClusterResolver.endpoints(config, addresses: first.addresses).map { $0.address.ipAddress }
        #expect(hosts == ["192.0.2.1", "192.0.2.2", "192.0.2.3"])
        // The shortest TTL paces the next lookup.
        #expect(DNSClusterResolver.delay(config, answers: first.addresses.flatMap { $0 }, failed: false) == .seconds(7))
        let second = await resolver.lookUpAll(keeping: first.addresses)
        #expect(second.failed)
        #expect(second.addresses == first.addresses)
        #expect(DNSClusterResolver.delay(config, answers: [], failed: true) == .seconds(30))
        var noTTL = config
        noTTL.respectTTL = false
        #expect(DNSClusterResolver.delay(noTTL, answers: first.addresses.flatMap { $0 }, failed: false) == .seconds(30))
    }

    @Test func logicalDNSTakesTheFirstAddressAndFamiliesFallBack() async throws {
        let script = ScriptedResolution([
            "one.example.org/AAAA": [.success([])],
            "one.example.org/A": [.success([.init(address: "192.0.2.10", ttl: nil), .init(address: "192.0.2.11", ttl: nil)])],
        ])
        let config = try Self.config(.logical, hosts: ["one.example.org"], family: .auto)
        let resolver = DNSClusterResolver(config: config, resolver: script, stats: ClusterStats(name: "c")) { _ in }
        let round = await resolver.lookUpAll(keeping: [[]])
        #expect(script.asked.withLock { $0 } == ["one.example.org/AAAA", "one.example.org/A"])
        #expect(DNSClusterResolver.endpoints(config, addresses: round.addresses).map { $0.address.ipAddress } == ["192.0.2.10"])
        // No TTL from the resolver: the refresh rate.
        #expect(DNSClusterResolver.delay(config, answers: round.addresses.flatMap { $0 }, failed: false) == .seconds(30))
    }

    @Test func runningLookupsPublishChangesAndCountThem() async throws {
        let script = ScriptedResolution([
            "a.example.org/A": [.success([.init(address: "192.0.2.1", ttl: .seconds(1))]),
                                .failure(.init(description: "timeout")),
                                .success([.init(address: "192.0.2.5", ttl: .seconds(1))])],
        ])
        let stats = ClusterStats(name: "c")
        let published = Mutex<[[String]]>([])
        let resolver = DNSClusterResolver(config: try Self.config(.strict, hosts: ["a.example.org"]), resolver: script, stats: stats) { hosts in
            published.withLock { $0.append(hosts.compactMap(\.address.ipAddress)) }
        }
        resolver.start()
        defer { resolver.stop() }
        // TTL 1 s: the first answer, then (30 s refresh after the failure is too long to wait) the failure kept it.
        let deadline = ContinuousClock.now + .seconds(20)
        while stats.membershipFailures.value == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        #expect(published.withLock { $0 } == [["192.0.2.1"]])
        #expect(stats.membershipUpdates.value == 1 && stats.membershipFailures.value == 1)
    }

    @Test func theSystemResolverReadsTheHostsFile() async throws {
        // /etc/hosts has localhost on every Linux: a real lookup that sends no packet.
        let addresses = try await SystemHostnameResolver().lookup("localhost", ipv6: false, nameservers: [])
        #expect(addresses.map(\.address).contains("127.0.0.1"))
        #expect(addresses.allSatisfy { $0.ttl == nil })
        await #expect(throws: HostnameResolutionError.self) {
            try await SystemHostnameResolver().lookup("localhost", ipv6: false, nameservers: [try SocketAddress(ipAddress: "192.0.2.53", port: 53)])
        }
    }

    // MARK: Server names of external services

    @Test func dnsNamesMatchWildcardCertificatesAsEnvoyMatchesThem() {
        func accepts(_ pattern: String, _ name: String, kind: SubjectAltNameMatcher.Kind = .uriOrDNS,
                     nameKind: PeerIdentity.SubjectAltName.Kind = .dns) -> Bool {
            SubjectAltNameMatcher(kind: kind, pattern: .exact(pattern)).matches([.init(kind: nameKind, value: name)])
        }
        #expect(accepts("auth.external-service.com", "auth.external-service.com"))
        #expect(accepts("auth.external-service.com", "*.external-service.com"))
        #expect(accepts("auth.external-service.com", "*.EXTERNAL-service.com"))
        #expect(accepts("auth.external-service.com", "*.external-service.com", kind: .dns))
        // One label only, and never for URIs.
        #expect(!accepts("a.auth.external-service.com", "*.external-service.com"))
        #expect(!accepts("external-service.com", "*.external-service.com"))
        #expect(!accepts("spiffe://auth.external-service.com", "*.external-service.com", nameKind: .uri))
        #expect(!accepts("auth.external-service.com", "*.other.com"))
    }
}
