import FoundationEssentials
import Configuration
@testable import DataPlane
import NIOCore
import SwiftProtobuf
import HTTPProxy
import Testing
import XDS

@Suite struct XDSResourceDecoderTests {
    func tcpProxyFilter(cluster: String) throws -> Envoy_Config_Listener_V3_Filter {
        var proxy = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy()
        proxy.statPrefix = cluster
        proxy.cluster = cluster
        var filter = Envoy_Config_Listener_V3_Filter()
        filter.name = "envoy.filters.network.tcp_proxy"
        filter.typedConfig = try Google_Protobuf_Any(message: proxy)
        return filter
    }

    func listener(filters: [Envoy_Config_Listener_V3_Filter], port: UInt32 = 15001) -> Envoy_Config_Listener_V3_Listener {
        var listener = Envoy_Config_Listener_V3_Listener()
        listener.name = "virtualOutbound"
        listener.address.socketAddress.address = "0.0.0.0"
        listener.address.socketAddress.portValue = port
        var chain = Envoy_Config_Listener_V3_FilterChain()
        chain.filterChainMatch.destinationPort = Google_Protobuf_UInt32Value(9080)
        chain.filterChainMatch.prefixRanges = [Envoy_Config_Core_V3_CidrRange.with {
            $0.addressPrefix = "198.51.100.0"
            $0.prefixLen = Google_Protobuf_UInt32Value(24)
        }]
        chain.filters = filters
        listener.filterChains = [chain]
        var tls = chain
        tls.filterChainMatch.transportProtocol = "tls"
        listener.filterChains.append(tls)
        return listener
    }

    @Test func listenersBecomeFilterChainsAndTLSChainsMatchOnlyDetectedTLS() throws {
        let decoded = try XDSResourceDecoder.listeners([try .packed(listener(filters: [tcpProxyFilter(cluster: "svc")]), as: .listener)])
        let only = try #require(decoded.first)
        #expect(only.port == 15001)
        #expect(only.chains.count == 2)
        let destination = try SocketAddress(ipAddress: "198.51.100.7", port: 9080)
        #expect(only.chain(for: destination)?.transportProtocol == nil)
        #expect(only.chain(for: destination, detected: .init(transportProtocol: "tls"))?.transportProtocol == "tls")
        #expect(only.chain(for: try SocketAddress(ipAddress: "198.51.101.7", port: 9080)) == nil)
    }

    @Test func refusalsNameTheResourceAndField() throws {
        var manager = Envoy_Config_Listener_V3_Filter()
        manager.name = "envoy.filters.network.http_connection_manager"
        var redis = Envoy_Config_Listener_V3_Filter()
        redis.name = "envoy.filters.network.redis_proxy"
        redis.typedConfig.typeURL = "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"
        let cases: [(Google_Protobuf_Any, String)] = [
            (try .packed(listener(filters: [manager]), as: .listener),
             "listener \"virtualOutbound\".filter_chains[0].filters[0].typed_config: needs a type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"),
            (try .packed(listener(filters: [redis]), as: .listener),
             "listener \"virtualOutbound\".filter_chains[0].filters[0]: \"envoy.filters.network.redis_proxy\" (envoy.extensions.filters.network.redis_proxy.v3.RedisProxy) is not supported: a chain ends in envoy.filters.network.tcp_proxy or envoy.filters.network.http_connection_manager"),
            (try .packed(listener(filters: []), as: .listener),
             "listener \"virtualOutbound\".filter_chains[0].filters: needs a terminal filter, envoy.filters.network.tcp_proxy or envoy.filters.network.http_connection_manager"),
            (try .packed(listener(filters: [tcpProxyFilter(cluster: "svc"), tcpProxyFilter(cluster: "svc")]), as: .listener),
             "listener \"virtualOutbound\".filter_chains[0].filters[0]: \"envoy.filters.network.tcp_proxy\" (envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy) must be the chain's last filter"),
            (try .packed(listener(filters: [tcpProxyFilter(cluster: "svc")], port: 0), as: .listener),
             "listener \"virtualOutbound\".address.socket_address.port_value: 0 is out of range 1-65535"),
        ]
        for (resource, message) in cases {
            #expect(throws: ConfigError.self) { try XDSResourceDecoder.listeners([resource]) }
            do {
                _ = try XDSResourceDecoder.listeners([resource])
            } catch {
                #expect(error.description == message)
            }
        }
        var cluster = Envoy_Config_Cluster_V3_Cluster()
        cluster.name = "svc"
        cluster.type = .static
        cluster.lbPolicy = .clusterProvided
        #expect(throws: ConfigError.self) { try XDSResourceDecoder.clusters([try .packed(cluster, as: .cluster)]) }
        // A listener where a cluster belongs is refused, not misread.
        #expect(throws: ConfigError.self) { try XDSResourceDecoder.clusters([try .packed(listener(filters: []), as: .listener)]) }
    }

