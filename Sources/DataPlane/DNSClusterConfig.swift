import Configuration
import NIOCore
import SwiftProtobuf
import XDS

/// A `STRICT_DNS` or `LOGICAL_DNS` cluster's names and how the proxy looks them up: the endpoints of
/// its `load_assignment` (a host name or an IP address each, with a port), `dns_refresh_rate`,
/// `respect_dns_ttl`, `dns_lookup_family`, and the nameservers of its `typed_dns_resolver_config`.
struct DNSClusterConfig: Sendable, Equatable {
    enum Kind: Sendable, Equatable {
        /// STRICT_DNS: every address of every name is a host.
        case strict
        /// LOGICAL_DNS: one host, at the first address of the latest answer.
        case logical
    }

    /// `dns_lookup_family`.
    enum LookupFamily: Sendable, Equatable {
        /// AUTO: AAAA, A when there are none.
        case auto
        case v4Only
        case v6Only
        /// V4_PREFERRED: A, AAAA when there are none.
        case v4Preferred
        /// ALL: both.
        case all
    }

    /// A name of the load assignment, with what its addresses' endpoints carry.
    struct Target: Sendable, Equatable {
        var host: String
        var port: Int
        var weight: Int
        var transportSocketMatch: [String: Google_Protobuf_Value]
    }

    var kind: Kind
    var targets: [Target]
    /// How long between lookups (Envoy's default 5 s), and after a failed one.
    var refreshRate: Duration = .seconds(5)
    /// The records' TTL paces lookups instead of `refreshRate` (when the resolver gives one).
    var respectTTL = false
    var family = LookupFamily.auto
    /// The nameservers to ask (c-ares' `resolvers`); empty: /etc/resolv.conf's.
    var nameservers: [SocketAddress] = []
    /// `envoy.network.dns_resolver.getaddrinfo`: the C library's resolver (no TTLs), not the stub resolver.
    var usesSystemResolver = false

    static let caresResolverName = "envoy.network.dns_resolver.cares"
    static let getaddrinfoResolverName = "envoy.network.dns_resolver.getaddrinfo"
    private static let caresType = "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig"
    private static let getaddrinfoType = "type.googleapis.com/envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig"

    /// Reads a DNS cluster (`proto.type` STRICT_DNS or LOGICAL_DNS); errors name the field under `path`.
    /// Fields read but not acted on (an endpoint group's locality and weight) go to `notActedOn`.
    init(_ proto: Envoy_Config_Cluster_V3_Cluster, path: String, notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        kind = proto.type == .logicalDns ? .logical : .strict
        var targets: [Target] = []
        let assignmentPath = "\(path).load_assignment"
        for (groupIndex, group) in proto.loadAssignment.endpoints.enumerated() {
            let groupPath = "\(assignmentPath).endpoints[\(groupIndex)]"
            if group.hasLocality || group.hasLoadBalancingWeight {
                notActedOn.append(.init(path: "load_assignment.endpoints[\(groupIndex)].\(group.hasLocality ? "locality" : "load_balancing_weight")",
                                        reason: "a DNS cluster's resolved hosts are one locality: its groups' locality and weight are not used"))
            }
            if group.priority != 0 {
                throw ConfigError(path: "\(groupPath).priority", message: "priorities are not supported for DNS clusters (0 only)")
            }
            for (index, endpoint) in group.lbEndpoints.enumerated() {
                let endpointPath = "\(groupPath).lb_endpoints[\(index)]"
                guard case .endpoint(let inner)? = endpoint.hostIdentifier, case .socketAddress(let socket)? = inner.address.address else {
                    throw ConfigError(path: "\(endpointPath).endpoint.address.socket_address", message: "is required: a host name (or IP address) and a port")
                }
                let host = socket.address
                guard Self.isLookupName(host) else {
                    throw ConfigError(path: "\(endpointPath).endpoint.address.socket_address.address",
                                      message: "\"\(host)\" is not a host name or an IP address")
                }
                guard case .portValue(let port)? = socket.portSpecifier, (1...65535).contains(port) else {
                    throw ConfigError(path: "\(endpointPath).endpoint.address.socket_address.port_value", message: "needs a port 1-65535")
                }
                var weight = 1
                if endpoint.hasLoadBalancingWeight {
                    guard endpoint.loadBalancingWeight.value >= 1 else {
                        throw ConfigError(path: "\(endpointPath).load_balancing_weight", message: "must be at least 1")
                    }
                    weight = Int(endpoint.loadBalancingWeight.value)
                }
                targets.append(Target(host: host, port: Int(port), weight: weight,
                                      transportSocketMatch: endpoint.metadata.filterMetadata[XDSResourceDecoder.transportSocketMatchKey]?.fields ?? [:]))
            }
        }
        guard !targets.isEmpty else {
            throw ConfigError(path: "\(assignmentPath).endpoints", message: "a DNS cluster needs at least one host name to look up")
        }
        if kind == .logical && targets.count > 1 {
            throw ConfigError(path: "\(assignmentPath).endpoints", message: "LOGICAL_DNS takes exactly one endpoint (\(targets.count) given)")
        }
        self.targets = targets
        if proto.hasDnsRefreshRate {
            let rate = XDSResourceDecoder.duration(proto.dnsRefreshRate)
            guard rate > .milliseconds(1) else {
                throw ConfigError(path: "\(path).dns_refresh_rate", message: "must be above 1ms")
            }
            refreshRate = rate
        }
        respectTTL = proto.respectDnsTtl
        switch proto.dnsLookupFamily {
        case .auto: family = .auto
        case .v4Only: family = .v4Only
        case .v6Only: family = .v6Only
        case .v4Preferred: family = .v4Preferred
        case .all: family = .all
        case .UNRECOGNIZED(let number): throw ConfigError(path: "\(path).dns_lookup_family", message: "\(number) is not a lookup family")
        }
        if proto.hasTypedDnsResolverConfig {
            let config = proto.typedDnsResolverConfig
            usesSystemResolver = config.name == Self.getaddrinfoResolverName || config.typedConfig.typeURL == Self.getaddrinfoType
            nameservers = try Self.nameservers(config, path: "\(path).typed_dns_resolver_config", notActedOn: &notActedOn)
        }
    }

