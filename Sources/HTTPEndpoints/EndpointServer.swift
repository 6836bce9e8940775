import NIOCore
import NIOHTTP1
import NIOPosix

/// A request to one of Capstan's small HTTP endpoints (admin, health, metrics): method, path and query.
public struct EndpointRequest: Sendable {
    public var method: HTTPMethod
    public var path: String
    /// Query parameters; a parameter without `=` has an empty value.
    public var query: [String: String]
    /// Who asked (the connection's remote address), so an action can refuse callers that are not local.
    public var peer: SocketAddress?

    public init(method: HTTPMethod, uri: String, peer: SocketAddress? = nil) {
        self.method = method
        self.peer = peer
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = parts.first.map(String.init) ?? "/"
        var query: [String: String] = [:]
        for item in (parts.count > 1 ? parts[1] : "").split(separator: "&") {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            query[String(pair[0])] = pair.count > 1 ? String(pair[1]) : ""
        }
        self.query = query
    }
}

/// The answer to an ``EndpointRequest``: a status and a small body.
public struct EndpointResponse: Sendable {
    public var status: HTTPResponseStatus
    public var body: String
    public var contentType: String

    public init(_ status: HTTPResponseStatus = .ok, _ body: String, contentType: String = EndpointResponse.plainText) {
        self.status = status
        self.body = body
        self.contentType = contentType
    }

    public static let plainText = "text/plain; charset=UTF-8"
    public static let prometheusText = "text/plain; version=0.0.4"

    public static func prometheus(_ body: String) -> EndpointResponse {
        EndpointResponse(.ok, body, contentType: prometheusText)
    }
    public static let notFound = EndpointResponse(.notFound, "not found\n")
}

/// The paths an endpoint serves, by method; a known path asked with the wrong method gets 405.
/// An action answers at once on the event loop, or (``AsyncAction``) after awaiting something else,
/// such as another server it asks.
public struct EndpointRoutes: Sendable {
    public typealias Action = @Sendable (EndpointRequest) -> EndpointResponse
    public typealias AsyncAction = @Sendable (EndpointRequest) async -> EndpointResponse

    private enum Handler: Sendable {
        case immediate(Action)
        case deferred(AsyncAction)
    }

    private var gets: [String: Handler] = [:]
    private var posts: [String: Handler] = [:]

    public init() {}

    public mutating func get(_ path: String, _ action: @escaping Action) { gets[path] = .immediate(action) }
    public mutating func post(_ path: String, _ action: @escaping Action) { posts[path] = .immediate(action) }
    /// An action that awaits before answering; the connection's next request waits for this answer.
    public mutating func get(_ path: String, async action: @escaping AsyncAction) { gets[path] = .deferred(action) }
    public mutating func post(_ path: String, async action: @escaping AsyncAction) { posts[path] = .deferred(action) }

    /// Answers on the event loop; an ``AsyncAction`` runs in a task and the future completes on `eventLoop`.
    public func respond(to request: EndpointRequest, on eventLoop: any EventLoop) -> EventLoopFuture<EndpointResponse> {
        let handler: Handler
        if let get = gets[request.path] {
            guard request.method == .GET else { return eventLoop.makeSucceededFuture(EndpointResponse(.methodNotAllowed, "method not allowed: use GET\n")) }
            handler = get
        } else if let post = posts[request.path] {
            guard request.method == .POST else { return eventLoop.makeSucceededFuture(EndpointResponse(.methodNotAllowed, "method not allowed: use POST\n")) }
            handler = post
        } else {
            return eventLoop.makeSucceededFuture(.notFound)
        }
        switch handler {
        case .immediate(let action):
            return eventLoop.makeSucceededFuture(action(request))
        case .deferred(let action):
            let promise = eventLoop.makePromise(of: EndpointResponse.self)
            promise.completeWithTask { await action(request) }
            return promise.futureResult
        }
    }
}

/// Serves ``EndpointRoutes`` over HTTP/1.1 with keep-alive; one answer per request, in order (NIO's
/// pipelining handler holds a connection's next request until the answer to the previous one is out).
public enum EndpointServer {
    public static func bind(host: String, port: Int, group: any EventLoopGroup,
                            routes: EndpointRoutes) -> EventLoopFuture<any Channel> {
        ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(EndpointHandler(routes: routes))
                    }
                }
            }
            .bind(host: host, port: port)
    }
}

/// Answers each complete HTTP request from the routes.
final class EndpointHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: EndpointRoutes
    private var head: HTTPRequestHead?

    init(routes: EndpointRoutes) {
        self.routes = routes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            let request = EndpointRequest(method: head.method, uri: head.uri, peer: context.channel.remoteAddress)
            // An immediate answer's future is already complete: the callback runs now, on this loop.
            let answer = routes.respond(to: request, on: context.eventLoop)
            let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
            answer.whenComplete { result in
                let (handler, context) = bound.value
                guard context.channel.isActive else { return }
                let response = (try? result.get()) ?? EndpointResponse(.internalServerError, "internal error\n")
                handler.write(response, for: head, context: context)
            }
        }
    }

    private func write(_ response: EndpointResponse, for head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: response.contentType)
        headers.add(name: "content-length", value: String(response.body.utf8.count))
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: response.body)))), promise: nil)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
