import NIOCore
import NIOEmbedded
import Testing
@testable import HTTPProxy

/// The cluster's circuit breakers as the router meets them: several downstream connections on one
/// embedded loop share the upstream pools and the test cluster, so that requests compete for its
/// connections, pending places, requests and retries.
@Suite struct CircuitBreakerTests {
    typealias Cluster = HTTPStreamHandlerTests.TestCluster

    @Test func limitsAreCountedAcrossOpenAndCloseWithTheirOverflows() {
        var limits = CircuitBreakers.Limits()
        limits.maxRequests = 2
        limits.tracksRemaining = true
        let breakers = CircuitBreakers(limits)
        #expect((0..<3).map { _ in breakers.tryOpen(.requests) } == [true, true, false])
        #expect(breakers.openCount(.requests) == 2)
        breakers.close(.requests)
        #expect(breakers.tryOpen(.requests))
        let entries = Dictionary(uniqueKeysWithValues: breakers.entries)
        #expect(entries["upstream_rq_pending_overflow"] == 1, "Envoy counts request overflows there too")
        #expect(entries["circuit_breakers.default.rq_open"] == 1)
        #expect(entries["circuit_breakers.default.remaining_rq"] == 0)
        #expect(entries["circuit_breakers.default.remaining_retries"] == 3, "Envoy's default max_retries")
        #expect(entries["circuit_breakers.default.cx_open"] == 0)
        limits.tracksRemaining = false
        breakers.limits = limits
        #expect(!breakers.entries.contains { $0.0.hasPrefix("circuit_breakers.default.remaining") })
    }

    /// Downstream connections to one cluster through one set of pools.
    struct Clients {
        let loop = EmbeddedEventLoop()
        let backend: Cluster
        let records = HTTPStreamHandlerTests.Records()
        let pools: UpstreamPools
        private(set) var downstreams: [EmbeddedChannel] = []

        init(_ limits: CircuitBreakers.Limits, backends: Int = 1) throws {
            backend = Cluster(name: "backend", loop: loop,
                              endpoints: try (0..<backends).map { try SocketAddress(ipAddress: "192.0.2.\(10 + $0)", port: 8080) })
            backend.circuitBreakers.limits = limits
            pools = UpstreamPools(eventLoop: loop)
        }

        /// A new downstream connection sending `request`.
        mutating func send(_ request: String) throws {
            let downstream = EmbeddedChannel(loop: loop)
            let manager = HTTPConnectionManager(
                config: try HTTPStreamHandlerTests.config(),
                downstream: DownstreamConnectionInfo(remoteAddress: try SocketAddress(ipAddress: "192.0.2.1", port: 40000 + downstreams.count),
                                                     localAddress: try SocketAddress(ipAddress: "192.0.2.10", port: 80)),
                routing: FixedRouting(HTTPStreamHandlerTests.Snapshot(clusters: ["backend": backend])), pools: pools, observer: records)
            try manager.serve(on: downstream, negotiatedProtocol: nil)
            try downstream.connect(to: try SocketAddress(ipAddress: "192.0.2.1", port: 40000)).wait()
            try downstream.writeInbound(ByteBuffer(string: request))
            downstreams.append(downstream)
        }

        func response(_ index: Int) throws -> String { try HTTPStreamHandlerTests.Fixture.drain(downstreams[index]) }
        func upstream(_ index: Int) throws -> String { try HTTPStreamHandlerTests.Fixture.drain(backend.connections[index]) }
    }