    /// The c-ares config's `resolvers` (IP addresses with ports); the getaddrinfo resolver has none.
    private static func nameservers(_ config: Envoy_Config_Core_V3_TypedExtensionConfig, path: String,
                                    notActedOn: inout [FieldNotActedOn]) throws(ConfigError) -> [SocketAddress] {
        let type = config.typedConfig.typeURL
        if config.name == getaddrinfoResolverName || type == getaddrinfoType { return [] }
        guard config.name == caresResolverName || type == caresType else {
            throw ConfigError(path: "\(path).name", message: "\"\(config.name)\" is not supported (\(caresResolverName), \(getaddrinfoResolverName))")
        }
        guard type == caresType, let cares = try? Envoy_Extensions_Network_DnsResolver_Cares_V3_CaresDnsResolverConfig(unpackingAny: config.typedConfig) else {
            throw ConfigError(path: "\(path).typed_config", message: "needs a \(caresType)")
        }
        if cares.useResolversAsFallback {
            notActedOn.append(.init(path: "typed_dns_resolver_config.typed_config.use_resolvers_as_fallback",
                                    reason: "the resolvers given are always asked (never /etc/resolv.conf's first)"))
        }
        var addresses: [SocketAddress] = []
        for (index, resolver) in cares.resolvers.enumerated() {
            let resolverPath = "\(path).typed_config.resolvers[\(index)].socket_address"
            guard case .socketAddress(let socket)? = resolver.address else {
                throw ConfigError(path: resolverPath, message: "is required: a nameserver's IP address and port")
            }
            let port: Int
            switch socket.portSpecifier {
            case .portValue(let value)?:
                guard (1...65535).contains(value) else { throw ConfigError(path: "\(resolverPath).port_value", message: "\(value) is not a port") }
                port = Int(value)
            case nil: port = 53
            }
            do {
                addresses.append(try SocketAddress(ipAddress: socket.address, port: port))
            } catch {
                throw ConfigError(path: "\(resolverPath).address", message: "\"\(socket.address)\" is not an IP address")
            }
        }
        return addresses
    }

    /// A name that can be looked up (letters, digits, `-`, `_`, dots between labels) or an IP address.
    static func isLookupName(_ text: String) -> Bool {
        if (try? SocketAddress(ipAddress: text, port: 0)) != nil { return true }
        guard !text.isEmpty, text.utf8.count <= 253 else { return false }
        let name = text.hasSuffix(".") ? String(text.dropLast()) : text
        return name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            !label.isEmpty && label.utf8.count <= 63
                && label.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d || $0 == 0x5f }
        }
    }
}