    @Test func edsClustersWaitForAssignmentsAndUnhealthyEndpointsAreLeftOut() throws {
        var cluster = Envoy_Config_Cluster_V3_Cluster()
        cluster.name = "outbound|9080|v1|payments.shop.svc.cluster.local"
        cluster.type = .eds
        let decoded = try XDSResourceDecoder.clusters([try .packed(cluster, as: .cluster)])
        #expect(decoded.first?.endpointService == cluster.name)
        var assignment = Envoy_Config_Endpoint_V3_ClusterLoadAssignment()
        assignment.clusterName = cluster.name
        assignment.endpoints = [.with {
            $0.lbEndpoints = [("198.51.100.10", Envoy_Config_Core_V3_HealthStatus.healthy), ("198.51.100.11", .draining)].map { address, health in
                .with {
                    $0.endpoint.address.socketAddress.address = address
                    $0.endpoint.address.socketAddress.portValue = 80
                    $0.healthStatus = health
                }
            }
        }]
        let endpoints = try XDSResourceDecoder.assignments([try .packed(assignment, as: .endpoint)]).mapValues(\.endpoints)
        #expect(endpoints[cluster.name]?.map(\.address.ipAddress) == ["198.51.100.10"])
    }

    func assignment(_ localities: [(priority: UInt32, endpoints: [(String, Envoy_Config_Core_V3_HealthStatus, UInt32?)])])
        -> Envoy_Config_Endpoint_V3_ClusterLoadAssignment {
        .with {
            $0.clusterName = "svc"
            $0.endpoints = localities.map { locality in
                .with {
                    $0.priority = locality.priority
                    $0.lbEndpoints = locality.endpoints.map { address, health, weight in
                        .with {
                            $0.endpoint.address.socketAddress = .with { $0.address = address; $0.portValue = 80 }
                            $0.healthStatus = health
                            if let weight { $0.loadBalancingWeight = Google_Protobuf_UInt32Value(weight) }
                        }
                    }
                }
            }
        }
    }

    func endpoints(_ assignment: Envoy_Config_Endpoint_V3_ClusterLoadAssignment) throws -> [String] {
        try XDSResourceDecoder.assignments([try .packed(assignment, as: .endpoint)])["svc"]?.endpoints.map {
            "\($0.address.ipAddress ?? "")×\($0.weight)"
        } ?? []
    }

