import FoundationEssentials
import NIOCore

/// `/config_dump`: the static listeners and clusters in force, shaped like Envoy's admin dump.
struct ConfigDump: Encodable {
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

    var listeners: [ListenerEntry]
    var clusters: [ClusterEntry]

    init(runtime: ProxyRuntime) {
        func chain(_ chain: BootstrapConfig.FilterChain) -> ListenerEntry.Chain {
            .init(name: chain.name, destination_port: chain.destinationPort,
                  prefix_ranges: chain.prefixes.map(\.description), clusters: chain.route.clusterNames)
        }
        listeners = runtime.listeners.map { listener in
            ListenerEntry(name: listener.name,
                          address: Address(socket_address: .init(address: "0.0.0.0", port_value: listener.port)),
                          traffic_direction: listener.direction == .inbound ? "INBOUND" : "OUTBOUND",
                          transparent: listener.transparent, filter_chains: listener.chains.map(chain),
                          default_filter_chain: listener.defaultChain.map(chain))
        }
        clusters = runtime.clusters.values.sorted { $0.name < $1.name }.map { cluster in
            switch cluster.config.discovery {
            case .originalDestination:
                ClusterEntry(name: cluster.name, type: "ORIGINAL_DST", endpoints: [], max_connections: cluster.config.maxConnections)
            case .endpoints(let endpoints):
                ClusterEntry(name: cluster.name, type: "STATIC", endpoints: endpoints.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" },
                             max_connections: cluster.config.maxConnections)
            }
        }
    }

    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(["static_listeners": AnyEncodable(listeners), "static_clusters": AnyEncodable(clusters)])) ?? Data()
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
