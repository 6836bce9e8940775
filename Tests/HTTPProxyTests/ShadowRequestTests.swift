import HTTPTypes
import NIOCore
import NIOEmbedded
import SwiftProtobuf
import Testing
import XDS
@testable import HTTPProxy

/// Request mirroring on `EmbeddedChannel`s: the copy goes to the mirror cluster with the `-shadow` host,
/// the main request's headers and its body as it arrives; what happens to the copy never reaches the client.
@Suite struct ShadowRequestTests {
    typealias TestCluster = HTTPStreamHandlerTests.TestCluster

    /// Stream records and the shadows' ends, as the proxy's statistics see them.
    final class Observer: HTTPStreamObserver, @unchecked Sendable {
        var ended: [HTTPStreamRecord] = []
        var shadows: [(cluster: String, status: Int, flags: ResponseFlags)] = []
        func streamStarted() {}
        func streamEnded(_ record: HTTPStreamRecord, on connection: DownstreamConnectionInfo, manager: HTTPConnectionManagerConfig) {
            ended.append(record)
        }
        func shadowEnded(to cluster: any UpstreamCluster, status: Int, flags: ResponseFlags) {
            shadows.append((cluster.name, status, flags))
        }
    }

    struct Fixture {
        let loop = EmbeddedEventLoop()
        let downstream: EmbeddedChannel
        let backend: TestCluster
        let mirror: TestCluster
        let observer = Observer()

        init() throws {
            let json = """
                {"stat_prefix": "test", "codec_type": "HTTP1", "server_name": "istio-envoy",
                 "route_config": {"name": "test", "virtual_hosts": [{"name": "app", "domains": ["app.local"], "routes": [
                   {"match": {"prefix": "/retry"}, "route": {"cluster": "backend", "request_mirror_policies": [{"cluster": "mirror"}],
                     "retry_policy": {"retry_on": "5xx", "num_retries": 1, "retry_back_off": {"base_interval": "0.01s"}}}},
                   {"match": {"prefix": "/"}, "route": {"cluster": "backend", "request_mirror_policies": [
                     {"cluster": "mirror"}, {"cluster": "unknown"}, {"cluster": "mirror", "runtime_fraction": {"default_value": {"numerator": 0}}}]}}]}]},
                 "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                   "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
                """
            Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_Router_V3_Router.self)
            let config = try HTTPConnectionManagerConfig(try HTTPStreamHandlerTests.HCM(jsonString: json), path: "hcm")
            downstream = EmbeddedChannel(loop: loop)
            backend = TestCluster(name: "backend", loop: loop, endpoints: [try SocketAddress(ipAddress: "192.0.2.10", port: 8080),
                                                                            try SocketAddress(ipAddress: "192.0.2.11", port: 8080)])
            mirror = TestCluster(name: "mirror", loop: loop, endpoints: [try SocketAddress(ipAddress: "192.0.2.20", port: 8080)])
            let manager = HTTPConnectionManager(
                config: config,
                downstream: DownstreamConnectionInfo(remoteAddress: try SocketAddress(ipAddress: "192.0.2.1", port: 40000),
                                                     localAddress: try SocketAddress(ipAddress: "192.0.2.10", port: 80)),
                routing: FixedRouting(HTTPStreamHandlerTests.Snapshot(clusters: ["backend": backend, "mirror": mirror])),
                pools: UpstreamPools(eventLoop: loop), observer: observer)
            try manager.serve(on: downstream, negotiatedProtocol: nil)
            try downstream.connect(to: try SocketAddress(ipAddress: "192.0.2.1", port: 40000)).wait()
        }

