import Configuration
import NIOCore
import NIOHTTP1
import NIOPosix

/// One HTTP/1.1 request per connection: a new connection, `Connection: close`, and a deadline on the
/// whole exchange, connecting included. For the small servers Capstan asks now and then: the proxy's
/// admin API and the agent's status port in the pod (plain, on loopback), the Kubernetes API (TLS,
/// bearer token). Not a pooled client: nothing is kept between requests.
public struct OneShotHTTPClient: Sendable {
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

        public init(url: String, reason: String) {
            self.url = url
            self.reason = reason
        }

        public var description: String { "\(url): \(reason)" }
    }

    /// Opens a TCP socket connected to `host:port` within `timeout` and hands over its descriptor, in
    /// place of connecting from the event loop. A socket belongs to the network namespace of the thread
    /// that makes it, so this is how a caller reaches a server inside a pod's network namespace
    /// (`capstan status`). It runs on the calling task and may block it for up to `timeout`.
    public typealias Connector = @Sendable (_ host: String, _ port: Int, _ timeout: Duration) throws -> Int32

    /// Adds a TLS client handler to a new connection's pipeline, before the HTTP handlers (the caller
    /// brings the TLS library and its settings: trust roots, server name). Runs on the connection's
    /// event loop, so it may use `channel.pipeline.syncOperations`; a throw fails the request.
    public typealias TLSSetup = @Sendable (_ channel: any Channel) throws -> Void

    /// The longest an exchange may take, connecting included.
    public var timeout: Duration
    /// The largest body accepted (Prometheus text of a busy proxy stays well below).
    public var maximumBodyBytes = 16 << 20
    private let group: any EventLoopGroup
    private let connector: Connector?
    private let tls: TLSSetup?

    /// `connector` is how to connect (nil: from the event loop, in the process's own
    /// network namespace); `tls` secures each connection (nil: plain HTTP).
    public init(timeout: Duration = .seconds(1), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                connector: Connector? = nil, tls: TLSSetup? = nil) {
        self.timeout = timeout
        self.group = group
        self.connector = connector
        self.tls = tls
    }

    /// The URL of `path` at `host:port` as failures name it.
    public func url(host: String, port: Int, path: String) -> String {
        "\(tls == nil ? "http" : "https")://\(Self.authority(host: host, port: port))\(path)"
    }

    /// `method path` at `host:port`, with `headers` besides `Host`, `Connection` and `Content-Length`
    /// (the request has no body); the response of any status, or a ``Failure``.
    public func request(_ method: HTTPMethod, host: String, port: Int, path: String,
                        headers extraHeaders: HTTPHeaders = [:]) async throws(Failure) -> Response {
        let url = url(host: host, port: port, path: path)
        let loop = group.next()
        let result = loop.makePromise(of: Response.self)
        let outcome = Outcome(result)
        let amount = TimeAmount(timeout)
        let timeoutText = GoDuration.format(timeout)
        let timer = loop.scheduleTask(in: amount) {
            outcome.fail("no answer within \(timeoutText)")
        }
        let limit = maximumBodyBytes
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(amount)
            .channelInitializer { [tls] channel in
                channel.eventLoop.makeCompletedFuture {
                    try tls?(channel)
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
                headers.add(name: "host", value: Self.authority(host: host, port: port))
                headers.add(contentsOf: extraHeaders)
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

    /// `host:port`, an IPv6 address in brackets.
    private static func authority(host: String, port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// The request's promise, completed once by whichever comes first: the answer, an error, the
    /// deadline. Every one of them happens on the promise's event loop.
    private final class Outcome: Sendable {
        private let promise: EventLoopPromise<Response>
        private let done: NIOLoopBoundBox<Bool>

        init(_ promise: EventLoopPromise<Response>) {
            self.promise = promise
            done = .makeBoxSendingValue(false, eventLoop: promise.futureResult.eventLoop)
        }

        private func claim() -> Bool {
            defer { done.value = true }
            return !done.value
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