    @Test func atMaxConnectionsARequestWaitsAndBeyondMaxPendingItOverflows() throws {
        var limits = CircuitBreakers.Limits()
        limits.maxConnections = 1
        limits.maxPendingRequests = 1
        var clients = try Clients(limits)
        try clients.send("GET /a HTTP/1.1\r\nHost: app.local\r\n\r\n")
        try clients.send("GET /b HTTP/1.1\r\nHost: app.local\r\n\r\n")
        try clients.send("GET /c HTTP/1.1\r\nHost: app.local\r\n\r\n")
        #expect(clients.backend.connections.count == 1, "the second request waits for the one connection")
        #expect(try clients.upstream(0).hasPrefix("GET /a "))
        let refused = try clients.response(2)
        #expect(refused.hasPrefix("HTTP/1.1 503"))
        #expect(refused.contains("x-envoy-overloaded: true"))
        #expect(refused.hasSuffix("reset reason: overflow"))
        #expect(clients.records.ended.first?.flags.description == "UO")
        #expect(clients.backend.circuitBreakers.overflowCount(.pendingRequests) == 1)

        try clients.backend.connections[0].writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na"))
        #expect(try clients.response(0).hasSuffix("\r\n\r\na"))
        // The freed connection goes to the waiting request, not to the pool.
        #expect(try clients.upstream(0).hasPrefix("GET /b "))
        try clients.backend.connections[0].writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb"))
        #expect(try clients.response(1).hasSuffix("\r\n\r\nb"))
        #expect(clients.backend.connections.count == 1)
        for resource in CircuitBreakers.Resource.allCases where resource != .connections {
            #expect(clients.backend.circuitBreakers.openCount(resource) == 0, "\(resource) all closed")
        }
        #expect(clients.backend.circuitBreakers.openCount(.connections) == 1, "the connection stays open, kept alive")
    }

    @Test func aWaitingRequestWhoseClientLeavesGivesUpItsPlace() throws {
        var limits = CircuitBreakers.Limits()
        limits.maxConnections = 1
        limits.maxPendingRequests = 1
        var clients = try Clients(limits)
        try clients.send("GET /a HTTP/1.1\r\nHost: app.local\r\n\r\n")
        try clients.send("GET /b HTTP/1.1\r\nHost: app.local\r\n\r\n")
        #expect(clients.backend.circuitBreakers.openCount(.pendingRequests) == 1)
        try clients.downstreams[1].close().wait()
        #expect(clients.backend.circuitBreakers.openCount(.pendingRequests) == 0)
        try clients.send("GET /c HTTP/1.1\r\nHost: app.local\r\n\r\n")
        #expect(try clients.response(2).isEmpty, "it waits in the place given up")
        try clients.backend.connections[0].writeInbound(ByteBuffer(string: "HTTP/1.1 204 No Content\r\n\r\n"))
        _ = try clients.upstream(0)
        #expect(try clients.upstream(0).isEmpty)
        try clients.backend.connections[0].writeInbound(ByteBuffer(string: "HTTP/1.1 204 No Content\r\n\r\n"))
        #expect(try clients.response(2).hasPrefix("HTTP/1.1 204"))
        #expect(clients.records.ended.map(\.path) == ["/b", "/a", "/c"])
    }

    @Test func beyondMaxRequestsARequestOverflows() throws {
        var limits = CircuitBreakers.Limits()
        limits.maxRequests = 1
        var clients = try Clients(limits)
        try clients.send("GET /a HTTP/1.1\r\nHost: app.local\r\n\r\n")
        try clients.send("GET /b HTTP/1.1\r\nHost: app.local\r\n\r\n")
        #expect(try clients.response(1).hasPrefix("HTTP/1.1 503"))
        #expect(clients.backend.connections.count == 1)
        #expect(clients.backend.activeRequests == 1, "the refused request's endpoint was released")
    }

    @Test func beyondMaxRetriesTheFailureGoesDownAsItIs() throws {
        var limits = CircuitBreakers.Limits()
        limits.maxRetries = 0
        var clients = try Clients(limits, backends: 2)
        try clients.send("GET /retry HTTP/1.1\r\nHost: app.local\r\n\r\n")
        try clients.backend.connections[0].writeInbound(ByteBuffer(string: "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"))
        clients.loop.advanceTime(by: .milliseconds(50))
        #expect(try clients.response(0).hasPrefix("HTTP/1.1 503 Service Unavailable"))
        #expect(clients.backend.connections.count == 1, "no retry")
        #expect(clients.records.ended.first?.flags.description == "UO")
        #expect(clients.backend.circuitBreakers.overflowCount(.retries) == 1)
    }
}
