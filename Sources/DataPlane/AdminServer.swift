import NIOCore
import NIOHTTP1
import NIOPosix

/// Envoy's admin API (on 127.0.0.1 only) and the Prometheus endpoint (all addresses, scrape only).
struct AdminServer: Sendable {
    enum Routes: Sendable {
        case admin
        case prometheusOnly
    }

    let proxy: Proxy

    func bind(host: String, port: Int, group: EventLoopGroup, routes: Routes) -> EventLoopFuture<Channel> {
        ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(AdminHandler(proxy: proxy, routes: routes))
                    }
                }
            }
            .bind(host: host, port: port)
    }
}

/// Answers one admin request per HTTP request.
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let proxy: Proxy
    private let routes: AdminServer.Routes
    private var request: HTTPRequestHead?

    init(proxy: Proxy, routes: AdminServer.Routes) {
        self.proxy = proxy
        self.routes = routes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            request = head
        case .body:
            break
        case .end:
            guard let head = request else { return }
            request = nil
            let (status, body, contentType) = respond(to: head)
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: contentType)
            headers.add(name: "content-length", value: String(body.utf8.count))
            let keepAlive = head.isKeepAlive
            if !keepAlive { headers.add(name: "connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !keepAlive { done.whenComplete { _ in context.close(promise: nil) } }
        }
    }

    private func respond(to head: HTTPRequestHead) -> (HTTPResponseStatus, String, String) {
        let parts = head.uri.split(separator: "?", maxSplits: 1)
        let path = parts.first.map(String.init) ?? "/"
        let query = Set((parts.count > 1 ? parts[1] : "").split(separator: "&").map { String($0.split(separator: "=")[0]) })
        let text = "text/plain; charset=UTF-8"

        if routes == .prometheusOnly {
            guard path == "/stats/prometheus" else { return (.notFound, "not found\n", text) }
            guard head.method == .GET else { return (.methodNotAllowed, "method not allowed\n", text) }
            return (.ok, proxy.prometheusText, "text/plain; version=0.0.4")
        }

        let gets: [String: () -> (HTTPResponseStatus, String, String)] = [
            "/ready": {
                let state = self.proxy.state
                return (state == .live ? .ok : .serviceUnavailable, state.rawValue + "\n", text)
            },
            "/stats": { (.ok, self.proxy.statsText, text) },
            "/stats/prometheus": { (.ok, self.proxy.prometheusText, "text/plain; version=0.0.4") },
            "/config_dump": { (.ok, self.proxy.configDump, "application/json") },
            "/listeners": { (.ok, self.proxy.listenersText, text) },
            "/clusters": { (.ok, self.proxy.clustersText, text) },
        ]
        let posts: [String: () -> (HTTPResponseStatus, String, String)] = [
            "/drain_listeners": {
                self.proxy.drain(inboundOnly: query.contains("inboundonly"), graceful: query.contains("graceful"))
                return (.ok, "OK\n", text)
            },
            "/healthcheck/fail": {
                self.proxy.healthCheckFailing = true
                return (.ok, "OK\n", text)
            },
            "/healthcheck/ok": {
                self.proxy.healthCheckFailing = false
                return (.ok, "OK\n", text)
            },
            "/quitquitquit": {
                // Answer first, then stop.
                self.proxy.stopSoon()
                return (.ok, "OK\n", text)
            },
        ]
        if let action = gets[path] {
            return head.method == .GET ? action() : (.methodNotAllowed, "method not allowed: use GET\n", text)
        }
        if let action = posts[path] {
            return head.method == .POST ? action() : (.methodNotAllowed, "method not allowed: use POST\n", text)
        }
        return (.notFound, "not found\n", text)
    }
}
