import Configuration
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// One HTTP/1.1 request at a time to a server in the pod (the proxy's admin API, the agent's readiness
/// port): a new connection, `Connection: close`, and a deadline on the whole exchange.
public struct LocalHTTPClient: Sendable {
    /// What the server answered.
    public struct Response: Sendable, Equatable {
        public var status: Int
        public var body: String

        public init(status: Int, body: String) {
            self.status = status
            self.body = body
        }
    }

    /// Why no answer came: the URL and what went wrong (refused, timed out, closed early, …).
    public struct Failure: Error, CustomStringConvertible, Sendable, Equatable {
        public var url: String
        public var reason: String

        public var description: String { "\(url): \(reason)" }
    }

    /// Opens a TCP socket connected to `host:port` within `timeout` and hands over its descriptor, in
    /// place of connecting from the event loop. A socket belongs to the network namespace of the thread
    /// that makes it, so this is how a caller reaches a server inside a pod's namespace (`capstan status`).
    /// It runs on the calling task and may block it for up to `timeout`.
    public typealias Connector = @Sendable (_ host: String, _ port: Int, _ timeout: Duration) throws -> Int32

    /// The longest an exchange may take, connecting included.
    public var timeout: Duration
    /// The largest body accepted (Prometheus text of a busy proxy stays well below).
    public var maximumBodyBytes = 16 << 20
    private let group: any EventLoopGroup
    private let connector: Connector?

    /// `connector`: how to connect (nil: from the event loop, in the process's own network namespace).
    public init(timeout: Duration = .seconds(1), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                connector: Connector? = nil) {
        self.timeout = timeout
        self.group = group
        self.connector = connector
    }

    /// `method path` at `host:port`; the response of any status, or a ``Failure``.
    public func request(_ method: HTTPMethod, host: String, port: Int, path: String) async throws(Failure) -> Response {
        let url = "http://\(host.contains(":") ? "[\(host)]" : host):\(port)\(path)"
        let loop = group.next()
        let result = loop.makePromise(of: Response.self)
        let outcome = Outcome(result)
        let amount = TimeAmount.nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000
                                            + Int64(timeout.components.attoseconds / 1_000_000_000))
        let timer = loop.scheduleTask(in: amount) {
            outcome.fail("no answer within \(GoDuration.format(timeout))")
        }
        let limit = maximumBodyBytes
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(amount)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseReader(outcome: outcome, limit: limit))
                }
            }
        let connecting: EventLoopFuture<any Channel>
        if let connector {
            do {
                connecting = bootstrap.withConnectedSocket(try connector(host, port, timeout))
            } catch {
                connecting = loop.makeFailedFuture(error)
            }
        } else {
            connecting = bootstrap.connect(host: host, port: port)
        }
        connecting.whenComplete { connected in
            switch connected {
            case .failure(let error):
                outcome.fail("cannot connect: \(error)")
            case .success(let channel):
                var headers = HTTPHeaders()
                headers.add(name: "host", value: host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)")
                headers.add(name: "connection", value: "close")
                headers.add(name: "content-length", value: "0")
                let head = HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)
                channel.write(HTTPClientRequestPart.head(head), promise: nil)
                channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                result.futureResult.whenComplete { _ in channel.close(promise: nil) }
            }
        }
        result.futureResult.whenComplete { _ in timer.cancel() }
        do {
            return try await result.futureResult.get()
        } catch let failure as Failure {
            throw Failure(url: url, reason: failure.reason)
        } catch {
            throw Failure(url: url, reason: "\(error)")
        }
    }

    /// The request's promise, completed once whichever comes first: the answer, an error, the deadline.
    private final class Outcome: Sendable {
        private let promise: EventLoopPromise<Response>
        private let done = NIOLockedValueBox(false)

        init(_ promise: EventLoopPromise<Response>) { self.promise = promise }

        private func claim() -> Bool {
            done.withLockedValue { done in
                defer { done = true }
                return !done
            }
        }

        func succeed(_ response: Response) {
            if claim() { promise.succeed(response) }
        }

        func fail(_ reason: String) {
            if claim() { promise.fail(Failure(url: "", reason: reason)) }
        }
    }

    /// Collects the status and body; the answer is complete at the end of the message.
    private final class ResponseReader: ChannelInboundHandler {
        typealias InboundIn = HTTPClientResponsePart

        private let outcome: Outcome
        private let limit: Int
        private var status: Int?
        private var body: ByteBuffer?

        init(outcome: Outcome, limit: Int) {
            self.outcome = outcome
            self.limit = limit
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                status = Int(head.status.code)
            case .body(var part):
                if body == nil {
                    body = part
                } else {
                    body!.writeBuffer(&part)
                }
                if let body, body.readableBytes > limit {
                    outcome.fail("answer larger than \(limit) bytes")
                    context.close(promise: nil)
                }
            case .end:
                let text = body.map { String(buffer: $0) } ?? ""
                outcome.succeed(Response(status: status ?? 0, body: text))
                context.close(promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            outcome.fail("connection closed before a complete answer")
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            outcome.fail("\(error)")
            context.close(promise: nil)
        }
    }
}
