import HTTPEndpoints
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

/// The shared one-request HTTP client (HTTPEndpoints has no test target of its own; the agent is its
/// main user) against real loopback servers: headers, answers of any status, the TLS hook, the body
/// limit, the deadline, a caller's connector.
@Suite struct OneShotHTTPClientTests {
    /// Answers every request with `status` and, as the body, the request's headers one per line
    /// (`name: value`, in the order they came), padded with `padding` bytes of "x".
    final class HeaderEcho: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let status: HTTPResponseStatus
        let padding: Int

        init(status: HTTPResponseStatus, padding: Int = 0) {
            self.status = status
            self.padding = padding
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .head(let head) = unwrapInboundIn(data) else { return }
            let body = head.headers.map { "\($0.name): \($0.value)\n" }.joined() + String(repeating: "x", count: padding)
            var headers = HTTPHeaders()
            headers.add(name: "content-length", value: String(body.utf8.count))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    struct Refusal: Error, CustomStringConvertible {
        var description: String
    }

    /// A server on 127.0.0.1 and an ephemeral port answering with `echo`, closed after `body`.
    func withServer(_ echo: HeaderEcho, _ body: (Int) async throws -> Void) async throws {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(echo)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        do {
            try await body(channel.localAddress!.port!)
        } catch {
            try? await channel.close()
            throw error
        }
        try await channel.close()
    }

    @Test func sendsTheCallersHeadersAndReturnsAnAnswerOfAnyStatus() async throws {
        try await withServer(HeaderEcho(status: .imATeapot)) { port in
            let client = OneShotHTTPClient(timeout: .seconds(2))
            var headers = HTTPHeaders()
            headers.add(name: "authorization", value: "Bearer token-1")
            headers.add(name: "accept", value: "application/json")
            let answer = try await client.request(.GET, host: "127.0.0.1", port: port, path: "/pods/cart", headers: headers)
            #expect(answer == .init(status: 418, body: """
                host: 127.0.0.1:\(port)
                authorization: Bearer token-1
                accept: application/json
                connection: close
                content-length: 0

                """))
        }
    }

    @Test func theTLSHookPreparesEveryConnectionAndItsFailureFailsTheRequest() async throws {
        try await withServer(HeaderEcho(status: .ok)) { port in
            // Whether the connection was up when the hook ran, per connection.
            let prepared = Mutex<[Bool]>([])
            let passing = OneShotHTTPClient(timeout: .seconds(2), tls: { channel in
                prepared.withLock { $0.append(channel.isActive) }
            })
            for _ in 0..<2 {
                let answer = try await passing.request(.GET, host: "127.0.0.1", port: port, path: "/")
                #expect(answer.status == 200)
            }
            #expect(prepared.withLock { $0 } == [false, false], "the hook prepares each connection before it is up")

            let failing = OneShotHTTPClient(timeout: .seconds(2), tls: { _ in throw Refusal(description: "no TLS library in this test") })
            #expect(failing.url(host: "127.0.0.1", port: port, path: "/api") == "https://127.0.0.1:\(port)/api")
            let error = await #expect(throws: OneShotHTTPClient.Failure.self, "answered although the connection could not be secured") {
                try await failing.request(.GET, host: "127.0.0.1", port: port, path: "/api")
            }
            #expect(error?.url == "https://127.0.0.1:\(port)/api")
            #expect(error?.reason.contains("no TLS library in this test") == true, "\(String(describing: error))")
        }
    }

    @Test func anAnswerLargerThanTheLimitIsAFailure() async throws {
        try await withServer(HeaderEcho(status: .ok, padding: 4096)) { port in
            var client = OneShotHTTPClient(timeout: .seconds(2))
            client.maximumBodyBytes = 1000
            let error = await #expect(throws: OneShotHTTPClient.Failure.self, "a 4 KB answer passed a 1000-byte limit") {
                try await client.request(.GET, host: "127.0.0.1", port: port, path: "/big")
            }
            #expect(error == .init(url: "http://127.0.0.1:\(port)/big", reason: "answer larger than 1000 bytes"))
        }
    }

    @Test func theDeadlineFailureNamesTheTimeoutInGoDurationForm() async throws {
        var routes = EndpointRoutes()
        routes.get("/slow", async: { _ in
            try? await Task.sleep(for: .seconds(5))
            return EndpointResponse(.ok, "late\n")
        })
        let slow = try await LoopbackServer(routes)
        defer { Task { await slow.close() } }
        let client = OneShotHTTPClient(timeout: .milliseconds(150))
        let clock = ContinuousClock()
        let began = clock.now
        do {
            _ = try await client.request(.GET, host: "127.0.0.1", port: slow.port, path: "/slow")
            Issue.record("answered despite the deadline")
        } catch {
            #expect(error.description == "http://127.0.0.1:\(slow.port)/slow: no answer within 150ms")
        }
        // Before the server's answer at 5 s: the deadline ended the call (a loaded machine may take a while
        // to run the timer, so the bound is the answer's time, not the deadline's).
        #expect(began.duration(to: clock.now) < .seconds(5))
    }

    @Test func aConnectorConnectsInsteadOfTheEventLoop() async throws {
        let asked = Mutex<[String]>([])
        let client = OneShotHTTPClient(timeout: .milliseconds(300),
                                       connector: { host, port, timeout in
            asked.withLock { $0.append("\(host) \(port) \(timeout == .milliseconds(300))") }
            throw Refusal(description: "no route to that namespace")
        })
        do {
            _ = try await client.request(.GET, host: "::1", port: 15000, path: "/ready")
            Issue.record("answered without a connection")
        } catch {
            #expect(error.url == "http://[::1]:15000/ready")
            #expect(error.reason == "cannot connect: no route to that namespace")
        }
        #expect(asked.withLock { $0 } == ["::1 15000 true"])
    }
}
