import NIOCore
import Synchronization

/// Keeps a DNS cluster's hosts, as Envoy does: looks its names up when started and again every
/// `dns_refresh_rate` (or, with `respect_dns_ttl`, when the shortest TTL of the answers runs out),
/// and hands the hosts over whenever they change. STRICT_DNS: every address of every name is a host;
/// LOGICAL_DNS: the first address of the latest answer. A lookup that fails keeps the addresses that
/// name had (`update_failure`); one that succeeds counts `update_success`, even when nothing changed.
final class DNSClusterResolver: Sendable {
    typealias Endpoint = BootstrapConfig.Cluster.Endpoint

    let config: DNSClusterConfig
    private let resolver: any HostnameResolution
    private let stats: ClusterStats
    private let update: @Sendable ([Endpoint]) -> Void
    private let task = Mutex<Task<Void, Never>?>(nil)

    /// `update`: called with the hosts after the first round of lookups (failed or not) and after each
    /// round that changed them.
    init(config: DNSClusterConfig, resolver: any HostnameResolution, stats: ClusterStats,
         update: @escaping @Sendable ([Endpoint]) -> Void) {
        self.config = config
        self.resolver = resolver
        self.stats = stats
        self.update = update
    }

    func start() {
        task.withLock { task in
            guard task == nil else { return }
            task = Task { [self] in await run() }
        }
    }

    func stop() {
        task.withLock { task in
            task?.cancel()
            task = nil
        }
    }

    private func run() async {
        var known: [[ResolvedAddress]] = Array(repeating: [], count: config.targets.count)
        var published: [Endpoint]?
        while !Task.isCancelled {
            let round = await lookUpAll(keeping: known)
            known = round.addresses
            if round.failed { stats.membershipFailures.increment() } else { stats.membershipUpdates.increment() }
            let endpoints = Self.endpoints(config, addresses: known)
            if endpoints != published {
                published = endpoints
                update(endpoints)
            }
            try? await Task.sleep(for: Self.delay(config, answers: round.failed ? [] : known.flatMap { $0 }, failed: round.failed))
        }
    }

    /// One round: each name looked up; a name whose lookup failed keeps `keeping`'s addresses.
    func lookUpAll(keeping known: [[ResolvedAddress]]) async -> (addresses: [[ResolvedAddress]], failed: Bool) {
        var addresses = known
        var failed = false
        for (index, target) in config.targets.enumerated() {
            do {
                addresses[index] = try await lookUp(target.host)
            } catch {
                failed = true
            }
        }
        return (addresses, failed)
    }

    /// A name's addresses in `dns_lookup_family`'s order; an IP address stands for itself.
    private func lookUp(_ host: String) async throws -> [ResolvedAddress] {
        if (try? SocketAddress(ipAddress: host, port: 0)) != nil { return [ResolvedAddress(address: host, ttl: nil)] }
        let nameservers = config.nameservers
        func ask(_ ipv6: Bool) async throws -> [ResolvedAddress] {
            try await resolver.lookup(host, ipv6: ipv6, nameservers: nameservers)
        }
        switch config.family {
        case .v4Only: return try await ask(false)
        case .v6Only: return try await ask(true)
        case .auto:
            let first = try await ask(true)
            return first.isEmpty ? try await ask(false) : first
        case .v4Preferred:
            let first = try await ask(false)
            return first.isEmpty ? try await ask(true) : first
        case .all:
            return try await ask(false) + ask(true)
        }
    }

    /// The hosts the addresses make: every address of every name (STRICT_DNS), or the first (LOGICAL_DNS).
    static func endpoints(_ config: DNSClusterConfig, addresses: [[ResolvedAddress]]) -> [Endpoint] {
        var endpoints: [Endpoint] = []
        for (target, resolved) in zip(config.targets, addresses) {
            for address in resolved {
                guard let socket = try? SocketAddress(ipAddress: address.address, port: target.port) else { continue }
                endpoints.append(Endpoint(socket, weight: target.weight, transportSocketMatch: target.transportSocketMatch))
                if config.kind == .logical { return endpoints }
            }
        }
        return endpoints
    }

    /// When to look again: after a failure, or without `respect_dns_ttl` or a TTL, `dns_refresh_rate`;
    /// else the shortest TTL (at least a second, so that TTL 0 does not spin).
    static func delay(_ config: DNSClusterConfig, answers: [ResolvedAddress], failed: Bool) -> Duration {
        guard !failed, config.respectTTL, let ttl = answers.compactMap(\.ttl).min() else { return config.refreshRate }
        return ttl > .zero ? max(ttl, .seconds(1)) : config.refreshRate
    }
}
