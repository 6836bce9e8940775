import DNS
import Identity
import NIOCore
import Synchronization

/// Looks DNS clusters' names up with Capstan's stub resolver (the `DNS` module: A/AAAA over UDP, TCP
/// on truncation, TTLs from the answers), as Envoy's c-ares resolver does: the cluster's own
/// nameservers when it names some (`resolvers`), else /etc/resolv.conf's, read at each lookup so a
/// changed file applies from the next one. Names are asked as given (absolute; no search list, as
/// ServiceEntry hosts are fully qualified). NXDOMAIN is an answer without addresses; no answer, or a
/// server failure, is a failed lookup.
final class StubHostnameResolution: HostnameResolution {
    var takesNameservers: Bool { true }
    /// One stub resolver per configuration asked with.
    private let resolvers = Mutex<[ResolverConfiguration: StubResolver]>([:])
    private let resolvConfPath: String

    init(resolvConfPath: String = ResolverConfiguration.defaultPath) {
        self.resolvConfPath = resolvConfPath
    }

    func lookup(_ name: String, ipv6: Bool, nameservers: [SocketAddress]) async throws -> [ResolvedAddress] {
        let configuration = try configuration(nameservers)
        let resolver = resolvers.withLock { resolvers in
            if let known = resolvers[configuration] { return known }
            let made = StubResolver(configuration: configuration)
            resolvers[configuration] = made
            return made
        }
        do {
            let resolution = try await resolver.resolve(name, families: ipv6 ? .ipv6 : .ipv4)
            return resolution.addresses.map { ResolvedAddress(address: $0.address.description, ttl: .seconds(Int64($0.ttl))) }
        } catch {
            if case .nameError = error { return [] }
            throw HostnameResolutionError(description: error.description)
        }
    }

    /// The cluster's nameservers (on the first one's port, the stub resolver asks all on one), or resolv.conf's.
    private func configuration(_ nameservers: [SocketAddress]) throws -> ResolverConfiguration {
        if let first = nameservers.first {
            let hosts = nameservers.compactMap { $0.ipAddress.flatMap { HostAddress($0) } }
            return ResolverConfiguration(nameservers: hosts, port: first.port ?? 53)
        }
        let text: String
        do {
            text = try CredentialFile.read(resolvConfPath)
        } catch {
            throw HostnameResolutionError(description: "cannot read \(resolvConfPath): \(error)")
        }
        let configuration = ResolverConfiguration(parsing: text)
        guard !configuration.nameservers.isEmpty else {
            throw HostnameResolutionError(description: "\(resolvConfPath) names no nameserver")
        }
        return configuration
    }
}