        func send(_ text: String) throws { try downstream.writeInbound(ByteBuffer(string: text)) }
        func text(_ channel: EmbeddedChannel) throws -> String { try HTTPStreamHandlerTests.Fixture.drain(channel) }
    }

    @Test func theCopyGoesToTheMirrorClusterWithTheShadowHostTheHeadersAndTheBody() throws {
        let fixture = try Fixture()
        try fixture.send("POST /pay HTTP/1.1\r\nHost: app.local\r\ncontent-length: 6\r\n\r\nabc")
        let main = try fixture.text(fixture.backend.connections[0])
        #expect(fixture.mirror.connections.count == 1, "one copy: the unknown cluster and the 0 % policy get none")
        let shadow = try fixture.text(fixture.mirror.connections[0])
        #expect(shadow.hasPrefix("POST /pay HTTP/1.1\r\n"))
        #expect(shadow.lowercased().contains("host: app.local-shadow\r\n"))
        let requestID = main.split(separator: "\r\n").first { $0.hasPrefix("x-request-id:") }
        #expect(requestID != nil && shadow.contains(requestID!), "the same headers as the main request")
        #expect(shadow.hasSuffix("\r\n\r\nabc"))
        // The rest of the body follows as it arrives.
        try fixture.send("def")
        #expect(try fixture.text(fixture.backend.connections[0]) == "def")
        #expect(try fixture.text(fixture.mirror.connections[0]) == "def")
        // The main response goes to the client; the copy's is read and dropped.
        try fixture.backend.connections[0].writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nv1"))
        try fixture.mirror.connections[0].writeInbound(ByteBuffer(string: "HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nv2"))
        let response = try fixture.text(fixture.downstream)
        #expect(response.hasPrefix("HTTP/1.1 200 OK"))
        #expect(response.hasSuffix("v1"))
        #expect(fixture.observer.ended.count == 1)
        #expect(fixture.observer.shadows.count == 1)
        #expect(fixture.observer.shadows.first?.cluster == "mirror")
        #expect(fixture.observer.shadows.first?.status == 201)
        #expect(fixture.mirror.activeRequests == 0)
        #expect(fixture.mirror.circuitBreakers.openCount(.requests) == 0)
    }

    @Test func aMirrorThatCannotConnectDoesNotAffectTheRequest() throws {
        let fixture = try Fixture()
        fixture.mirror.refusesConnections = true
        try fixture.send("GET / HTTP/1.1\r\nHost: app.local\r\n\r\n")
        #expect(try fixture.text(fixture.backend.connections[0]).hasPrefix("GET / HTTP/1.1"))
        try fixture.backend.connections[0].writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"))
        #expect(try fixture.text(fixture.downstream).hasPrefix("HTTP/1.1 200 OK"))
        #expect(fixture.observer.ended.first?.flags == [])
        #expect(fixture.observer.shadows.first?.flags == .upstreamConnectionFailure)
        #expect(fixture.mirror.activeRequests == 0)
        #expect(fixture.mirror.circuitBreakers.openCount(.requests) == 0)
    }

    @Test func aMirrorThatFailsMidwayDoesNotAffectTheRequest() throws {
        let fixture = try Fixture()
        try fixture.send("POST / HTTP/1.1\r\nHost: app.local\r\ncontent-length: 4\r\n\r\nab")
        _ = try fixture.text(fixture.mirror.connections[0])
        try fixture.mirror.connections[0].close().wait()
        try fixture.send("cd")
        #expect(try fixture.text(fixture.backend.connections[0]).hasSuffix("abcd"))
        try fixture.backend.connections[0].writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"))
        #expect(try fixture.text(fixture.downstream).hasPrefix("HTTP/1.1 200 OK"))
        #expect(fixture.observer.ended.first?.flags == [])
        #expect(fixture.observer.shadows.count == 1)
        #expect(fixture.observer.shadows.first?.flags == .upstreamConnectionTermination)
        #expect(fixture.mirror.activeRequests == 0)
    }

    @Test func aRetriedRequestIsMirroredOnceAndTheCopyIsNeverRetried() throws {
        let fixture = try Fixture()
        try fixture.send("PUT /retry HTTP/1.1\r\nHost: app.local\r\ncontent-length: 2\r\n\r\nok")
        _ = try fixture.text(fixture.backend.connections[0])
        #expect(try fixture.text(fixture.mirror.connections[0]).hasSuffix("\r\n\r\nok"))
        try fixture.mirror.connections[0].writeInbound(ByteBuffer(string: "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"))
        try fixture.backend.connections[0].writeInbound(ByteBuffer(string: "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"))
        fixture.loop.advanceTime(by: .milliseconds(50))
        #expect(fixture.backend.connections.count == 2, "the main request is retried")
        #expect(try fixture.text(fixture.backend.connections[1]).hasSuffix("\r\n\r\nok"))
        try fixture.backend.connections[1].writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"))
        #expect(try fixture.text(fixture.downstream).hasPrefix("HTTP/1.1 200 OK"))
        #expect(fixture.mirror.connections.count == 1, "one copy, not retried after its 503")
        #expect(try fixture.text(fixture.mirror.connections[0]).isEmpty)
        #expect(fixture.observer.shadows.map(\.status) == [503])
        #expect(fixture.observer.ended.first?.upstreamRetries == 1)
    }

    @Test func aMirrorThatCannotKeepUpIsDroppedRatherThanSlowingTheClient() throws {
        let fixture = try Fixture()
        try fixture.send("POST / HTTP/1.1\r\nHost: app.local\r\ncontent-length: 4\r\n\r\nab")
        _ = try fixture.text(fixture.mirror.connections[0])
        fixture.mirror.connections[0].isWritable = false
        try fixture.send("cd")
        #expect(try fixture.text(fixture.backend.connections[0]).hasSuffix("abcd"), "the main request goes on")
        #expect(!fixture.mirror.connections[0].isActive, "the copy is dropped")
        #expect(fixture.observer.shadows.count == 1)
        try fixture.backend.connections[0].writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"))
        #expect(try fixture.text(fixture.downstream).hasPrefix("HTTP/1.1 200 OK"))
        #expect(fixture.mirror.activeRequests == 0)
        #expect(fixture.mirror.circuitBreakers.openCount(.requests) == 0)
    }

    @Test func aClientThatLeavesMidRequestAbandonsTheCopy() throws {
        let fixture = try Fixture()
        try fixture.send("POST / HTTP/1.1\r\nHost: app.local\r\ncontent-length: 4\r\n\r\nab")
        try fixture.downstream.close().wait()
        #expect(fixture.observer.shadows.count == 1)
        #expect(fixture.mirror.activeRequests == 0)
        #expect(!fixture.mirror.connections[0].isActive, "an incomplete copy is not left open")
    }
}
