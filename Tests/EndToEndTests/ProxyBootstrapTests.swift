import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// `capstan proxy --config`: static listeners and clusters from an Envoy bootstrap subset.
@Suite struct ProxyBootstrapTests {
    static func tcpProxy(_ route: String) -> String {
        """
        "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
          "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
          "stat_prefix": "tcp", \(route)}}]
        """
    }

    static func staticCluster(_ name: String, _ endpoints: [String], extra: String = "") -> String {
        let lbEndpoints = endpoints.map {
            #"{"endpoint": {"address": {"socket_address": {"address": "\#($0)", "port_value": 80}}}}"#
        }.joined(separator: ", ")
        return """
            {"name": "\(name)", "type": "STATIC", "connect_timeout": "1s", "lb_policy": "ROUND_ROBIN", \(extra)
             "load_assignment": {"cluster_name": "\(name)", "endpoints": [{"lb_endpoints": [\(lbEndpoints)]}]}}
            """
    }

    /// The outbound listener: port 9080 in 198.51.100.0/24 splits 90/10 between two "versions" (the
    /// two remote addresses), port 7000 round-robins over both, port 7001 allows two connections, and
    /// everything else passes through.
    static let bootstrap = """
        {
          "node": {"id": "sidecar~192.0.2.1~app.default~default.svc.cluster.local"},
          "static_resources": {
            "listeners": [
              {"name": "virtualOutbound", "traffic_direction": "OUTBOUND",
               "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
               "per_connection_buffer_limit_bytes": 32768,
               "filter_chains": [
                 {"name": "reviews", "filter_chain_match": {"destination_port": 9080,
                    "prefix_ranges": [{"address_prefix": "198.51.100.0", "prefix_len": 24}]},
                  \(tcpProxy(#""weighted_clusters": {"clusters": [{"name": "v1", "weight": 90}, {"name": "v2", "weight": 10}]}"#))},
                 {"name": "round-robin", "filter_chain_match": {"destination_port": 7000}, \(tcpProxy(#""cluster": "both""#))},
                 {"name": "limited", "filter_chain_match": {"destination_port": 7001}, \(tcpProxy(#""cluster": "limited""#))}
               ],
               "default_filter_chain": {\(tcpProxy(#""cluster": "PassthroughCluster""#))}},
              {"name": "virtualInbound", "traffic_direction": "INBOUND",
               "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}},
               "default_filter_chain": {\(tcpProxy(#""cluster": "InboundPassthroughCluster""#))}}
            ],
            "clusters": [
              {"name": "PassthroughCluster", "type": "ORIGINAL_DST", "connect_timeout": "1s"},
              {"name": "InboundPassthroughCluster", "type": "ORIGINAL_DST", "connect_timeout": "1s"},
              \(staticCluster("v1", ["198.51.100.10"])),
              \(staticCluster("v2", ["198.51.100.99"])),
              \(staticCluster("both", ["198.51.100.10", "198.51.100.99"])),
              \(staticCluster("limited", ["198.51.100.10"], extra: #""circuit_breakers": {"thresholds": [{"max_connections": 2}]},"#))
            ]
          }
        }
        """

