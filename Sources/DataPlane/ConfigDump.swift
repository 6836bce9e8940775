import FoundationEssentials
import NIOCore

/// `/config_dump`: the listeners and clusters in force, in the shape of Envoy's dump: a `configs` list
/// with a clusters dump and a listeners dump, static resources apart from dynamic ones, and each
/// dynamic resource with the version it came in and when.
struct ConfigDump {
    struct Address: Encodable {
        struct Socket: Encodable {
            var address: String
            var port_value: Int
        }
        var socket_address: Socket
    }

    struct ListenerEntry: Encodable {
        struct Chain: Encodable {
            var name: String
            var destination_port: Int?
            var prefix_ranges: [String]
            var clusters: [String]
        }
        var name: String
        var address: Address
        var traffic_direction: String
        var transparent: Bool
        var filter_chains: [Chain]
        var default_filter_chain: Chain?
    }

    struct ClusterEntry: Encodable {
        var name: String
        var type: String
        var endpoints: [String]
        var max_connections: Int?
    }

    struct ClustersDump: Encodable {
        struct Static: Encodable { var cluster: ClusterEntry }
        struct Dynamic: Encodable {
            var version_info: String
            var cluster: ClusterEntry
            var last_updated: String
        }
        var type = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"
        var version_info: String?
        var static_clusters: [Static]
        var dynamic_active_clusters: [Dynamic]
        var dynamic_warming_clusters: [String]

        enum CodingKeys: String, CodingKey {
            case type = "@type", version_info, static_clusters, dynamic_active_clusters, dynamic_warming_clusters
        }
    }

    struct ListenersDump: Encodable {
        struct Static: Encodable { var listener: ListenerEntry }
        struct Dynamic: Encodable {
            struct State: Encodable {
                var version_info: String
                var listener: ListenerEntry
                var last_updated: String
            }
            var name: String
            var active_state: State
        }
        var type = "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"
        var version_info: String?
        var static_listeners: [Static]
        var dynamic_listeners: [Dynamic]

        enum CodingKeys: String, CodingKey {
            case type = "@type", version_info, static_listeners, dynamic_listeners
        }
    }

    var clusters: ClustersDump
    var listeners: ListenersDump

    init(runtime: ProxyRuntime) {
        let configuration = runtime.configuration
        let versions = runtime.versions.withLockedValue { $0 }
        func chain(_ chain: BootstrapConfig.FilterChain) -> ListenerEntry.Chain {
            .init(name: chain.name, destination_port: chain.destinationPort,
                  prefix_ranges: chain.prefixes.map(\.description), clusters: chain.route.clusterNames)
        }
        var listeners = ListenersDump(version_info: versions.accepted["LDS"], static_listeners: [], dynamic_listeners: [])
        for listener in configuration.listeners.values.sorted(by: { $0.name < $1.name }) {
            let entry = ListenerEntry(name: listener.name,
                                      address: Address(socket_address: .init(address: "0.0.0.0", port_value: listener.port)),
                                      traffic_direction: listener.direction == .inbound ? "INBOUND" : "OUTBOUND",
                                      transparent: listener.transparent, filter_chains: listener.chains.map(chain),
                                      default_filter_chain: listener.defaultChain.map(chain))
            if let version = versions.listeners[listener.name] {
                listeners.dynamic_listeners.append(.init(name: listener.name, active_state: .init(
                    version_info: version.version, listener: entry, last_updated: version.lastUpdated)))
            } else {
                listeners.static_listeners.append(.init(listener: entry))
            }
        }
        var clusters = ClustersDump(version_info: versions.accepted["CDS"], static_clusters: [], dynamic_active_clusters: [],
                                    dynamic_warming_clusters: versions.warmingClusters)
        for cluster in configuration.clusters.values.sorted(by: { $0.name < $1.name }) {
            let entry: ClusterEntry
            switch cluster.config.discovery {
            case .originalDestination:
                entry = ClusterEntry(name: cluster.name, type: "ORIGINAL_DST", endpoints: [], max_connections: cluster.config.maxConnections)
            case .endpoints(let endpoints):
                entry = ClusterEntry(name: cluster.name, type: versions.endpointDiscovered.contains(cluster.name) ? "EDS" : "STATIC",
                                     endpoints: endpoints.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" },
                                     max_connections: cluster.config.maxConnections)
            }
            if let version = versions.clusters[cluster.name] {
                clusters.dynamic_active_clusters.append(.init(version_info: version.version, cluster: entry, last_updated: version.lastUpdated))
            } else {
                clusters.static_clusters.append(.init(cluster: entry))
            }
        }
        self.clusters = clusters
        self.listeners = listeners
    }

    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(["configs": [AnyEncodable(clusters), AnyEncodable(listeners)]])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}

/// Lets two lists of different types share one JSON object.
private struct AnyEncodable: Encodable {
    let encodeValue: (any Encoder) throws -> Void
    init(_ value: some Encodable) { encodeValue = value.encode }
    func encode(to encoder: any Encoder) throws { try encodeValue(encoder) }
}

extension DestinationPrefix: CustomStringConvertible {
    var description: String {
        let address = bytes.count == 4
            ? bytes.map(String.init).joined(separator: ".")
            : stride(from: 0, to: 16, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }.joined(separator: ":")
        return "\(address)/\(length)"
    }
}
