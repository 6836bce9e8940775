import NIOCore
import Testing
@testable import HTTPProxy

/// What the router tells the cluster about each attempt, for its outlier detection.
extension HTTPStreamHandlerTests {
    @Test func eachAttemptsOutcomeIsReportedToTheCluster() throws {
        let fixture = try Fixture(backends: 2)
        try fixture.send("PUT /retry HTTP/1.1\r\nHost: app.local\r\ncontent-length: 3\r\n\r\nabc")
        _ = try fixture.upstreamText(0)
        try fixture.answer("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy", on: 0)
        fixture.loop.advanceTime(by: .milliseconds(20))
        try fixture.answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", on: 1)
        #expect(fixture.backend.outcomes.map(\.address) == ["192.0.2.10", "192.0.2.11"])
        #expect(fixture.backend.outcomes.map(\.outcome) == [.response(status: 503), .response(status: 200)])
    }

    @Test func connectFailuresAndResetsAreReported() throws {
        let refused = try Fixture()
        refused.backend.refusesConnections = true
        try refused.send("GET / HTTP/1.1\r\nHost: app.local\r\n\r\n")
        #expect(refused.backend.outcomes.map(\.outcome) == [.connectFailure])

        let reset = try Fixture()
        try reset.send("GET / HTTP/1.1\r\nHost: app.local\r\n\r\n")
        _ = try reset.upstreamText()
        try reset.backend.connections[0].close().wait()
        #expect(reset.backend.outcomes.map(\.outcome) == [.reset])
    }
}
