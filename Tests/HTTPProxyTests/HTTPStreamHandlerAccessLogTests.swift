import HTTPTypes
import SwiftProtobuf
import Testing
import XDS
@testable import HTTPProxy

/// What the stream handler keeps for access logs: the request's and response's headers and the upstream
/// connection's address when the connection manager has an access log, nothing of that without one.
extension HTTPStreamHandlerTests {
    static func configWithAccessLog() throws -> HTTPConnectionManagerConfig {
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_AccessLoggers_Stream_V3_StdoutAccessLog.self)
        return try config(extra: """
            "access_log": [{"name": "envoy.access_loggers.stdout", "typed_config": {
              "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"}}],
            """)
    }

    @Test func withAnAccessLogTheRecordKeepsHeadersAndTimes() throws {
        let fixture = try Fixture(config: try Self.configWithAccessLog())
        try fixture.send("POST /logged HTTP/1.1\r\nHost: app.local\r\nUser-Agent: test/1\r\ncontent-length: 3\r\n\r\nabc")
        let upstream = try fixture.upstreamText()
        try fixture.answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-answer: yes\r\n\r\nok")
        let record = try #require(fixture.records.ended.first)
        let request = try #require(record.request)
        let id = try #require(request.headerFields[HTTPField.Name("x-request-id")!])
        #expect(upstream.contains("x-request-id: \(id)"), "the generated id, as it went upstream")
        #expect(request.headerFields[.userAgent] == "test/1")
        #expect(request.path == "/logged")
        #expect(record.responseHeaders?[HTTPField.Name("x-answer")!] == "yes")
        #expect(record.responseHeaders?[.server] == "istio-envoy", "as sent downstream")
        #expect(record.requestEnd != nil && record.upstreamResponseStart != nil)
        #expect(record.responseCodeDetails == "via_upstream")
        let line = AccessLogFormat.envoyDefault.render(AccessLogEntry(record: record, connection: DownstreamConnectionInfo(remoteAddress: nil, localAddress: nil)))
        #expect(line.contains("\"POST /logged HTTP/1.1\" 200 - 3 2 "), "\(line)")
        #expect(line.contains("\"test/1\" \"\(id)\" \"app.local\" \"192.0.2.10:8080\""), "\(line)")
    }

    @Test func withoutAnAccessLogTheRecordKeepsNoHeaders() throws {
        let fixture = try Fixture()
        try fixture.send("GET /plain HTTP/1.1\r\nHost: app.local\r\n\r\n")
        _ = try fixture.upstreamText()
        try fixture.answer("HTTP/1.1 204 No Content\r\n\r\n")
        let record = try #require(fixture.records.ended.first)
        #expect(record.request == nil)
        #expect(record.responseHeaders == nil)
        #expect(record.upstreamLocalAddress == nil)
        #expect(record.respondedByUpstream)
    }

    @Test func aLocalReplyIsRecordedWithItsHeaders() throws {
        let fixture = try Fixture(config: try Self.configWithAccessLog())
        try fixture.send("GET / HTTP/1.1\r\nHost: elsewhere\r\nx-request-id: mine\r\n\r\n")
        _ = try fixture.downstreamText()
        let record = try #require(fixture.records.ended.first)
        #expect(record.request?.headerFields[HTTPField.Name("x-request-id")!] == "mine")
        #expect(record.responseHeaders?[.contentLength] == "0")
        #expect(record.responseCodeDetails == "route_not_found")
        #expect(!record.respondedByUpstream)
    }
}
