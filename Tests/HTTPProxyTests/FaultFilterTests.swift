import Configuration
import HTTPTypes
import NIOCore
import NIOEmbedded
import Routing
import SwiftProtobuf
import Testing
import XDS
@testable import HTTPProxy

/// The fault filter in the connection manager, on `EmbeddedChannel`s with the embedded loop's clock:
/// a delay holds the request (and its body) then forwards it, an abort answers locally, a client leaving
/// during a delay cancels it, and `max_active_faults` bounds the faults in progress.
@Suite struct FaultFilterTests {
    typealias Fixture = HTTPStreamHandlerTests.Fixture

    /// `/delay`: 1 s on every request; `/abort`: 503 on every request; `/grpc`: gRPC UNAVAILABLE; `/both`: 1 s
    /// then 502; `/long`: 60 s, past the stream idle timeout (30 s); the rest
    /// of `app.local` to `backend` under the listener's own fault configuration, `listener`.
    static func config(listener: String = "{}") throws -> HTTPConnectionManagerConfig {
        let fault = "\"@type\": \"type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\""
        let inner = listener.dropFirst().dropLast()
        let listenerConfig = inner.isEmpty ? "{\(fault)}" : "{\(fault), \(inner)}"
        let json = """
            {"stat_prefix": "test", "codec_type": "HTTP1", "server_name": "istio-envoy", "stream_idle_timeout": "30s",
             "route_config": {"name": "test", "virtual_hosts": [{"name": "app", "domains": ["app.local"], "routes": [
               {"match": {"prefix": "/delay"}, "route": {"cluster": "backend"}, "typed_per_filter_config": {"envoy.filters.http.fault": {\(fault),
                 "delay": {"fixed_delay": "1s", "percentage": {"numerator": 100}}, "max_active_faults": 1}}},
               {"match": {"prefix": "/abort"}, "route": {"cluster": "backend"}, "typed_per_filter_config": {"envoy.filters.http.fault": {\(fault),
                 "abort": {"http_status": 503, "percentage": {"numerator": 1000000, "denominator": "MILLION"}}}}},
               {"match": {"prefix": "/grpc"}, "route": {"cluster": "backend"}, "typed_per_filter_config": {"envoy.filters.http.fault": {\(fault),
                 "abort": {"grpc_status": 14, "percentage": {"numerator": 100}}}}},
               {"match": {"prefix": "/both"}, "route": {"cluster": "backend"}, "typed_per_filter_config": {"envoy.filters.http.fault": {\(fault),
                 "delay": {"fixed_delay": "1s", "percentage": {"numerator": 100}}, "abort": {"http_status": 502, "percentage": {"numerator": 100}}}}},
               {"match": {"prefix": "/long"}, "route": {"cluster": "backend"}, "typed_per_filter_config": {"envoy.filters.http.fault": {\(fault),
                 "delay": {"fixed_delay": "60s", "percentage": {"numerator": 100}}}}},
               {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]},
             "http_filters": [{"name": "envoy.filters.http.fault", "typed_config": \(listenerConfig)},
               {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
            """
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_Router_V3_Router.self)
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_Fault_V3_HTTPFault.self)
        return try HTTPConnectionManagerConfig(try HTTPConnectionManagerConfig.Proto(jsonString: json), path: "hcm")
    }

    static func faultConfig(_ config: HTTPConnectionManagerConfig) -> FaultFilterConfig? {
        for filter in config.filters { if case .fault(let fault) = filter.behaviour { return fault } }
        return nil
    }

    @Test func aDelayHoldsTheRequestAndItsBodyThenForwardsIt() throws {
        let config = try Self.config()
        let fixture = try Fixture(config: config)
        try fixture.send("POST /delay HTTP/1.1\r\nHost: app.local\r\ncontent-length: 10\r\n\r\nhello")
        fixture.loop.advanceTime(by: .milliseconds(999))
        #expect(fixture.backend.connections.isEmpty, "still delayed")
        #expect(Self.faultConfig(config)?.active == 1)
        // The rest of the body arrives during the delay: held with the rest.
        try fixture.send("world")
        fixture.loop.advanceTime(by: .milliseconds(1))
        let upstream = try fixture.upstreamText()
        #expect(upstream.hasPrefix("POST /delay HTTP/1.1\r\n"))
        #expect(upstream.hasSuffix("\r\n\r\nhelloworld"))
        // The delay is over: no longer an active fault.
        #expect(Self.faultConfig(config)?.active == 0)
        try fixture.answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 200 OK"))
        #expect(fixture.records.ended.count == 1)
        #expect(fixture.records.ended.first?.flags == .delayInjected)
        #expect(fixture.records.ended.first?.flags.description == "DI")
        #expect(fixture.backend.activeRequests == 0)
    }

    @Test func anAbortAnswersLocallyWithoutTheUpstream() throws {
        let fixture = try Fixture(config: try Self.config())
        try fixture.send("GET /abort HTTP/1.1\r\nHost: app.local\r\n\r\n")
        let response = try fixture.downstreamText()
        #expect(response.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
        #expect(response.contains("server: istio-envoy"))
        #expect(response.hasSuffix("\r\n\r\nfault filter abort"))
        #expect(fixture.backend.connections.isEmpty)
        let record = try #require(fixture.records.ended.first)
        #expect(record.responseCode == 503 && record.flags == .faultInjected && record.flags.description == "FI")
        #expect(record.responseCodeDetails == "fault_filter_abort")
        // The connection serves the next request: not an aborted route, so forwarded.
        try fixture.send("GET /next HTTP/1.1\r\nHost: app.local\r\n\r\n")
        #expect(try fixture.upstreamText().hasPrefix("GET /next HTTP/1.1"))
    }

    @Test func aGRPCAbortIsAnHTTP200WithItsStatus() throws {
        let fixture = try Fixture(config: try Self.config())
        try fixture.send("POST /grpc HTTP/1.1\r\nHost: app.local\r\ncontent-type: application/grpc\r\ncontent-length: 0\r\n\r\n")
        let response = try fixture.downstreamText()
        #expect(response.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(response.contains("content-type: application/grpc"))
        #expect(response.contains("grpc-status: 14"))
        #expect(response.contains("grpc-message: fault filter abort"))
        #expect(fixture.records.ended.first?.grpcStatus == "14")
        #expect(fixture.records.ended.first?.flags == .faultInjected)
        // Not a gRPC request: the status as it is (200) with the message as body, as Envoy's local reply.
        try fixture.send("GET /grpc HTTP/1.1\r\nHost: app.local\r\n\r\n")
        #expect(try fixture.downstreamText().hasSuffix("fault filter abort"))
    }

    @Test func aClientLeavingDuringADelayCancelsIt() throws {
        let config = try Self.config()
        let fixture = try Fixture(config: config)
        try fixture.send("GET /delay HTTP/1.1\r\nHost: app.local\r\n\r\n")
        fixture.loop.advanceTime(by: .milliseconds(500))
        fixture.downstream.pipeline.fireChannelInactive()
        let record = try #require(fixture.records.ended.first)
        #expect(record.flags == [.delayInjected, .downstreamConnectionTermination])
        #expect(record.flags.description == "DI,DC")
        #expect(Self.faultConfig(config)?.active == 0)
        fixture.loop.advanceTime(by: .seconds(2))
        #expect(fixture.backend.connections.isEmpty, "the cancelled delay sends nothing upstream")
        #expect(fixture.records.ended.count == 1)
    }

    @Test func maxActiveFaultsLetsTheRestThrough() throws {
        // Two connections sharing the listener's filter: one delay at a time (the route's max_active_faults: 1).
        let config = try Self.config()
        let first = try Fixture(config: config)
        let second = try Fixture(config: config)
        try first.send("GET /delay HTTP/1.1\r\nHost: app.local\r\n\r\n")
        try second.send("GET /delay HTTP/1.1\r\nHost: app.local\r\n\r\n")
        #expect(first.backend.connections.isEmpty)
        #expect(try second.upstreamText().hasPrefix("GET /delay HTTP/1.1"), "over the limit: no delay")
        try second.answer("HTTP/1.1 204 No Content\r\n\r\n")
        #expect(second.records.ended.first?.flags == [])
        first.loop.advanceTime(by: .seconds(1))
        #expect(try first.upstreamText().hasPrefix("GET /delay HTTP/1.1"))
    }

    @Test func headerControlledFaultsUnderTheListenersConfiguration() throws {
        let config = try Self.config(listener: #"{"abort": {"header_abort": {}, "percentage": {"numerator": 100}}, "delay": {"header_delay": {}, "percentage": {"numerator": 100}}}"#)
        let fixture = try Fixture(config: config)
        try fixture.send("GET /a HTTP/1.1\r\nHost: app.local\r\nx-envoy-fault-abort-request: 418\r\n\r\n")
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 418"))
        try fixture.send("GET /b HTTP/1.1\r\nHost: app.local\r\nx-envoy-fault-delay-request: 250\r\n\r\n")
        fixture.loop.advanceTime(by: .milliseconds(249))
        #expect(fixture.backend.connections.isEmpty)
        fixture.loop.advanceTime(by: .milliseconds(1))
        #expect(try fixture.upstreamText().hasPrefix("GET /b HTTP/1.1"))
        try fixture.answer("HTTP/1.1 204 No Content\r\n\r\n")
        // Without the headers: no fault.
        try fixture.send("GET /c HTTP/1.1\r\nHost: app.local\r\n\r\n")
        #expect(try fixture.upstreamText().hasPrefix("GET /c HTTP/1.1"))
        #expect(fixture.records.ended.map(\.flags.description) == ["FI", "DI"])
    }

    @Test func aDelayCanBeFollowedByAnAbort() throws {
        let config = try Self.config()
        let fixture = try Fixture(config: config)
        try fixture.send("GET /both HTTP/1.1\r\nHost: app.local\r\n\r\n")
        #expect(try fixture.downstreamText().isEmpty)
        fixture.loop.advanceTime(by: .seconds(1))
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 502"))
        #expect(fixture.backend.connections.isEmpty)
        #expect(fixture.records.ended.first?.flags.description == "DI,FI")
        #expect(Self.faultConfig(config)?.active == 0, "one request, one active fault, released at its end")
    }

    @Test func theStreamIdleTimeoutEndsALongDelay() throws {
        let config = try Self.config()
        let fixture = try Fixture(config: config)
        try fixture.send("GET /long HTTP/1.1\r\nHost: app.local\r\n\r\n")
        fixture.loop.advanceTime(by: .seconds(30))
        #expect(try fixture.downstreamText().hasPrefix("HTTP/1.1 408"))
        #expect(fixture.records.ended.first?.flags == [.delayInjected, .streamIdleTimeout])
        #expect(Self.faultConfig(config)?.active == 0)
        // The delay's end finds the request answered: nothing goes upstream.
        fixture.loop.advanceTime(by: .seconds(60))
        #expect(fixture.backend.connections.isEmpty)
        #expect(fixture.records.ended.count == 1)
    }
}
