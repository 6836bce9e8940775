@testable import HTTPProxy
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// `request_headers_timeout` on HTTP/1: a head still incomplete when the time is up is answered 408 and
/// the connection closes; a head that completes in time, and the quiet between requests, are not timed.
@Suite struct RequestHeadersTimeoutTests {
    final class Expiries: @unchecked Sendable { var count = 0 }

    func channel(_ expiries: Expiries) throws -> EmbeddedChannel {
        let timeout = RequestHeadersTimeout(limit: .seconds(1), serverName: "envoy") { expiries.count += 1 }
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([
            timeout.byteWatcher, ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)), timeout.headWatcher,
        ])
        try channel.connect(to: SocketAddress(ipAddress: "192.0.2.1", port: 80)).wait()
        return channel
    }

    func send(_ text: String, _ channel: EmbeddedChannel) throws {
        try channel.writeInbound(channel.allocator.buffer(string: text))
    }

    func written(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) { text += buffer.readString(length: buffer.readableBytes) ?? "" }
        return text
    }

    @Test func aHeadStillIncompleteWhenTheTimeIsUpIsAnswered408AndTheConnectionCloses() throws {
        let expiries = Expiries()
        let channel = try channel(expiries)
        try send("GET / HTTP/1.1\r\nhost: a\r\n", channel)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(999))
        #expect(try written(channel).isEmpty && channel.isActive)
        // More of the head, still incomplete, does not restart the clock.
        try send("x-slow: 1\r\n", channel)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        let response = try written(channel)
        #expect(response.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"), "\(response)")
        #expect(response.contains("\r\nconnection: close\r\n") && response.contains("\r\nserver: envoy\r\n"))
        #expect(response.hasSuffix("\r\n\r\nrequest header timeout"))
        #expect(!channel.isActive && expiries.count == 1)
    }

    @Test func aHeadInTimeAndTheQuietBetweenRequestsAreNotTimed() throws {
        let expiries = Expiries()
        let channel = try channel(expiries)
        try send("GET / HTTP/1.1\r\nhost: a\r\n", channel)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(600))
        try send("\r\n", channel)
        guard case .head(let head)? = try channel.readInbound(as: HTTPServerRequestPart.self) else { Issue.record("no head"); return }
        #expect(head.uri == "/")
        // The request is answered elsewhere and the connection waits for the next one: no clock runs.
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(try written(channel).isEmpty && channel.isActive)
        // The next request's first bytes start it again, for the whole limit.
        try send("POST /pay HTTP/1.1\r\n", channel)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(999))
        #expect(try written(channel).isEmpty && channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(try written(channel).hasPrefix("HTTP/1.1 408 "))
        #expect(expiries.count == 1)
    }
}