    func withConfiguredProxy<T>(_ body: (Sandbox, ProxyProcess) throws -> T) throws -> T {
        try withSandbox { sandbox in
            try sandbox.initialize()
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-bootstrap-\(sandbox.name).json")
            try Self.bootstrap.write(to: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: file) }
            let remote = try EchoServer(in: sandbox.peer, port: 80)
            let proxy = try ProxyProcess(in: sandbox, arguments: ["--config", file.path])
            defer { proxy.stop() }
            return try withExtendedLifetime(remote) { try body(sandbox, proxy) }
        }
    }

    @Test func weightedClustersSplitNinetyTen() throws {
        try withConfiguredProxy { sandbox, _ in
            var answeredBy: [String: Int] = [:]
            for _ in 0..<1000 {
                let exchange = try EchoExchange.run(to: SocketAddress(Sandbox.remoteV4, 9080), from: sandbox.pod, payload: [7])
                answeredBy[exchange.serverAddress, default: 0] += 1
            }
            let v1 = answeredBy["\(Sandbox.remoteV4):80"] ?? 0
            let v2 = answeredBy["\(Sandbox.otherRemoteV4):80"] ?? 0
            #expect(v1 + v2 == 1000, "\(answeredBy)")
            // 90/10 within ±3 % of the connections.
            #expect((870...930).contains(v1), "\(answeredBy)")
        }
    }

    @Test func roundRobinAlternatesAndOtherPortsPassThrough() throws {
        try withConfiguredProxy { sandbox, proxy in
            var order: [String] = []
            for _ in 0..<6 {
                order.append(try EchoExchange.run(to: SocketAddress(Sandbox.remoteV4, 7000), from: sandbox.pod, payload: [1]).serverAddress)
            }
            #expect(Set(order).count == 2)
            #expect(zip(order, order.dropFirst()).allSatisfy { $0 != $1 }, "\(order)")
            // No chain for port 80: the default chain, to the original destination.
            let passthrough = try EchoExchange.run(to: SocketAddress(Sandbox.otherRemoteV4, 80), from: sandbox.pod, payload: [2])
            #expect(passthrough.serverAddress == "\(Sandbox.otherRemoteV4):80")
            #expect(try proxy.admin("GET", "/stats").body.contains("cluster.both.upstream_cx_total: 6"))
        }
    }

    @Test func maxConnectionsRefusesTheThirdConnection() throws {
        try withConfiguredProxy { sandbox, proxy in
            let target = SocketAddress(Sandbox.remoteV4, 7001)
            var open: [ProbeSocket] = []
            for _ in 0..<2 {
                let socket = try ProbeSocket.tcp(.ipv4, in: sandbox.pod, uid: 1000, gid: 1000)
                try socket.connect(to: target, timeoutMilliseconds: 1000)
                #expect(try socket.receive(count: 5) == Array("peer=".utf8))
                open.append(socket)
            }
            let third = try ProbeSocket.tcp(.ipv4, in: sandbox.pod, uid: 1000, gid: 1000)
            try third.connect(to: target, timeoutMilliseconds: 1000)
            #expect(try third.receive(count: 1).isEmpty)
            #expect(try proxy.admin("GET", "/stats").body.contains("cluster.limited.upstream_cx_overflow: 1"))
            #expect(try proxy.admin("GET", "/config_dump").body.contains("\"max_connections\" : 2"))
            withExtendedLifetime(open) {}
        }
    }

    @Test func invalidBootstrapsAreRefusedWithTheFieldPath() throws {
        let cases: [(String, String, String)] = [
            ("\"port_value\": 15006", "\"port_value\": 70000", "static_resources.listeners[1].address.socket_address.port_value: 70000 is out of range"),
            ("\"weight\": 10", "\"weight\": \"ten\"", "weighted_clusters.clusters[1].weight: expected a whole number"),
            ("\"cluster\": \"both\"", "\"cluster\": \"nowhere\"", "routes to unknown cluster \"nowhere\""),
            ("\"connect_timeout\": \"1s\", \"lb_policy\"", "\"connect_timeout\": \"soon\", \"lb_policy\"", "connect_timeout: expected a duration"),
            ("{", "[", "not valid JSON"),
        ]
        for (original, broken, message) in cases {
            let text = Self.bootstrap.replacingOccurrences(of: original, with: broken, options: [], range: Self.bootstrap.range(of: original))
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-bad-\(getpid())-\(message.count).json")
            try text.write(to: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: file) }
            let result = try ChildProcess.run(Sandbox.capstanExecutable, ["proxy", "--config", file.path])
            #expect(result.status == 2, "\(broken): \(result)")
            #expect(result.standardError.contains(message), "\(result.standardError)")
        }
    }

    /// The outbound listener of ``bootstrap`` in YAML, as most Envoy and Istio users write it: port 7000
    /// round-robins over both remotes, anything else passes through.
    static let yamlBootstrap = """
        node: {id: sidecar~192.0.2.1~app.default~default.svc.cluster.local}
        static_resources:
          listeners:
          - name: virtualOutbound
            address: {socket_address: {address: 0.0.0.0, port_value: 15001}}
            filter_chains:
            - filter_chain_match: {destination_port: 7000}
              filters:
              - name: envoy.filters.network.tcp_proxy
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                  cluster: both
            default_filter_chain:
              filters:
              - name: envoy.filters.network.tcp_proxy
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                  cluster: PassthroughCluster
          clusters:
          - {name: PassthroughCluster, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED}
          - name: both
            connect_timeout: 1s
            load_assignment:
              endpoints:
              - lb_endpoints:
                - endpoint: {address: {socket_address: {address: 198.51.100.10, port_value: 80}}}
                - endpoint: {address: {socket_address: {address: 198.51.100.99, port_value: 80}}}
        """

    @Test func aYAMLBootstrapIsReadAsTheJSONOneIs() throws {
        try withSandbox { sandbox in
            try sandbox.initialize()
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-bootstrap-\(sandbox.name).yaml")
            try Self.yamlBootstrap.write(to: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: file) }
            let remote = try EchoServer(in: sandbox.peer, port: 80)
            let proxy = try ProxyProcess(in: sandbox, arguments: ["--config", file.path])
            defer { proxy.stop() }
            try withExtendedLifetime(remote) {
                var order: [String] = []
                for _ in 0..<4 {
                    order.append(try EchoExchange.run(to: SocketAddress(Sandbox.remoteV4, 7000), from: sandbox.pod, payload: [1]).serverAddress)
                }
                #expect(Set(order).count == 2, "\(order)")
                let passthrough = try EchoExchange.run(to: SocketAddress(Sandbox.otherRemoteV4, 80), from: sandbox.pod, payload: [2])
                #expect(passthrough.serverAddress == "\(Sandbox.otherRemoteV4):80")
                #expect(try proxy.admin("GET", "/config_dump").body.contains("\"name\" : \"both\""))
            }
        }
        // A bad value in YAML is refused with its path, as in JSON.
        let broken = Self.yamlBootstrap.replacingOccurrences(of: "connect_timeout: 1s", with: "connect_timeout: soon")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-bad-\(getpid())-yaml.yml")
        try broken.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let result = try ChildProcess.run(Sandbox.capstanExecutable, ["proxy", "--config", file.path])
        #expect(result.status == 2, "\(result)")
        #expect(result.standardError.contains("static_resources.clusters[1].connect_timeout: expected a duration"), "\(result.standardError)")
    }

    @Test func unknownFieldsAreIgnoredWithAWarning() throws {
        try withSandbox { sandbox in
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-bootstrap-\(sandbox.name).json")
            try Self.bootstrap.write(to: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: file) }
            let proxy = try ProxyProcess(in: sandbox, arguments: ["--config", file.path])
            proxy.signal(SIGINT)
            #expect(proxy.waitForExit(seconds: 5) != nil)
            #expect(proxy.errorOutput.contains("static_resources.listeners[0].per_connection_buffer_limit_bytes: not supported by Capstan, ignored"))
        }
    }
}