    @Test func everyPriorityIsKeptInOrderAndUnhealthyHostsCountInTheirLocality() throws {
        // Healthy (or UNKNOWN) endpoints of every priority, priority 0's first; the others count as
        // unavailable hosts of their locality, so that their priority's health is Envoy's.
        let decoded = try #require(try XDSResourceDecoder.assignments([try .packed(assignment([
            (1, [("192.0.2.20", .healthy, nil)]),
            (0, [("192.0.2.10", .unknown, 2), ("192.0.2.11", .unhealthy, nil)])]), as: .endpoint)])["svc"])
        #expect(decoded.endpoints.map { "\($0.address.ipAddress ?? "")×\($0.weight)@\($0.locality)" } == ["192.0.2.10×2@1", "192.0.2.20×1@0"])
        #expect(decoded.localities.map(\.priority) == [1, 0])
        #expect(decoded.localities.map(\.unavailable) == [0, 1])
        #expect(decoded.overprovisioningFactor == 140)
        #expect(try endpoints(assignment([(0, [("192.0.2.10", .draining, nil), ("192.0.2.11", .timeout, nil)]),
                                          (1, [("192.0.2.20", .healthy, nil), ("192.0.2.21", .healthy, 5)])])) == ["192.0.2.20×1", "192.0.2.21×5"])
        // DEGRADED endpoints are kept, marked, beside healthy ones (they take their priority's degraded load).
        let degraded = try #require(try XDSResourceDecoder.assignments([try .packed(assignment([
            (0, [("192.0.2.10", .degraded, nil)]), (1, [("192.0.2.20", .healthy, nil)])]), as: .endpoint)])["svc"])
        #expect(degraded.endpoints.map { "\($0.address.ipAddress ?? "")\($0.degraded ? " degraded" : "")" } == ["192.0.2.10 degraded", "192.0.2.20"])
        #expect(degraded.localities.map(\.unavailable) == [0, 0])
        #expect(try endpoints(assignment([(0, [("192.0.2.10", .degraded, nil), ("192.0.2.11", .unhealthy, nil)])])) == ["192.0.2.10×1"])
        #expect(try endpoints(assignment([(0, [("192.0.2.10", .unhealthy, nil)])])).isEmpty)
        #expect(throws: ConfigError(path: "cluster_load_assignment \"svc\".endpoints[0].lb_endpoints[0].load_balancing_weight", message: "must be at least 1")) {
            try endpoints(assignment([(0, [("192.0.2.10", .healthy, 0)])]))
        }
        // The locality's weight and name, and the policy's overprovisioning factor.
        var weighted = assignment([(0, [("192.0.2.10", .healthy, nil)])])
        weighted.endpoints[0].locality = .with { $0.region = "r1"; $0.zone = "z1" }
        weighted.endpoints[0].loadBalancingWeight = Google_Protobuf_UInt32Value(80)
        weighted.policy.overprovisioningFactor = Google_Protobuf_UInt32Value(100)
        let read = try #require(try XDSResourceDecoder.assignments([try .packed(weighted, as: .endpoint)])["svc"])
        #expect(read.localities == [.init(name: "r1/z1/", priority: 0, weight: 80)])
        #expect(read.overprovisioningFactor == 100)
        #expect(read.fieldsNotActedOn.isEmpty)
        weighted.endpoints[0].loadBalancingWeight = Google_Protobuf_UInt32Value(0)
        #expect(throws: ConfigError(path: "cluster_load_assignment \"svc\".endpoints[0].load_balancing_weight", message: "must be at least 1")) {
            try XDSResourceDecoder.assignments([try .packed(weighted, as: .endpoint)])
        }
        weighted.endpoints[0].loadBalancingWeight = Google_Protobuf_UInt32Value(1)
        weighted.policy.overprovisioningFactor = Google_Protobuf_UInt32Value(0)
        #expect(throws: ConfigError(path: "cluster_load_assignment \"svc\".policy.overprovisioning_factor", message: "must be above 0")) {
            try XDSResourceDecoder.assignments([try .packed(weighted, as: .endpoint)])
        }
    }

    @Test func theFirstDefaultThresholdIsTheCircuitBreakersLimits() throws {
        var cluster = Envoy_Config_Cluster_V3_Cluster()
        cluster.name = "svc"
        cluster.type = .originalDst
        cluster.lbPolicy = .clusterProvided
        cluster.circuitBreakers.thresholds = [
            .with { $0.priority = .high; $0.maxConnections = Google_Protobuf_UInt32Value(1) },
            .with {
                $0.maxConnections = Google_Protobuf_UInt32Value(7)
                $0.maxPendingRequests = Google_Protobuf_UInt32Value(9)
                $0.maxRetries = Google_Protobuf_UInt32Value(0)
                $0.trackRemaining = true
            },
            .with { $0.maxConnections = Google_Protobuf_UInt32Value(8) },
        ]
        let decoded = try XDSResourceDecoder.cluster(cluster).cluster
        var expected = CircuitBreakers.Limits()
        expected.maxConnections = 7
        expected.maxPendingRequests = 9
        expected.maxRetries = 0
        expected.tracksRemaining = true
        #expect(decoded.circuitBreakers == expected, "max_requests keeps Envoy's default, 1024")
        #expect(decoded.fieldsNotActedOn.isEmpty)
        #expect(try XDSResourceDecoder.cluster(Envoy_Config_Cluster_V3_Cluster.with {
            $0.name = "plain"
            $0.type = .originalDst
            $0.lbPolicy = .clusterProvided
        }).cluster.circuitBreakers == CircuitBreakers.Limits(), "Envoy's defaults: 1024 connections, pending and requests, 3 retries")
        cluster.loadAssignment.clusterName = "svc"
        #expect(throws: ConfigError(path: "cluster \"svc\".load_assignment",
                                    message: "an ORIGINAL_DST cluster has no endpoints: each connection goes where it was going")) {
            try XDSResourceDecoder.cluster(cluster)
        }
    }

    @Test func listenersThatBindListenOnAllAddressesAndThoseThatDoNotOnAny() throws {
        func refusal(_ change: (inout Envoy_Config_Listener_V3_Listener) -> Void) throws -> String? {
            var proto = listener(filters: [try tcpProxyFilter(cluster: "svc")])
            change(&proto)
            let decoded = Result { () throws(ConfigError) in try XDSResourceDecoder.listener(proto) }
            guard case .failure(let error) = decoded else { return nil }
            return error.description
        }
        #expect(try refusal { $0.address.socketAddress.address = "10.0.0.1" }
            == "listener \"virtualOutbound\".address.socket_address.address: \"10.0.0.1\" is not supported for a listener that binds: Capstan listens on all addresses (0.0.0.0 or ::)")
        #expect(try refusal { $0.address.socketAddress.address = "payments"; $0.bindToPort = Google_Protobuf_BoolValue(false) }
            == "listener \"virtualOutbound\".address.socket_address.address: \"payments\" is not an IP address")
        // istiod's per-service listeners: no socket, an address of their own.
        var proto = listener(filters: [try tcpProxyFilter(cluster: "svc")])
        proto.address.socketAddress.address = "10.96.0.5"
        proto.bindToPort = Google_Protobuf_BoolValue(false)
        let unbound = try XDSResourceDecoder.listener(proto)
        #expect(!unbound.bindsToPort && unbound.host == "10.96.0.5" && unbound.statName == "10.96.0.5_15001")
        #expect(unbound.fieldsNotActedOn.allSatisfy { !$0.path.contains("bind_to_port") })
        #expect(try refusal { $0.address.socketAddress.protocol = .udp }
            == "listener \"virtualOutbound\".address.socket_address.protocol: UDP is not supported: Capstan relays TCP")
        #expect(try refusal { $0.bindToPort = Google_Protobuf_BoolValue(true); $0.address.socketAddress.address = "::" } == nil)
    }

    @Test func fieldsNotActedOnAreKeptWithTheListener() throws {
        var proto = listener(filters: [try tcpProxyFilter(cluster: "svc")])
        proto.useOriginalDst = Google_Protobuf_BoolValue(true)
        proto.listenerFilters = [.with { $0.name = "envoy.filters.listener.http_inspector" }, .with { $0.name = "envoy.filters.listener.original_dst" }]
        let decoded = try XDSResourceDecoder.listener(proto)
        #expect(decoded.fieldsNotActedOn.map(\.path) == [
            "filter_chains[0].filters[0].typed_config.stat_prefix", "filter_chains[1].filters[0].typed_config.stat_prefix",
        ])
        #expect(!decoded.inspectsTLS)
        // Acted on now: the hand-off, and HTTP detection (by the connection handler).
        #expect(decoded.usesOriginalDestination && decoded.inspectsHTTP)
    }

    /// tcp_proxy's access logs (istiod sends one per chain when access logging is on) are listed by name.
    @Test func tcpProxyAccessLogsAreListedAsNotActedOn() throws {
        var proxy = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy()
        proxy.cluster = "svc"
        proxy.accessLog = [.with { $0.name = "envoy.access_loggers.file"; $0.filter = .init() }]
        var filter = Envoy_Config_Listener_V3_Filter()
        filter.name = "envoy.filters.network.tcp_proxy"
        filter.typedConfig = try Google_Protobuf_Any(message: proxy)
        let decoded = try XDSResourceDecoder.listener(listener(filters: [filter]))
        #expect(decoded.fieldsNotActedOn.map(\.description) == [0, 1].map {
            "filter_chains[\($0)].filters[0].typed_config.access_log[0]: accepted, not acted on: Capstan writes no TCP access log yet "
                + "(\"envoy.access_loggers.file\"): only HTTP connection managers' access logs are written"
        })
    }

    /// Fields outside Capstan's proto subset, in the resource and inside a typed_config, arrive as unknown
    /// bytes: each is listed by its field numbers as not acted on, never dropped silently.
    @Test func fieldsOutsideTheSubsetAreListedByNumber() throws {
        // Field 999 (a varint) and field 1000 (bytes) appended to the wire form of known messages.
        let unknown: [UInt8] = [0xB8, 0x3E, 0x01, 0xC2, 0x3E, 0x02, 0x61, 0x62]
        var proxy = Envoy_Extensions_Filters_Network_TcpProxy_V3_TcpProxy()
        proxy.cluster = "svc"
        var filter = Envoy_Config_Listener_V3_Filter()
        filter.name = "envoy.filters.network.tcp_proxy"
        filter.typedConfig.typeURL = XDSResourceDecoder.tcpProxyType
        filter.typedConfig.value = Data(try proxy.serializedBytes() as [UInt8] + unknown)
        var proto = listener(filters: [filter])
        var address = try Envoy_Config_Core_V3_Address(serializedBytes: try proto.address.serializedBytes() as [UInt8] + unknown)
        address.socketAddress.portValue = 15001
        proto.address = address
        let decoded = try XDSResourceDecoder.listeners([try .packed(proto, as: .listener)])
        let fields = try #require(decoded.first).fieldsNotActedOn.map(\.path)
        #expect(fields == ["#2.#999", "#2.#1000",
                           "filter_chains[0].filters[0].typed_config.#999", "filter_chains[0].filters[0].typed_config.#1000",
                           "filter_chains[1].filters[0].typed_config.#999", "filter_chains[1].filters[0].typed_config.#1000"], "\(fields)")

        // An EDS assignment's, which go with the clusters it feeds.
        var assignment = Envoy_Config_Endpoint_V3_ClusterLoadAssignment()
        assignment.clusterName = "svc"
        var any = try Google_Protobuf_Any.packed(assignment, as: .endpoint)
        any.value = Data(try assignment.serializedBytes() as [UInt8] + unknown)
        let decodedAssignment = try #require(try XDSResourceDecoder.assignments([any])["svc"])
        #expect(decodedAssignment.fieldsNotActedOn.map(\.path) == ["load_assignment (EDS).#999", "load_assignment (EDS).#1000"])
    }
}

