import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// One address a name resolved to, with how long the answer may be kept (nil: the source gives no TTL).
struct ResolvedAddress: Sendable, Equatable {
    var address: String
    var ttl: Duration?
}

/// Looks names up for the proxy's DNS clusters: A or AAAA records of one name, asked of `nameservers`
/// (empty: the system's, from /etc/resolv.conf). An answer without records is an empty list (the name
/// has no addresses now); a lookup that could not be made (timeout, server failure) throws, and the
/// cluster keeps the addresses it had.
protocol HostnameResolution: Sendable {
    /// Whether `lookup` can ask nameservers given with the cluster (c-ares' `resolvers`).
    var takesNameservers: Bool { get }
    func lookup(_ name: String, ipv6: Bool, nameservers: [SocketAddress]) async throws -> [ResolvedAddress]
}

/// Why a lookup failed.
struct HostnameResolutionError: Error, CustomStringConvertible {
    let description: String
}

/// The C library's resolver (`getaddrinfo`, Envoy's `envoy.network.dns_resolver.getaddrinfo`): reads
/// /etc/resolv.conf and /etc/hosts, gives no TTLs (the cluster's `dns_refresh_rate` paces it) and
/// cannot be pointed at other nameservers. Runs on NIO's blocking-work pool.
struct SystemHostnameResolver: HostnameResolution {
    var takesNameservers: Bool { false }

    func lookup(_ name: String, ipv6: Bool, nameservers: [SocketAddress]) async throws -> [ResolvedAddress] {
        guard nameservers.isEmpty else {
            throw HostnameResolutionError(description: "the system resolver cannot be given nameservers")
        }
        return try await NIOThreadPool.singleton.runIfActive {
            try Self.getaddrinfo(name, family: ipv6 ? AF_INET6 : AF_INET)
        }
    }

    private static func getaddrinfo(_ name: String, family: Int32) throws -> [ResolvedAddress] {
        var hints = addrinfo()
        hints.ai_family = family
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let status = Glibc.getaddrinfo(name, nil, &hints, &result)
        defer { if let result { freeaddrinfo(result) } }
        switch status {
        case 0: break
        // The name or its records of this family do not exist: an answer, with no addresses.
        // (EAI_NODATA and EAI_ADDRFAMILY are glibc's, behind _GNU_SOURCE: their values.)
        case EAI_NONAME, -5, -9: return []
        default: throw HostnameResolutionError(description: "getaddrinfo(\(name)): \(String(cString: gai_strerror(status)))")
        }
        var addresses: [ResolvedAddress] = []
        var cursor = result
        while let info = cursor {
            if let pointer = info.pointee.ai_addr,
               let address = try? SocketAddress(pointer, family: info.pointee.ai_family), let text = address.ipAddress,
               !addresses.contains(where: { $0.address == text }) {
                addresses.append(ResolvedAddress(address: text, ttl: nil))
            }
            cursor = info.pointee.ai_next
        }
        return addresses
    }
}

extension SocketAddress {
    /// The address a `sockaddr` of `family` holds.
    fileprivate init(_ pointer: UnsafeMutablePointer<sockaddr>, family: Int32) throws {
        switch family {
        case AF_INET:
            self = pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { SocketAddress($0.pointee, host: "") }
        case AF_INET6:
            self = pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { SocketAddress($0.pointee, host: "") }
        default:
            throw HostnameResolutionError(description: "address family \(family)")
        }
    }
}
