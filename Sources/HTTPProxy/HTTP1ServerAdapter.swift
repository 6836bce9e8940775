import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// HTTP/1.x requests as version-independent parts for the stream handler behind it, and its responses
/// back in the request's own version. It keeps what HTTP/1 alone has: keep-alive (HTTP/1.0 closes unless
/// asked not to; `connection: close` closes), `Expect: 100-continue` answered here as Envoy does, and
/// `Connection: close` on every response once the proxy drains.
final class HTTP1ServerAdapter: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let secure: Bool
    private let limits: RequestLimits
    /// The version of the request being answered, and whether the connection stays open after it.
    private var version = HTTPVersion.http1_1
    private var keepAlive = true
    private var discardingRequest = false
    /// A request is being answered (between its head and the end of its response).
    private var inFlight = false
    /// Set when the proxy drains: the next response says `connection: close` and the connection ends.
    var draining = false

    init(secure: Bool, limits: RequestLimits) {
        self.secure = secure
        self.limits = limits
    }

    /// `HTTP/1.0` or `HTTP/1.1`, for Istio's `request_protocol`.
    var requestProtocol: String { version == .http1_0 ? "HTTP/1.0" : "HTTP/1.1" }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(var head):
            inFlight = true
            version = head.version
            keepAlive = head.isKeepAlive && !draining
            discardingRequest = false
            if let refusal = limits.refusal(for: head.headers) {
                discardingRequest = true
                answerLocally(context: context, status: refusal.status, body: refusal.body)
                return
            }
            if head.version == .http1_1, let expect = head.headers.first(name: "expect"), expect.lowercased() == "100-continue" {
                // Envoy answers 100 Continue itself and does not send the expectation upstream.
                head.headers.remove(name: "expect")
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
            }
            do {
                let request = try HTTPRequest(head, secure: secure, splitCookie: false)
                context.fireChannelRead(wrapInboundOut(.head(request)))
            } catch {
                discardingRequest = true
                answerLocally(context: context, status: .badRequest, body: "")
            }
        case .body(let body):
            guard !discardingRequest else { return }
            context.fireChannelRead(wrapInboundOut(.body(body)))
        case .end(let trailers):
            guard !discardingRequest else { return }
            context.fireChannelRead(wrapInboundOut(.end(trailers.map { HTTPFields($0, splitCookie: false) })))
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let response):
            var head = HTTPResponseHead(response)
            if version == .http1_0 { head.version = .http1_0 }
            if draining { keepAlive = false }
            if !keepAlive {
                head.headers.replaceOrAdd(name: "connection", value: "close")
            } else if version == .http1_0 {
                head.headers.replaceOrAdd(name: "connection", value: "keep-alive")
            }
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .body(let body):
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: promise)
        case .end(let trailers):
            inFlight = false
            let closing = !keepAlive
            let written = promise ?? (closing ? context.eventLoop.makePromise() : nil)
            context.write(wrapOutboundOut(.end(trailers.map(HTTPHeaders.init))), promise: written)
            if closing, let written {
                written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is ChannelShouldQuiesceEvent:
            // Draining: the response in flight says `connection: close`; an idle connection is closed by
            // the pipeline handler before this one.
            draining = true
        case let idle as IdleStateHandler.IdleStateEvent where idle == .all:
            if !inFlight { context.close(promise: nil) }
            return
        default:
            break
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is HTTPParserError || error is HTTP1TypeConversionError {
            // Malformed or smuggling-shaped requests (both Content-Length and Transfer-Encoding, conflicting
            // lengths): 400 and close, as Envoy.
            keepAlive = false
            answerLocally(context: context, status: .badRequest, body: "")
            return
        }
        context.fireErrorCaught(error)
    }

    /// Answers without involving the stream handler, then closes (the request's remainder is not read).
    private func answerLocally(context: ChannelHandlerContext, status: HTTPResponseStatus, body: String) {
        keepAlive = false
        var head = HTTPResponseHead(version: version == .http1_0 ? .http1_0 : .http1_1, status: status)
        head.headers.add(name: "content-length", value: "\(body.utf8.count)")
        head.headers.add(name: "content-type", value: "text/plain")
        head.headers.add(name: "connection", value: "close")
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if !body.isEmpty { context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}
