#if canImport(Glibc)
import Glibc
#endif
import Configuration
@testable import DataPlane
import FoundationEssentials
import HTTPProxy
import NIOCore
import NIOPosix
import SwiftProtobuf
import Testing
import XDS

/// `upstream_connection_options.tcp_keepalive`: decoded into the cluster, refused where Linux would
/// refuse it, and set on real upstream sockets.
@Suite struct TCPKeepaliveTests {
    func cluster(_ keepalive: Envoy_Config_Core_V3_TcpKeepalive?, extra: [UInt8] = []) throws -> Envoy_Config_Cluster_V3_Cluster {
        var cluster = Envoy_Config_Cluster_V3_Cluster()
        cluster.name = "svc"
        cluster.type = .originalDst
        cluster.lbPolicy = .clusterProvided
        if let keepalive {
            var options = Envoy_Config_Cluster_V3_UpstreamConnectionOptions()
            options.tcpKeepalive = keepalive
            cluster.upstreamConnectionOptions = try Envoy_Config_Cluster_V3_UpstreamConnectionOptions(
                serializedBytes: try options.serializedBytes() as [UInt8] + extra)
        }
        return cluster
    }

    @Test func tcpKeepaliveIsDecodedIntoTheCluster() throws {
        let keepalive = Envoy_Config_Core_V3_TcpKeepalive.with {
            $0.keepaliveProbes = Google_Protobuf_UInt32Value(3)
            $0.keepaliveTime = Google_Protobuf_UInt32Value(600)
            $0.keepaliveInterval = Google_Protobuf_UInt32Value(75)
        }
        let decoded = try XDSResourceDecoder.cluster(cluster(keepalive)).cluster
        #expect(decoded.tcpKeepalive == TCPKeepalive(probes: 3, time: 600, interval: 75))
        #expect(decoded.fieldsNotActedOn.isEmpty)
        // Empty: SO_KEEPALIVE with the kernel's timing, as Envoy reads it.
        #expect(try XDSResourceDecoder.cluster(cluster(Envoy_Config_Core_V3_TcpKeepalive())).cluster.tcpKeepalive == TCPKeepalive())
        #expect(try XDSResourceDecoder.cluster(cluster(nil)).cluster.tcpKeepalive == nil)
    }

    @Test func otherUpstreamConnectionOptionsAreListedByNumber() throws {
        // happy_eyeballs_config (3), outside the subset: a length-delimited empty message.
        let decoded = try XDSResourceDecoder.cluster(cluster(Envoy_Config_Core_V3_TcpKeepalive(), extra: [0x1A, 0x00])).cluster
        #expect(decoded.fieldsNotActedOn.map(\.path) == ["#30.#3"])
    }

    @Test func valuesLinuxRefusesAreRefusedWithTheirField() throws {
        #expect(throws: ConfigError(path: "cluster \"svc\".upstream_connection_options.tcp_keepalive.keepalive_probes",
                                    message: "128 is not in 1-127, what Linux takes")) {
            try XDSResourceDecoder.cluster(cluster(.with { $0.keepaliveProbes = Google_Protobuf_UInt32Value(128) }))
        }
        #expect(throws: ConfigError(path: "cluster \"svc\".upstream_connection_options.tcp_keepalive.keepalive_time",
                                    message: "0 is not in 1-32767, what Linux takes")) {
            try XDSResourceDecoder.cluster(cluster(.with { $0.keepaliveTime = Google_Protobuf_UInt32Value(0) }))
        }
        #expect(throws: ConfigError(path: "cluster \"svc\".upstream_connection_options.tcp_keepalive.keepalive_interval",
                                    message: "40000 is not in 1-32767, what Linux takes")) {
            try XDSResourceDecoder.cluster(cluster(.with { $0.keepaliveInterval = Google_Protobuf_UInt32Value(40_000) }))
        }
    }

    /// The options read back from a real connected socket (loopback, as the other socket tests here).
    @Test func theTimingIsOnTheConnectedSocket() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let server = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        func connect(_ keepalive: TCPKeepalive?) async throws -> Channel {
            try await ClientBootstrap(group: group)
                .channelOption(.socketOption(.so_keepalive), value: 1)
                .keepalive(keepalive, to: server.localAddress!)
                .connect(to: server.localAddress!).get()
        }
        func option(_ channel: Channel, _ name: Int32) async throws -> SocketOptionValue {
            try await channel.getOption(.tcpOption(NIOBSDSocket.Option(rawValue: name))).get()
        }
        let client = try await connect(TCPKeepalive(probes: 4, time: 321, interval: 17))
        #expect(try await channelKeepalive(client) == 1)
        #expect(try await option(client, Int32(TCP_KEEPCNT)) == 4)
        #expect(try await option(client, Int32(TCP_KEEPIDLE)) == 321)
        #expect(try await option(client, Int32(TCP_KEEPINTVL)) == 17)
        // Only what is given changes: the rest stays the kernel's.
        let plain = try await connect(nil)
        let partial = try await connect(TCPKeepalive(time: 42))
        #expect(try await option(partial, Int32(TCP_KEEPIDLE)) == 42)
        #expect(try await option(partial, Int32(TCP_KEEPCNT)) == option(plain, Int32(TCP_KEEPCNT)))
        #expect(try await option(partial, Int32(TCP_KEEPINTVL)) == option(plain, Int32(TCP_KEEPINTVL)))
        #expect(TCPKeepalive(probes: 4, time: 1).socketOptions.map(\.value) == [4, 1])
        for channel in [client, plain, partial] { try? await channel.close() }
        try? await server.close()
    }

    /// The whole path: a cluster decoded from xDS, the HTTP router's connector, a real socket.
    @Test func theRoutersConnectorSetsTheClustersTiming() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let server = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let config = try XDSResourceDecoder.cluster(cluster(.with {
            $0.keepaliveProbes = Google_Protobuf_UInt32Value(5)
            $0.keepaliveTime = Google_Protobuf_UInt32Value(77)
            $0.keepaliveInterval = Google_Protobuf_UInt32Value(9)
        })).cluster
        let connector = UpstreamConnector(contexts: TLSContextCache(metrics: IstioTCPMetrics()), secrets: SecretStore(),
                                          defaultConnectTimeout: .seconds(2))
        let runtime = ClusterRuntime(config)
        let endpoint = UpstreamEndpoint(address: server.localAddress!)
        let loop = group.next()
        // As the router does, on the loop the connection is for.
        let channel = try await loop.flatSubmit {
            connector.connect(runtime, to: endpoint, on: loop, configure: { $0 })
        }.get()
        var values: [SocketOptionValue] = []
        for name in [TCP_KEEPCNT, TCP_KEEPIDLE, TCP_KEEPINTVL] {
            values.append(try await channel.getOption(.tcpOption(NIOBSDSocket.Option(rawValue: Int32(name)))).get())
        }
        #expect(values == [5, 77, 9])
        #expect(try await channelKeepalive(channel) == 1)
        try? await channel.close()
        try? await server.close()
    }

    private func channelKeepalive(_ channel: Channel) async throws -> SocketOptionValue {
        try await channel.getOption(.socketOption(.so_keepalive)).get()
    }
}
