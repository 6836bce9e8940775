import NIOCore
import NIOHTTP1
import NIOPosix

/// A request to one of Capstan's small HTTP endpoints (admin, health, metrics): method, path and query.
public struct EndpointRequest: Sendable {
    public var method: HTTPMethod
    public var path: String
    /// Query parameters; a parameter without `=` has an empty value.
    public var query: [String: String]

    public init(method: HTTPMethod, uri: String) {
        self.method = method
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
public struct EndpointRoutes: Sendable {
    public typealias Action = @Sendable (EndpointRequest) -> EndpointResponse

    private var gets: [String: Action] = [:]
    private var posts: [String: Action] = [:]

    public init() {}

    public mutating func get(_ path: String, _ action: @escaping Action) { gets[path] = action }
    public mutating func post(_ path: String, _ action: @escaping Action) { posts[path] = action }

    public func respond(to request: EndpointRequest) -> EndpointResponse {
        if let action = gets[request.path] {
            return request.method == .GET ? action(request) : EndpointResponse(.methodNotAllowed, "method not allowed: use GET\n")
        }
        if let action = posts[request.path] {
            return request.method == .POST ? action(request) : EndpointResponse(.methodNotAllowed, "method not allowed: use POST\n")
        }
        return .notFound
    }
}

/// Serves ``EndpointRoutes`` over HTTP/1.1 with keep-alive; one answer per request, computed on the event loop.
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
            let response = routes.respond(to: EndpointRequest(method: head.method, uri: head.uri))
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: response.contentType)
            headers.add(name: "content-length", value: String(response.body.utf8.count))
            let keepAlive = head.isKeepAlive
            if !keepAlive { headers.add(name: "connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: response.body)))), promise: nil)
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !keepAlive { done.whenComplete { _ in context.close(promise: nil) } }
        }
    }
}
