import Configuration
import HTTPTypes
import NIOCore
import NIOEmbedded
import Routing
import SwiftProtobuf
import Testing
import XDS
@testable import HTTPProxy

/// The connection manager on `EmbeddedChannel`s: a downstream channel fed HTTP/1.1 bytes, and upstream
/// channels the test cluster "connects", whose request bytes the test reads and whose response bytes it
/// writes. Both on one embedded event loop, so every step is deterministic.
@Suite struct HTTPStreamHandlerTests {
    typealias HCM = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager

    /// A cluster whose connections are embedded channels on the test's loop.
    final class TestCluster: UpstreamCluster, @unchecked Sendable {
        let name: String
        let upstreamProtocol = UpstreamProtocol.http1
        var upstreamIdleTimeout: TimeAmount? = .seconds(60)
        var maxRequestsPerConnection: Int?
        let circuitBreakers = CircuitBreakers()
        let loop: EmbeddedEventLoop
        var endpoints: [SocketAddress]
        var refusesConnections = false
        /// The next this-many connections are refused.
        var refusals = 0
        private(set) var connections: [EmbeddedChannel] = []
        /// Endpoints are chosen in turn.
        private var next = 0
        private(set) var activeRequests = 0
        /// Each endpoint's priority (none given: all 0).
        var priorities: [Int] = []
        /// What a retry under `previous_priorities` brought: the priorities tried so far.
        private(set) var retryAttempted: [[Int]] = []

        init(name: String, loop: EmbeddedEventLoop, endpoints: [SocketAddress]) {
            self.name = name
            self.loop = loop
            self.endpoints = endpoints
        }

        func chooseEndpoint(for downstream: DownstreamConnectionInfo, hash: UInt64?) -> Result<UpstreamEndpoint, UpstreamUnavailable> {
            guard !endpoints.isEmpty else { return .failure(.noHealthyUpstream) }
            activeRequests += 1
            defer { next += 1 }
            let index = next % endpoints.count
            return .success(UpstreamEndpoint(address: endpoints[index], priority: priorities.indices.contains(index) ? priorities[index] : 0))
        }

        /// Under `previous_priorities`: the first endpoint of the first priority the retry load gives
        /// requests to (every priority fully healthy), else in turn.
        func chooseEndpoint(for downstream: DownstreamConnectionInfo, hash: UInt64?,
                            priorities retry: inout PreviousPriorities) -> Result<UpstreamEndpoint, UpstreamUnavailable> {
            retryAttempted.append(retry.attempted)
            let count = (priorities.max() ?? 0) + 1
            guard let load = retry.load(health: Array(repeating: 100, count: count)), let priority = load.firstIndex(where: { $0 > 0 }),
                  let index = priorities.firstIndex(of: priority) else {
                return chooseEndpoint(for: downstream, hash: hash)
            }
            activeRequests += 1
            return .success(UpstreamEndpoint(address: endpoints[index], priority: priority))
        }

        func requestEnded(at endpoint: UpstreamEndpoint) { activeRequests -= 1 }

        /// Each attempt's outcome as the router reported it, with the endpoint's address.
        private(set) var outcomes: [(address: String, outcome: UpstreamOutcome)] = []
        func record(_ outcome: UpstreamOutcome, at endpoint: UpstreamEndpoint) {
            outcomes.append((endpoint.address.ipAddress ?? "?", outcome))
        }

        func connect<Connection>(to endpoint: UpstreamEndpoint, version: UpstreamVersion, alpn: [String]?, on loop: any EventLoop,
                                 configure: @escaping (Channel) throws -> Connection) -> EventLoopFuture<Connection> {
            if refusesConnections || refusals > 0 {
                refusals -= 1
                return loop.makeFailedFuture(ChannelError.connectTimeout(.seconds(1)))
            }
            let channel = EmbeddedChannel(loop: self.loop)
            connections.append(channel)
            do {
                try channel.connect(to: endpoint.address).wait()
                return loop.makeSucceededFuture(try configure(channel))
            } catch {
                return loop.makeFailedFuture(error)
            }
        }
    }