/// RING_HASH and MAGLEV clusters, with Envoy's bounds.
@Suite struct ConsistentHashDecodingTests {
    func cluster(_ change: (inout Envoy_Config_Cluster_V3_Cluster) -> Void) throws -> BootstrapConfig.Cluster {
        var proto = Envoy_Config_Cluster_V3_Cluster()
        proto.name = "hashed"
        proto.type = .eds
        proto.edsClusterConfig.edsConfig.ads = Envoy_Config_Core_V3_AggregatedConfigSource()
        change(&proto)
        return try XDSResourceDecoder.cluster(proto).cluster
    }

    @Test func defaultsAndRefusals() throws {
        #expect(try cluster { $0.lbPolicy = .ringHash }.loadBalancing == .ringHash(minimumSize: 1024, maximumSize: 8_388_608))
        #expect(try cluster { $0.lbPolicy = .maglev }.loadBalancing == .maglev(tableSize: 65_537))
        #expect(try cluster {
            $0.lbPolicy = .maglev
            $0.maglevLbConfig.tableSize = Google_Protobuf_UInt64Value(251)
        }.loadBalancing == .maglev(tableSize: 251))
        #expect(throws: ConfigError(path: "cluster \"hashed\".maglev_lb_config.table_size", message: "1000 is not a prime up to 5000011")) {
            try cluster {
                $0.lbPolicy = .maglev
                $0.maglevLbConfig.tableSize = Google_Protobuf_UInt64Value(1000)
            }
        }
        #expect(throws: ConfigError(path: "cluster \"hashed\".ring_hash_lb_config.minimum_ring_size", message: "4096 is above maximum_ring_size (2048)")) {
            try cluster {
                $0.lbPolicy = .ringHash
                $0.ringHashLbConfig.minimumRingSize = Google_Protobuf_UInt64Value(4096)
                $0.ringHashLbConfig.maximumRingSize = Google_Protobuf_UInt64Value(2048)
            }
        }
        #expect(throws: ConfigError(path: "cluster \"hashed\".ring_hash_lb_config.hash_function", message: "MURMUR_HASH_2 is not supported (XX_HASH)")) {
            try cluster {
                $0.lbPolicy = .ringHash
                $0.ringHashLbConfig.hashFunction = .murmurHash2
            }
        }
        #expect(throws: ConfigError(path: "cluster \"hashed\".maglev_lb_config", message: "is for lb_policy MAGLEV")) {
            try cluster { $0.maglevLbConfig.tableSize = Google_Protobuf_UInt64Value(251) }
        }
    }
}
