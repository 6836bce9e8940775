import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1

/// HTTP/1.x requests as version-independent parts for the stream handler behind it, and its responses
/// back in the request's own version. It keeps what HTTP/1 alone has: keep-alive (HTTP/1.0 closes unless
/// asked not to; `connection: close` closes), pipelining (a request that arrives before the previous
/// response ended waits here, and reading pauses until it goes on), `Expect: 100-continue` answered here as
/// Envoy does, and `Connection: close` on every response once the proxy drains (an idle connection closes
/// at once). Unlike NIO's `HTTPServerPipelineHandler`, it keeps reading while a response is in flight when
/// nothing is pipelined: pausing around every request cost two `epoll_ctl` calls per request.
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
    /// Parts of requests that arrived while a response was in flight, in order.
    private var pipelined = CircularBuffer<HTTPServerRequestPart>()
    /// A read the channel asked for while requests waited.
    private var readPending = false
    private var context: ChannelHandlerContext?
    /// Envoy's `idle_timeout`: the connection closes once it has been this long without a request. One
    /// lazily re-armed timer, rather than NIO's IdleStateHandler (a promise per write).
    private let idleTimeout: TimeAmount?
    private var idleSince = NIODeadline.now()
    private var idleTimer: Scheduled<Void>?
    /// Set when the proxy drains: the next response says `connection: close` and the connection ends.
    var draining = false

    init(secure: Bool, limits: RequestLimits, idleTimeout: TimeAmount? = nil) {
        self.secure = secure
        self.limits = limits
        self.idleTimeout = idleTimeout
    }

    /// `HTTP/1.0` or `HTTP/1.1`, for Istio's `request_protocol`.
    var requestProtocol: String { version == .http1_0 ? "HTTP/1.0" : "HTTP/1.1" }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if !pipelined.isEmpty {
            pipelined.append(part)
        } else if case .head = part, inFlight {
            // The next request, before this response ended: it waits, and so does the socket.
            pipelined.append(part)
        } else {
            process(part, context: context)
        }
    }

    private func process(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
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

    func read(context: ChannelHandlerContext) {
        if pipelined.isEmpty { context.read() } else { readPending = true }
    }

    /// After a response ended: the pipelined request that waited goes on (up to the head of the one after
    /// it, which waits for its own turn), on the next turn of the loop, outside the write that ended the
    /// previous exchange; reading resumes once nothing waits.
    private func resumePipelined(context: ChannelHandlerContext) {
        guard !pipelined.isEmpty else { return }
        context.eventLoop.assumeIsolated().execute { [self] in
            guard self.context != nil else { return }
            while let part = pipelined.first {
                if case .head = part, inFlight { break }
                pipelined.removeFirst()
                process(part, context: context)
            }
            context.fireChannelReadComplete()
            if pipelined.isEmpty, readPending {
                readPending = false
                context.read()
            }
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        idleSince = context.eventLoop.now
        if let idleTimeout { closeWhenIdle(after: idleTimeout, context: context) }
    }

    private func closeWhenIdle(after delay: TimeAmount, context: ChannelHandlerContext) {
        guard let idleTimeout else { return }
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            idleTimer = nil
            guard self.context != nil else { return }
            if inFlight || !pipelined.isEmpty { return closeWhenIdle(after: idleTimeout, context: context) }
            let idle = context.eventLoop.now - idleSince
            if idle >= idleTimeout { context.close(promise: nil) } else { closeWhenIdle(after: idleTimeout - idle, context: context) }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
        self.context = nil
        // Leaving for an upgrade: nothing was pipelined behind it; a read held back goes on.
        if readPending { context.read() }
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
            idleSince = context.eventLoop.now
            let closing = !keepAlive
            let written = promise ?? (closing ? context.eventLoop.makePromise() : nil)
            context.write(wrapOutboundOut(.end(trailers.map(HTTPHeaders.init))), promise: written)
            if closing, let written {
                pipelined.removeAll()
                written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            } else {
                resumePipelined(context: context)
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is ChannelShouldQuiesceEvent:
            // Draining: the response in flight says `connection: close`; an idle connection closes now.
            draining = true
            if !inFlight && pipelined.isEmpty {
                context.close(promise: nil)
                return
            }
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