    struct Snapshot: HTTPRoutingSnapshot, @unchecked Sendable {
        var clusters: [String: TestCluster]
        func routeTable(named name: String) -> RouteTable? { nil }
        func cluster(named name: String) -> (any UpstreamCluster)? { clusters[name] }
    }

    final class Records: HTTPStreamObserver, @unchecked Sendable {
        var ended: [HTTPStreamRecord] = []
        func streamStarted() {}
        func streamEnded(_ record: HTTPStreamRecord, on connection: DownstreamConnectionInfo, manager: HTTPConnectionManagerConfig) {
            ended.append(record)
        }
    }

    /// Routes: `/missing` to a cluster nobody has, `/empty` to one without endpoints, the rest of `app.local`
    /// to `backend`; any other host has no virtual host.
    static func config(extra: String = "") throws -> HTTPConnectionManagerConfig {
        let json = """
            {"stat_prefix": "test", "codec_type": "HTTP1", "server_name": "istio-envoy", "stream_idle_timeout": "2s", \(extra)
             "route_config": {"name": "test", "virtual_hosts": [{"name": "app", "domains": ["app.local"], "include_request_attempt_count": true, "routes": [
               {"match": {"prefix": "/missing"}, "route": {"cluster": "nope"}},
               {"match": {"prefix": "/retry"}, "route": {"cluster": "backend", "retry_policy": {"retry_on": "5xx,connect-failure", "num_retries": 2,
                 "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts"}], "host_selection_retry_max_attempts": 3,
                 "retry_back_off": {"base_interval": "0.01s"}}}},
               {"match": {"prefix": "/remote"}, "route": {"cluster": "backend", "retry_policy": {"retry_on": "5xx", "num_retries": 1,
                 "retry_priority": {"name": "envoy.retry_priorities.previous_priorities", "typed_config": {
                   "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                   "update_frequency": 1}},
                 "retry_back_off": {"base_interval": "0.01s"}}}},
               {"match": {"prefix": "/empty"}, "route": {"cluster": "empty"}},
               {"match": {"prefix": "/"}, "route": {"cluster": "backend"}, "response_headers_to_add": [
                 {"header": {"key": "x-route", "value": "backend"}}]}]}]},
             "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
            """
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_Router_V3_Router.self)
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Retry_Priority_PreviousPriorities_V3_PreviousPrioritiesConfig.self)
        return try HTTPConnectionManagerConfig(try HCM(jsonString: json), path: "hcm")
    }

    struct Fixture {
        let loop: EmbeddedEventLoop
        let downstream: EmbeddedChannel
        let backend: TestCluster
        let records = Records()

        /// `extraClusters` beside `backend` and `empty` (ext_authz's service), on `loop`.
        init(config: HTTPConnectionManagerConfig? = nil, backends: Int = 1, loop: EmbeddedEventLoop = EmbeddedEventLoop(),
             extraClusters: [String: TestCluster] = [:]) throws {
            self.loop = loop
            downstream = EmbeddedChannel(loop: loop)
            backend = TestCluster(name: "backend", loop: loop,
                                  endpoints: try (0..<backends).map { try SocketAddress(ipAddress: "192.0.2.\(10 + $0)", port: 8080) })
            let empty = TestCluster(name: "empty", loop: loop, endpoints: [])
            let snapshot = Snapshot(clusters: ["backend": backend, "empty": empty].merging(extraClusters) { $1 })
            let manager = HTTPConnectionManager(
                config: try config ?? HTTPStreamHandlerTests.config(),
                downstream: DownstreamConnectionInfo(remoteAddress: try SocketAddress(ipAddress: "192.0.2.1", port: 40000),
                                                     localAddress: try SocketAddress(ipAddress: "192.0.2.10", port: 80)),
                routing: FixedRouting(snapshot), pools: UpstreamPools(eventLoop: loop), observer: records)
            try manager.serve(on: downstream, negotiatedProtocol: nil)
            try downstream.connect(to: try SocketAddress(ipAddress: "192.0.2.1", port: 40000)).wait()
        }

        func send(_ text: String) throws {
            try downstream.writeInbound(ByteBuffer(string: text))
        }

        /// Everything the downstream channel wrote so far, as text.
        func downstreamText() throws -> String { try Self.drain(downstream) }

        func upstreamText(_ index: Int = 0) throws -> String { try Self.drain(backend.connections[index]) }

        func answer(_ text: String, on index: Int = 0) throws {
            try backend.connections[index].writeInbound(ByteBuffer(string: text))
        }

        static func drain(_ channel: EmbeddedChannel) throws -> String {
            var text = ""
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
            return text
        }
    }

    @Test func forwardsARequestAndItsResponseWithIstiosHeaders() throws {
        let fixture = try Fixture()
        try fixture.send("GET /hello HTTP/1.1\r\nHost: app.local\r\nConnection: keep-alive, x-drop\r\nx-drop: 1\r\n\r\n")
        let request = try fixture.upstreamText()
        #expect(request.hasPrefix("GET /hello HTTP/1.1\r\n"))
        #expect(request.lowercased().contains("host: app.local"))
        #expect(request.contains("x-request-id: "))
        #expect(request.contains("x-forwarded-proto: http"))
        #expect(!request.lowercased().contains("x-drop"), "headers named by Connection are hop-by-hop")
        #expect(!request.lowercased().contains("connection: keep-alive"))
        try fixture.answer("HTTP/1.1 200 OK\r\ncontent-length: 5\r\nserver: gunicorn\r\n\r\nhello")
        let response = try fixture.downstreamText()
        #expect(response.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(response.contains("server: istio-envoy"))
        #expect(response.contains("x-route: backend"))
        #expect(response.hasSuffix("hello"))
        #expect(fixture.records.ended.count == 1)
        #expect(fixture.records.ended.first?.responseCode == 200)
        #expect(fixture.records.ended.first?.flags == [])
        #expect(fixture.backend.activeRequests == 0)
    }

    @Test func reusesTheUpstreamConnectionForTheNextRequest() throws {
        let fixture = try Fixture()
        for round in 0..<3 {
            try fixture.send("GET /\(round) HTTP/1.1\r\nHost: app.local\r\n\r\n")
            #expect(try fixture.upstreamText().hasPrefix("GET /\(round) HTTP/1.1"))
            try fixture.answer("HTTP/1.1 204 No Content\r\n\r\n")
            #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 204"))
        }
        #expect(fixture.backend.connections.count == 1)
        #expect(fixture.records.ended.count == 3)
    }

    @Test func pipelinedRequestsWaitForTheResponseBeforeThem() throws {
        let fixture = try Fixture()
        // Three requests in one write: the second and third wait while the first is answered.
        try fixture.send("GET /a HTTP/1.1\r\nHost: app.local\r\n\r\nGET /b HTTP/1.1\r\nHost: app.local\r\n\r\n"
                         + "GET /c HTTP/1.1\r\nHost: app.local\r\n\r\n")
        let first = try fixture.upstreamText()
        #expect(first.hasPrefix("GET /a HTTP/1.1"))
        #expect(!first.contains("GET /b"), "the next request waits for this response")
        for (index, path) in ["/a", "/b", "/c"].enumerated() {
            if index > 0 { #expect(try fixture.upstreamText().hasPrefix("GET \(path) HTTP/1.1")) }
            try fixture.answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n\(index)\(index)")
            fixture.loop.run()
            #expect(try fixture.downstreamText().hasSuffix("\r\n\r\n\(index)\(index)"), "responses in request order")
        }
        #expect(fixture.records.ended.map(\.path) == ["/a", "/b", "/c"])
        #expect(fixture.backend.connections.count == 1)
    }

    @Test func theStreamIdleTimerOfAnEarlierRequestDoesNotEndALaterOne() throws {
        let fixture = try Fixture()
        try fixture.send("GET /1 HTTP/1.1\r\nHost: app.local\r\n\r\n")
        _ = try fixture.upstreamText()
        try fixture.answer("HTTP/1.1 204 No Content\r\n\r\n")
        fixture.loop.advanceTime(by: .milliseconds(1500))
        // The timer armed by the first request fires 0.5 s into the second: the second is not idle yet.
        try fixture.send("GET /2 HTTP/1.1\r\nHost: app.local\r\n\r\n")
        _ = try fixture.upstreamText()
        fixture.loop.advanceTime(by: .milliseconds(1000))
        #expect(fixture.records.ended.count == 1, "the second request is 1 s old, under the 2 s limit")
        fixture.loop.advanceTime(by: .milliseconds(1100))
        #expect(fixture.records.ended.last?.flags.description == "SI")
    }

    // MARK: Retries

    @Test func a503IsRetriedOnAnotherHostWithTheAttemptCounted() throws {
        let fixture = try Fixture(backends: 2)
        try fixture.send("PUT /retry HTTP/1.1\r\nHost: app.local\r\ncontent-length: 3\r\n\r\nabc")
        let first = try fixture.upstreamText(0)
        #expect(first.contains("x-envoy-attempt-count: 1"))
        try fixture.answer("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy", on: 0)
        #expect(try fixture.downstreamText().isEmpty, "the 503 is not relayed while a retry remains")
        fixture.loop.advanceTime(by: .milliseconds(20))
        #expect(fixture.backend.connections.count == 2)
        let second = try fixture.upstreamText(1)
        #expect(second.contains("x-envoy-attempt-count: 2"))
        #expect(second.hasSuffix("\r\n\r\nabc"), "the body is sent again")
        #expect(try fixture.backend.connections[1].remoteAddress?.ipAddress == "192.0.2.11", "previous_hosts: another host")
        try fixture.answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", on: 1)
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 200 OK"))
        #expect(fixture.records.ended.first?.upstreamRetries == 1)
        #expect(fixture.records.ended.first?.flags.description == "-")
        #expect(fixture.backend.activeRequests == 0, "each attempt's endpoint is released")
    }

    /// `previous_priorities`: the retry asks the cluster with the priorities its attempts went to (the first
    /// attempt's included), and goes where that load sends it; without it, the next host in turn.
    @Test func aRetryUnderPreviousPrioritiesGoesToAPriorityNotTried() throws {
        let fixture = try Fixture(backends: 3)
        fixture.backend.priorities = [0, 0, 1]
        try fixture.send("GET /remote HTTP/1.1\r\nHost: app.local\r\n\r\n")
        _ = try fixture.upstreamText(0)
        try fixture.answer("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n", on: 0)
        fixture.loop.advanceTime(by: .milliseconds(20))
        #expect(fixture.backend.retryAttempted == [[0]])
        #expect(try fixture.backend.connections[1].remoteAddress?.ipAddress == "192.0.2.12", "priority 1's host, not .11 in turn")
        try fixture.answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", on: 1)
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 200 OK"))
        #expect(fixture.backend.activeRequests == 0)
        // The /retry route has no retry priority: its retry never asks with priorities.
        let plain = try Fixture(backends: 3)
        plain.backend.priorities = [0, 0, 1]
        try plain.send("GET /retry HTTP/1.1\r\nHost: app.local\r\n\r\n")
        _ = try plain.upstreamText(0)
        try plain.answer("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n", on: 0)
        plain.loop.advanceTime(by: .milliseconds(20))
        #expect(plain.backend.retryAttempted.isEmpty)
        #expect(try plain.backend.connections[1].remoteAddress?.ipAddress == "192.0.2.11")
    }

    @Test func aClientThatLeavesDuringTheBackOffReleasesEachEndpointOnce() throws {
        let fixture = try Fixture(backends: 2)
        try fixture.send("GET /retry HTTP/1.1\r\nHost: app.local\r\n\r\n")
        _ = try fixture.upstreamText(0)
        try fixture.answer("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n", on: 0)
        try fixture.downstream.close().wait()
        fixture.loop.advanceTime(by: .milliseconds(50))
        #expect(fixture.backend.activeRequests == 0, "LEAST_REQUEST's count: one request, one release")
        #expect(fixture.backend.connections.count == 1, "no attempt after the client left")
        #expect(fixture.records.ended.first?.flags.description == "DC")
    }

    @Test func aPostIsNotRetriedAfterTheUpstreamSawIt() throws {
        let fixture = try Fixture(backends: 2)
        try fixture.send("POST /retry/pay HTTP/1.1\r\nHost: app.local\r\ncontent-length: 2\r\n\r\n{}")
        _ = try fixture.upstreamText(0)
        try fixture.answer("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n", on: 0)
        fixture.loop.advanceTime(by: .milliseconds(50))
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 503"))
        #expect(fixture.backend.connections.count == 1, "a second payment is not made")
    }

    @Test func aPostIsRetriedWhenItsConnectionFailed() throws {
        let fixture = try Fixture(backends: 2)
        fixture.backend.refusals = 1
        try fixture.send("POST /retry/pay HTTP/1.1\r\nHost: app.local\r\ncontent-length: 2\r\n\r\n{}")
        fixture.loop.advanceTime(by: .milliseconds(20))
        #expect(try fixture.upstreamText(0).hasSuffix("\r\n\r\n{}"))
        try fixture.answer("HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 201"))
        #expect(fixture.records.ended.first?.upstreamRetries == 1)
    }

    @Test func whenRetriesRunOutTheLastAnswerGoesDownWithURX() throws {
        let fixture = try Fixture(backends: 3)
        try fixture.send("GET /retry HTTP/1.1\r\nHost: app.local\r\n\r\n")
        for attempt in 0..<3 {
            fixture.loop.advanceTime(by: .milliseconds(50))
            _ = try fixture.upstreamText(attempt)
            try fixture.answer("HTTP/1.1 502 Bad Gateway\r\ncontent-length: 1\r\n\r\n\(attempt)", on: attempt)
        }
        let response = try fixture.downstreamText()
        #expect(response.hasPrefix("HTTP/1.1 502"))
        #expect(response.hasSuffix("2"), "the third attempt's answer")
        #expect(fixture.records.ended.first?.flags.description == "URX")
        #expect(fixture.records.ended.first?.upstreamRetries == 2)
    }

    @Test func aRouteWithoutARetryPolicyAnswersTheFirst503() throws {
        let fixture = try Fixture(backends: 2)
        try fixture.send("GET /plain HTTP/1.1\r\nHost: app.local\r\n\r\n")
        _ = try fixture.upstreamText(0)
        try fixture.answer("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 503"))
        #expect(fixture.backend.connections.count == 1)
    }

    @Test func aConnectionWithoutARequestForItsIdleTimeoutCloses() throws {
        let fixture = try Fixture(config: try Self.config(extra: #""common_http_protocol_options": {"idle_timeout": "3s"},"#))
        fixture.loop.advanceTime(by: .seconds(2))
        try fixture.send("GET /slow HTTP/1.1\r\nHost: app.local\r\n\r\n")
        _ = try fixture.upstreamText()
        fixture.loop.advanceTime(by: .milliseconds(1500))
        #expect(fixture.downstream.isActive, "a request in flight is not idle")
        try fixture.answer("HTTP/1.1 204 No Content\r\n\r\n")
        fixture.loop.advanceTime(by: .seconds(2))
        #expect(fixture.downstream.isActive, "idle for 2 s of 3")
        fixture.loop.advanceTime(by: .milliseconds(1500))
        #expect(!fixture.downstream.isActive)
    }

    @Test func aConnectionCarriesAtMostMaxRequestsPerConnection() throws {
        let fixture = try Fixture()
        fixture.backend.maxRequestsPerConnection = 2
        for round in 0..<3 {
            try fixture.send("GET /\(round) HTTP/1.1\r\nHost: app.local\r\n\r\n")
            #expect(try fixture.upstreamText(round / 2).hasPrefix("GET /\(round) HTTP/1.1"))
            try fixture.answer("HTTP/1.1 204 No Content\r\n\r\n", on: round / 2)
            #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 204"))
        }
        #expect(fixture.backend.connections.count == 2)
        #expect(!fixture.backend.connections[0].isActive, "closed after its second request")
    }

    @Test func anIdlePooledConnectionClosesAfterTheClustersIdleTimeout() throws {
        let fixture = try Fixture()
        try fixture.send("GET / HTTP/1.1\r\nHost: app.local\r\n\r\n")
        _ = try fixture.upstreamText()
        try fixture.answer("HTTP/1.1 204 No Content\r\n\r\n")
        fixture.loop.advanceTime(by: .seconds(59))
        #expect(fixture.backend.connections[0].isActive)
        fixture.loop.advanceTime(by: .seconds(1))
        #expect(!fixture.backend.connections[0].isActive)
        try fixture.send("GET /again HTTP/1.1\r\nHost: app.local\r\n\r\n")
        #expect(fixture.backend.connections.count == 2, "a new connection, not the closed one")
    }

    @Test func noRouteIs404WithNR() throws {
        let fixture = try Fixture()
        try fixture.send("GET / HTTP/1.1\r\nHost: elsewhere\r\n\r\n")
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 404 Not Found"))
        #expect(fixture.records.ended.first?.flags.description == "NR")
    }

    @Test func missingClusterAndEmptyClusterAre503() throws {
        let fixture = try Fixture()
        try fixture.send("GET /missing HTTP/1.1\r\nHost: app.local\r\n\r\nGET /empty HTTP/1.1\r\nHost: app.local\r\n\r\n")
        let text = try fixture.downstreamText()
        #expect(text.components(separatedBy: "HTTP/1.1 503 Service Unavailable").count == 3)
        #expect(text.contains("no healthy upstream"))
        #expect(fixture.records.ended.map(\.flags.description) == ["NC", "UH"])
    }

    @Test func connectFailureIs503WithUF() throws {
        let fixture = try Fixture()
        fixture.backend.refusesConnections = true
        try fixture.send("GET / HTTP/1.1\r\nHost: app.local\r\n\r\n")
        let text = try fixture.downstreamText()
        #expect(text.hasPrefix("HTTP/1.1 503"))
        #expect(text.contains("reset reason: connection failure"))
        #expect(fixture.records.ended.first?.flags.description == "UF")
        #expect(fixture.backend.activeRequests == 0)
    }

    @Test func upstreamClosingBeforeItAnswersIs503WithUC() throws {
        let fixture = try Fixture()
        try fixture.send("GET / HTTP/1.1\r\nHost: app.local\r\n\r\n")
        _ = try fixture.upstreamText()
        try fixture.backend.connections[0].close().wait()
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 503"))
        #expect(fixture.records.ended.first?.flags.description == "UC")
    }

    @Test func tooManyHeadersIs431() throws {
        let fixture = try Fixture()
        let headers = (0..<101).map { "x-h\($0): v\r\n" }.joined()
        try fixture.send("GET / HTTP/1.1\r\nHost: app.local\r\n\(headers)\r\n")
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 431"))
        #expect(fixture.backend.connections.isEmpty)
    }

    @Test func contentLengthWithTransferEncodingIsRefused() throws {
        let fixture = try Fixture()
        try? fixture.send("POST / HTTP/1.1\r\nHost: app.local\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 400"))
        #expect(fixture.backend.connections.isEmpty)
    }

    @Test func http10IsAnsweredInHTTP10AndClosed() throws {
        let fixture = try Fixture()
        try fixture.send("GET / HTTP/1.0\r\nHost: app.local\r\n\r\n")
        _ = try fixture.upstreamText()
        try fixture.answer("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
        let text = try fixture.downstreamText()
        #expect(text.hasPrefix("HTTP/1.0 200 OK"))
        #expect(text.contains("connection: close"))
        #expect(!text.contains("chunked"))
        #expect(!fixture.downstream.isActive)
        #expect(fixture.records.ended.first?.requestProtocol == "HTTP/1.0")
    }

    @Test func expectContinueIsAnsweredHereAndNotForwarded() throws {
        let fixture = try Fixture()
        try fixture.send("POST / HTTP/1.1\r\nHost: app.local\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 100 Continue"))
        try fixture.send("body")
        let request = try fixture.upstreamText()
        #expect(!request.lowercased().contains("expect"))
        #expect(request.hasSuffix("body"))
    }

    @Test func bodiesStreamBothWays() throws {
        let fixture = try Fixture()
        try fixture.send("POST / HTTP/1.1\r\nHost: app.local\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        #expect(try fixture.upstreamText().contains("first"))
        try fixture.send("6\r\nsecond\r\n0\r\n\r\n")
        #expect(try fixture.upstreamText().contains("second"))
        try fixture.answer("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n")
        #expect(try fixture.downstreamText().contains("one"))
        try fixture.answer("3\r\ntwo\r\n0\r\n\r\n")
        #expect(try fixture.downstreamText().contains("two"))
        #expect(fixture.records.ended.first?.requestBodyBytes == 11)
        #expect(fixture.records.ended.first?.responseBodyBytes == 6)
    }

    @Test func externalEnvoyHeadersAreDroppedWithUseRemoteAddress() throws {
        var config = try Self.config()
        let inside = DownstreamConnectionInfo(remoteAddress: try SocketAddress(ipAddress: "10.1.0.7", port: 1), localAddress: nil)
        config.useRemoteAddress = true
        var fields = HTTPFields()
        fields[HTTPField.Name("x-envoy-retry-on")!] = "5xx"
        fields[HTTPField.Name("x-keep")!] = "1"
        var request = HTTPRequest(method: .get, scheme: "http", authority: "app.local", path: "/", headerFields: fields)
        let external = DownstreamConnectionInfo(remoteAddress: try SocketAddress(ipAddress: "203.0.113.7", port: 1), localAddress: nil)
        // Removed as the request arrives (before routing and the filters), as Envoy's connection manager does.
        ForwardedHeaders.removeInternalHeaders(&request, config: config, downstream: external)
        #expect(request.headerFields[HTTPField.Name("x-envoy-retry-on")!] == nil)
        let decision = try #require(Self.table().route(request, randomValue: 0))
        guard case .forward(let forwarding) = decision.action else { Issue.record("not forwarded"); return }
        ForwardedHeaders.prepareRequest(&request, config: config, downstream: external, decision: decision, forwarding: forwarding)
        #expect(request.headerFields[HTTPField.Name("x-keep")!] == "1")
        #expect(request.headerFields[HTTPField.Name("x-forwarded-for")!] == "203.0.113.7")
        // From inside the mesh (an internal address), they are the mesh's own and stay.
        var internalRequest = HTTPRequest(method: .get, scheme: "http", authority: "app.local", path: "/", headerFields: fields)
        ForwardedHeaders.removeInternalHeaders(&internalRequest, config: config, downstream: inside)
        #expect(internalRequest.headerFields[HTTPField.Name("x-envoy-retry-on")!] == "5xx")
    }

    @Test func aLocalReplyCarriesTheRequestIDInItsRecord() throws {
        let fixture = try Fixture()
        try fixture.send("GET / HTTP/1.1\r\nHost: elsewhere\r\n\r\n")
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 404"))
        #expect(fixture.records.ended.first?.requestID?.utf8.count == 36, "made before routing, as Envoy does")
    }

    @Test func drainingAnswersWithConnectionCloseThenCloses() throws {
        let fixture = try Fixture()
        try fixture.send("GET / HTTP/1.1\r\nHost: app.local\r\n\r\n")
        _ = try fixture.upstreamText()
        fixture.downstream.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        try fixture.answer("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        #expect(try fixture.downstreamText().lowercased().contains("connection: close"))
        #expect(!fixture.downstream.isActive)
    }

    @Test func anIdleConnectionClosesWhenTheProxyDrains() throws {
        let fixture = try Fixture()
        fixture.downstream.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(!fixture.downstream.isActive)
    }

    @Test func aStreamWithoutActivityTimesOutWith408() throws {
        let fixture = try Fixture()
        try fixture.send("GET /slow HTTP/1.1\r\nHost: app.local\r\n\r\n")
        _ = try fixture.upstreamText()
        fixture.loop.advanceTime(by: .seconds(1))
        try fixture.answer("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        fixture.loop.advanceTime(by: .milliseconds(1500))
        #expect(fixture.records.ended.isEmpty, "activity 1 s in moved the deadline")
        fixture.loop.advanceTime(by: .seconds(1))
        #expect(fixture.records.ended.first?.flags.description == "SI")
        #expect(!fixture.downstream.isActive, "a response already begun is reset")
    }

    @Test func aStreamIdleBeforeTheResponseIsAnswered408() throws {
        let fixture = try Fixture()
        try fixture.send("GET /slow HTTP/1.1\r\nHost: app.local\r\n\r\n")
        fixture.loop.advanceTime(by: .seconds(2))
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 408"))
        #expect(fixture.records.ended.first?.flags.description == "SI")
    }

    @Test func aRequestNotWhollyReceivedWithinRequestTimeoutIs408() throws {
        let fixture = try Fixture(config: try Self.config(extra: #""request_timeout": "1s","#))
        // The body never ends: the request is answered 408 at the request timeout, before the stream idle one.
        try fixture.send("POST /upload HTTP/1.1\r\nHost: app.local\r\ncontent-length: 10\r\n\r\nabc")
        _ = try fixture.upstreamText()
        fixture.loop.advanceTime(by: .milliseconds(1100))
        let response = try fixture.downstreamText()
        #expect(response.hasPrefix("HTTP/1.1 408"))
        #expect(response.hasSuffix("request timeout"))
        // A whole request is not bound by it, however long the response takes.
        let whole = try Fixture(config: try Self.config(extra: #""request_timeout": "1s", "stream_idle_timeout": "0s","#))
        try whole.send("GET /slow HTTP/1.1\r\nHost: app.local\r\n\r\n")
        whole.loop.advanceTime(by: .seconds(3))
        #expect(try whole.downstreamText().isEmpty)
        try whole.answer("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        #expect(try whole.downstreamText().hasPrefix("HTTP/1.1 200"))
    }

    static func table() throws -> RouteTable {
        guard case .inline(let table) = try config().routes else { throw ConfigError(path: "", message: "not inline") }
        return table
    }

    @Test func connectionTokensAreTrimmedAndComparedWithoutCase() {
        let tokens = Array(ConnectionTokens(" Keep-Alive ,x-drop,, CLOSE\t,te"))
        #expect(tokens.map(\.text) == ["Keep-Alive", "x-drop", "CLOSE", "te"])
        #expect(tokens.map(\.isKeepAlive) == [true, false, false, false])
        #expect(tokens.map(\.isClose) == [false, false, true, false])
        #expect(ForwardedHeaders.asksToClose("keep-alive, Close"))
        #expect(!ForwardedHeaders.asksToClose("closed"))
    }

    @Test func requestIDsAreVersion4UUIDs() {
        let id = RequestID.make()
        #expect(id.count == 36)
        let characters = Array(id)
        #expect(characters[14] == "4")
        #expect("89ab".contains(characters[19]))
        #expect(RequestID.make() != id)
    }
}

/// A configuration in force that never changes.
struct FixedRouting: HTTPRoutingSource {
    let snapshot: any HTTPRoutingSnapshot

    init(_ snapshot: any HTTPRoutingSnapshot) { self.snapshot = snapshot }

    var routingGeneration: Int { 0 }
    func routingSnapshot() -> any HTTPRoutingSnapshot { snapshot }
}
