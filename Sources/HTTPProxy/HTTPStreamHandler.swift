import Authorization
import HTTPTypes
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Routing

/// One downstream stream, Envoy's active stream with its router: routes each request by the table in
/// force when its headers arrive, picks the cluster's endpoint, sends the request on a pooled upstream
/// stream, and relays the response back, part by part, with backpressure both ways. An HTTP/2 stream
/// carries one request; an HTTP/1.1 connection carries them one after the other through the same handler.
/// Local replies (no route, no cluster, no healthy upstream, connect failure, timeout) carry Envoy's
/// status and response flag. A route's mirror policies get fire-and-forget copies (``ShadowRequest``).
final class HTTPStreamHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private enum State {
        /// Between requests.
        case idle
        /// Held by an HTTP filter (a fault's delay). Request parts wait in `heldParts`.
        case filtering
        /// Routed; the upstream stream is being had. Request parts wait here.
        case connecting(pending: [HTTPRequestPart])
        case forwarding(UpstreamStream)
        /// An attempt failed and the route's retry policy allows another, after this back-off.
        case backingOff(Scheduled<Void>)
        /// Answered without the upstream (or it failed): the rest of the request is read and dropped.
        case answered
    }

    private let connection: HTTPConnection
    /// `HTTP/2`, or the HTTP/1 adapter's version of the current request.
    private let requestProtocol: () -> String
    private var context: ChannelHandlerContext?
    private var state = State.idle
    private var record: HTTPStreamRecord?
    private var forwarding: Forwarding?
    private var cluster: (any UpstreamCluster)?
    private var endpoint: UpstreamEndpoint?
    private var requestEnded = false
    private var responseStarted = false
    private var responseEnded = false
    private var timeout: Scheduled<Void>?
    /// The connection manager's `request_timeout`: the whole request must arrive by then (disarmed by its
    /// end or by the response's start).
    private var requestTimer: Scheduled<Void>?
    /// The route's retries for this request (nil: none), and what each attempt sends and where.
    private var retry: RetryState?
    private var upstreamRequest: HTTPRequest?
    private var upstreamVersion = UpstreamVersion.http1
    private var countsAttempts = false
    private var perTryTimer: Scheduled<Void>?
    /// The attempt's upstream stream while it waits for a connection, to give up its place if the
    /// request ends first.
    private var awaited: (stream: EventLoopFuture<UpstreamStream>, alpn: [String]?)?
    /// What this request holds of its cluster's circuit breakers: an active request (per attempt) and a
    /// retry (during its back-off).
    private var holdsRequest = false
    private var holdsRetry = false
    /// The request's hash by the route's hash policies, and a cookie made for it (`Set-Cookie`).
    private var requestHash: HashPolicy.RequestHash?
    /// Envoy's stream_idle_timeout: re-armed from `lastActivity` when it fires early, rather than
    /// rescheduled on every body part.
    private var idleTimer: Scheduled<Void>?
    private var lastActivity = NIODeadline.now()
    private var readsHeld = false
    private var readPending = false
    /// The upgrade this HTTP/1.1 request asks for (`websocket`), when the connection manager enables it.
    private var upgrade: String?
    /// The upstream accepted the upgrade (101): once its response head has ended, bytes flow as they come.
    private var upgraded = false

    /// Whether this handler checks the request header limits itself: HTTP/2's streams; HTTP/1's
    /// adapter checks them before a request gets here (and closes the connection, as Envoy does).
    private let checksHeaderLimits: Bool

    /// The current request's HTTP filters before the router (this handler); none for most requests.
    private var filters: [any HTTPFilter] = []
    /// The request the filters are deciding on, while one holds it, and the filter to ask next.
    private var filtered: (request: HTTPRequest, decision: RouteDecision?, snapshot: any HTTPRoutingSnapshot)?
    private var nextFilter = 0
    /// How many filters, from the first, let the request on: they see its response's headers.
    private var passedFilters = 0
    /// Request parts that came while a filter held the request; they follow its head upstream.
    private var heldParts: [HTTPRequestPart] = []
    /// What the current request's filters left for later ones (Envoy's dynamic metadata).
    var metadata = DynamicMetadata()
    /// The copies of the current request sent to its route's mirror clusters (none for most requests).
    private var shadows: [ShadowRequest] = []

    init(connection: HTTPConnection, checksHeaderLimits: Bool, requestProtocol: @escaping () -> String) {
        self.connection = connection
        self.checksHeaderLimits = checksHeaderLimits
        self.requestProtocol = requestProtocol
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
        self.context = nil
    }

    // MARK: Downstream

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        lastActivity = context.eventLoop.now
        switch part {
        case .head(let request):
            // One timer for the connection's requests one after the other (HTTP/1.1): armed when none runs.
            if idleTimer == nil { armIdleTimer(context: context) }
            if let limit = connection.config.requestTimeout {
                requestTimer = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(limit)) { [self] in
                    requestTimer = nil
                    // Disarmed once the response began, as in Envoy.
                    if !responseStarted { expire(.requestTimeout, body: "request timeout", flag: []) }
                }
            }
            begin(request, context: context)
        case .body(let body):
            record?.requestBodyBytes += body.readableBytes
            pass(part)
        case .end:
            requestEnded = true
            requestTimer?.cancel()
            requestTimer = nil
            record?.requestEnd = lastActivity
            pass(part)
            if case .answered = state { streamEnded() } else { finishIfDone() }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .forwarding(let upstream) = state { upstream.channel.flush() }
        for shadow in shadows { shadow.flush() }
        context.fireChannelReadComplete()
    }

    /// A request part, to the upstream or to wait for it.
    private func pass(_ part: HTTPRequestPart) {
        retry?.keep(part)
        for shadow in shadows { shadow.send(part) }
        switch state {
        case .connecting(var pending):
            pending.append(part)
            state = .connecting(pending: pending)
        case .filtering:
            heldParts.append(part)
            // The filter holding the request may be waiting for its body (ext_authz's with_request_body).
            if nextFilter > 0, nextFilter <= filters.count { filters[nextFilter - 1].decodeHeldPart(part, stream: self) }
        case .forwarding(let upstream):
            upstream.channel.write(part, promise: nil)
            if !upstream.channel.isWritable { holdReads() }
        case .idle, .answered, .backingOff:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if requestEnded && responseEnded { finishIfDone() }
        switch state {
        case .connecting, .forwarding, .backingOff, .filtering:
            record?.flags.insert(.downstreamConnectionTermination)
            if case .forwarding(let upstream) = state { upstream.finish(reusable: false) }
            if case .backingOff(let next) = state { next.cancel() }
            releaseEndpoint()
            state = .answered
            streamEnded()
        case .answered:
            // Answered before the request ended: the record is complete now.
            streamEnded()
        case .idle:
            break
        }
        endShadows()
        idleTimer?.cancel()
        idleTimer = nil
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .forwarding(let upstream) = state {
            if context.channel.isWritable { upstream.forwarder.resumeReading() } else { upstream.forwarder.holdReading() }
        }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if readsHeld { readPending = true } else { context.read() }
    }

    private func holdReads() { readsHeld = true }

    private func resumeReads() {
        readsHeld = false
        if readPending, let context {
            readPending = false
            context.read()
        }
    }

    // MARK: Routing

    private func begin(_ request: HTTPRequest, context: ChannelHandlerContext) {
        var request = request
        passedFilters = 0
        ForwardedHeaders.removeInternalHeaders(&request, config: connection.config, downstream: connection.downstream)
        ForwardedHeaders.assignRequestID(&request, config: connection.config)
        requestEnded = false
        responseStarted = false
        responseEnded = false
        upgrade = nil
        upgraded = false
        forwarding = nil
        cluster = nil
        endpoint = nil
        retry = nil
        upstreamRequest = nil
        requestHash = nil
        if !metadata.isEmpty { metadata = DynamicMetadata() }
        var record = HTTPStreamRecord(start: .now(), requestProtocol: requestProtocol())
        record.method = request.method
        record.authority = request.authority
        record.path = request.path
        record.userAgent = request.headerFields[.userAgent]
        record.requestID = request.headerFields[ForwardedHeaders.requestID]
        if connection.config.recordsForAccessLog { record.request = request }
        self.record = record
        connection.observer?.streamStarted()
        let config = connection.config
        if checksHeaderLimits, let refusal = RequestLimits(maxHeaderBytes: config.maxRequestHeadersBytes, maxHeaderCount: config.maxHeadersCount)
            .refusal(for: request.headerFields) {
            return answer(.init(code: Int(refusal.status.code)), body: refusal.body, flags: [])
        }
        if let asked = request.headerFields[.upgrade], requestProtocol() != "HTTP/2",
           config.upgradeTypes.contains(asked.lowercased()) {
            upgrade = asked
        }
        let snapshot = connection.routing()
        var random = RequestRandomness()
        let decision = snapshot.routeTable(for: config)?.route(request, randomValue: random.next())
        filters = HTTPFilterRegistry.makeFilters(config.filters, route: decision, observer: connection.observer)
        if filters.isEmpty { return route(request, decision: decision, snapshot: snapshot, context: context) }
        // The filters see the route first, as Envoy's do; the router (below) acts on it last.
        filtered = (request, decision, snapshot)
        nextFilter = 0
        runFilters()
    }

    /// Asks the filters from `nextFilter` on, then the router, unless one holds or answers the request.
    private func runFilters() {
        guard let (held, decision, snapshot) = filtered, let context else { return }
        var request = held
        while nextFilter < filters.count {
            passedFilters = nextFilter
            let filter = filters[nextFilter]
            nextFilter += 1
            switch filter.decodeHeaders(&request, route: decision, stream: self) {
            case .proceed: continue
            case .hold:
                filtered = (request, decision, snapshot)
                state = .filtering
                return
            case .reply(let reply):
                filtered = nil
                return localReply(reply, to: request)
            }
        }
        filtered = nil
        passedFilters = filters.count
        route(request, decision: decision, snapshot: snapshot, context: context)
    }

    /// The response's headers through the filters that let the request on, last first.
    private func encodeHeaders(_ response: inout HTTPResponse) {
        guard passedFilters > 0 else { return }
        for index in (0..<min(passedFilters, filters.count)).reversed() { filters[index].encodeHeaders(&response) }
    }

    /// The router: forwards the request by its route, or answers it (no route, a direct response, a redirect).
    private func route(_ request: HTTPRequest, decision: RouteDecision?, snapshot: any HTTPRoutingSnapshot, context: ChannelHandlerContext) {
        guard let decision else {
            return answer(.notFound, body: "", flags: .noRoute)
        }
        self.record?.routeName = decision.routeName
        switch decision.action {
        case .directResponse(let direct):
            var fields = HTTPFields()
            direct.responseHeaders.apply(to: &fields)
            return answer(direct.status, body: String(decoding: direct.body, as: UTF8.self), flags: [], headers: fields)
        case .redirect(let redirect):
            var fields = HTTPFields()
            fields[.location] = redirect.location(for: request)
            redirect.responseHeaders.apply(to: &fields)
            return answer(redirect.status, body: "", flags: [], headers: fields)
        case .forward(let forwarding):
            forward(request, decision: decision, forwarding: forwarding, snapshot: snapshot, context: context)
        }
    }

    private func forward(_ request: HTTPRequest, decision: RouteDecision, forwarding: Forwarding,
                         snapshot: any HTTPRoutingSnapshot, context: ChannelHandlerContext) {
        self.forwarding = forwarding
        record?.cluster = forwarding.cluster
        guard let cluster = snapshot.cluster(named: forwarding.cluster) else {
            return answer(.serviceUnavailable, body: "no cluster \(forwarding.cluster)", flags: .noClusterFound)
        }
        if !forwarding.hashPolicies.isEmpty {
            let source = connection.downstream.remoteAddress
            requestHash = HashPolicy.hash(forwarding.hashPolicies, request: request, sourceIP: source?.ipAddress,
                                          sourceAddress: source.map { "\($0.ipAddress ?? ""):\($0.port ?? 0)" })
        }
        let endpoint: UpstreamEndpoint
        switch cluster.chooseEndpoint(for: connection.downstream, hash: requestHash?.value) {
        case .success(let chosen): endpoint = chosen
        case .failure(.noHealthyUpstream): return answer(.serviceUnavailable, body: "no healthy upstream", flags: .noHealthyUpstream)
        case .failure(.overflow): return answerOverflow()
        }
        self.cluster = cluster
        self.endpoint = endpoint
        record?.upstream = cluster
        record?.upstreamHost = endpoint.address
        var upstreamRequest = request
        ForwardedHeaders.prepareRequest(&upstreamRequest, config: connection.config, downstream: connection.downstream,
                                        decision: decision, forwarding: forwarding, upgrade: upgrade)
        if connection.config.recordsForAccessLog { record?.request?.headerFields = upstreamRequest.headerFields }
        var version = httpVersion(for: cluster)
        // An upgrade is HTTP/1.1's, on a connection of its own.
        if upgrade != nil { version = .http1 }
        if let limit = forwarding.timeout(for: request) {
            timeout = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(limit)) { [self] in timedOut() }
        }
        if let policy = forwarding.retryPolicy, policy.retries > 0, upgrade == nil {
            retry = RetryState(policy: policy, method: request.method)
            // Parts that came while a filter held the request are kept for retries as later ones are.
            for part in heldParts { retry?.keep(part) }
        }
        self.upstreamRequest = upstreamRequest
        upstreamVersion = version
        countsAttempts = decision.includesRequestAttemptCount
        if !forwarding.mirrors.isEmpty, upgrade == nil {
            startShadows(of: upstreamRequest, forwarding: forwarding, snapshot: snapshot, context: context)
        }
        sendAttempt(context: context)
    }

    /// Sends the request (again, on a retry) to the endpoint chosen for this attempt: on a kept-alive
    /// HTTP/1.1 connection at once, else once a connection or stream is had. A retry sends the body parts
    /// kept so far; those still to come follow as they arrive.
    private func sendAttempt(context: ChannelHandlerContext) {
        guard let cluster, let endpoint, var head = upstreamRequest else { return }
        guard cluster.circuitBreakers.tryOpen(.requests) else { return answerOverflow() }
        holdsRequest = true
        let attempt = retry?.attempts ?? 1
        if countsAttempts { head.headerFields[ForwardedHeaders.attemptCount] = String(attempt) }
        // A retry sends the parts kept; the first attempt, those that came while a filter held the request.
        let replay = attempt > 1 ? retry?.keptParts ?? [] : heldParts
        heldParts = []
        if let perTry = retry?.policy.perTryTimeout {
            perTryTimer = context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(perTry)) { [self] in perTryTimedOut() }
        }
        let version = upstreamVersion
        let alpn = version == .http2 ? connection.upstreamALPN.http2 : connection.upstreamALPN.http1
        if let idle = connection.pools.idleStream(to: endpoint, of: cluster, version: version, alpn: alpn) {
            // A kept-alive HTTP/1.1 connection: the request goes on now, without a future.
            state = .forwarding(idle)
            idle.attach(self)
            idle.channel.write(HTTPRequestPart.head(head), promise: nil)
            for part in replay { idle.channel.write(part, promise: nil) }
            if !replay.isEmpty { idle.channel.flush() }
            return
        }
        state = .connecting(pending: [.head(head)] + replay)
        let stream = connection.pools.stream(to: endpoint, of: cluster, version: version, alpn: alpn)
        awaited = (stream, alpn)
        stream.assumeIsolated().whenComplete { [self] result in
            if awaited?.stream === stream { awaited = nil }
            guard case .connecting(let pending) = state, self.endpoint == endpoint else {
                // Answered meanwhile (timeout), the client left, or a later attempt runs: not needed.
                if case .success(let upstream) = result { upstream.finish(reusable: true) }
                return
            }
            switch result {
            case .success(let upstream):
                state = .forwarding(upstream)
                if connection.config.recordsForAccessLog { record?.upstreamLocalAddress = upstream.channel.localAddress }
                upstream.attach(self)
                for part in pending { upstream.channel.write(part, promise: nil) }
                upstream.channel.flush()
                if !upstream.channel.isWritable { holdReads() }
            case .failure(UpstreamUnavailable.overflow):
                // Too many requests wait for the cluster's connections: never retried, as in Envoy.
                answerOverflow()
            case .failure:
                report(.connectFailure)
                if retryIfAllowed(after: .connectFailure, context: context) { return }
                answer(.serviceUnavailable,
                       body: "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                       flags: .upstreamConnectionFailure)
            }
        }
    }

    /// The HTTP version `cluster` is spoken to for this request: its own, or the downstream's.
    private func httpVersion(for cluster: any UpstreamCluster) -> UpstreamVersion {
        switch cluster.upstreamProtocol {
        case .http1: .http1
        case .http2: .http2
        case .downstream: requestProtocol() == "HTTP/2" ? .http2 : .http1
        }
    }

    // MARK: Mirrors

    /// Envoy's shadowing: for each of the route's mirror policies whose fraction this request falls in, a
    /// copy of `head` (the upstream request's) to an endpoint of the mirror cluster, with the body parts
    /// so far; later parts follow from ``pass(_:)``. A mirror cluster that is unknown, has no endpoint or
    /// has its request circuit breaker open gets no copy; the main request does not notice.
    private func startShadows(of head: HTTPRequest, forwarding: Forwarding, snapshot: any HTTPRoutingSnapshot,
                              context: ChannelHandlerContext) {
        var random = RequestRandomness()
        for policy in forwarding.mirrors where policy.mirrors(random.next()) {
            guard let cluster = snapshot.cluster(named: policy.cluster),
                  case .success(let endpoint) = cluster.chooseEndpoint(for: connection.downstream, hash: nil) else { continue }
            guard cluster.circuitBreakers.tryOpen(.requests) else {
                cluster.requestEnded(at: endpoint)
                continue
            }
            var copy = head
            if let authority = copy.authority { copy.authority = policy.shadowAuthority(authority) }
            let version = httpVersion(for: cluster)
            let shadow = ShadowRequest(copy, to: endpoint, of: cluster, version: version,
                                       alpn: version == .http2 ? connection.upstreamALPN.http2 : connection.upstreamALPN.http1,
                                       pools: connection.pools, observer: connection.observer,
                                       timeout: forwarding.timeout(for: head), on: context.eventLoop)
            for part in heldParts { shadow.send(part) }
            shadow.flush()
            shadows.append(shadow)
        }
    }

    /// The request is over for this handler: copies that did not get all of it are abandoned.
    private func endShadows() {
        for shadow in shadows { shadow.downstreamEnded() }
        shadows = []
    }

    // MARK: Retries

    /// After `failure` of the current attempt: another one, after the policy's back-off, if the policy
    /// retries this failure, attempts remain and the request was kept. Returns whether one follows; if
    /// the attempts ran out, the request is marked `URX`.
    private func retryIfAllowed(after failure: RetryPolicy.Failure, context: ChannelHandlerContext) -> Bool {
        guard var retry, !responseStarted, let endpoint else { return false }
        switch retry.verdict(after: failure) {
        case .no: return false
        case .limitReached:
            record?.flags.insert(.upstreamRetryLimitExceeded)
            return false
        case .retry: break
        }
        // max_retries: a retry over it is not made (`UO`), and the failure goes to the client as it is.
        guard cluster?.circuitBreakers.tryOpen(.retries) == true else {
            record?.flags.insert(.upstreamOverflow)
            return false
        }
        holdsRetry = true
        if case .forwarding(let upstream) = state { upstream.finish(reusable: false) }
        retry.attemptFailed(at: endpoint)
        self.retry = retry
        releaseAttempt()
        // Released: a client that leaves during the back-off must not release it a second time.
        self.endpoint = nil
        record?.upstreamRetries += 1
        var random = RequestRandomness()
        let delay = retry.policy.backOff(before: retry.attempts - 1, randomValue: random.next())
        state = .backingOff(context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(delay)) { [self] in
            nextAttempt(context: context)
        })
        return true
    }

    /// The retry's endpoint (another host than those tried, under `previous_hosts`, within
    /// `host_selection_retry_max_attempts` choices; of another priority than those tried, under
    /// `previous_priorities`), then the request again.
    private func nextAttempt(context: ChannelHandlerContext) {
        guard case .backingOff = state, let cluster, var retry else { return }
        releaseRetry()
        var chosen: UpstreamEndpoint?
        for selection in 0..<retry.policy.hostSelectionAttempts {
            if let previous = chosen { cluster.requestEnded(at: previous) }
            let hash = requestHash?.value.map { HashPolicy.rehash($0, try: retry.attempts - 1 + selection) }
            let choice: Result<UpstreamEndpoint, UpstreamUnavailable>
            if var priorities = retry.priorities {
                choice = cluster.chooseEndpoint(for: connection.downstream, hash: hash, priorities: &priorities)
                retry.priorities = priorities
                self.retry = retry
            } else {
                choice = cluster.chooseEndpoint(for: connection.downstream, hash: hash)
            }
            switch choice {
            case .success(let endpoint): chosen = endpoint
            case .failure(.noHealthyUpstream):
                return answer(.serviceUnavailable, body: "no healthy upstream", flags: .noHealthyUpstream)
            case .failure(.overflow): return answerOverflow()
            }
            if let chosen, !retry.avoids(chosen) { break }
        }
        guard let chosen else { return }
        endpoint = chosen
        record?.upstreamHost = chosen.address
        sendAttempt(context: context)
    }

    /// The attempt's `per_try_timeout` passed before its response began: another attempt, or 504 `UT`.
    private func perTryTimedOut() {
        perTryTimer = nil
        guard !responseStarted, let context else { return }
        report(.timeout)
        if retryIfAllowed(after: .perTryTimeout, context: context) { return }
        expire(.gatewayTimeout, body: "upstream request timeout", flag: .upstreamRequestTimeout)
    }

    private func armIdleTimer(context: ChannelHandlerContext, after delay: TimeAmount? = nil) {
        guard let limit = connection.config.streamIdleTimeout.map({ TimeAmount($0) }) else { return }
        idleTimer?.cancel()
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: delay ?? limit) { [self] in
            idleTimer = nil
            // Between requests: the next one arms it again.
            if case .idle = state { return }
            let idle = context.eventLoop.now - lastActivity
            if idle < limit { return armIdleTimer(context: context, after: limit - idle) }
            streamIdle()
        }
    }

    /// Nothing came or went for stream_idle_timeout: 408 before the response began, a reset after.
    private func streamIdle() {
        if case .answered = state { return resetDownstream() }  // the rest of the request never came
        expire(.requestTimeout, body: "stream timeout", flag: .streamIdleTimeout)
    }

    /// The route's timeout passed: 504 before the response began, a reset after.
    private func timedOut() {
        timeout = nil
        report(.timeout)
        expire(.gatewayTimeout, body: "upstream request timeout", flag: .upstreamRequestTimeout)
    }

    /// Ends a stream in flight that ran out of time: with `status` if nothing was answered yet, else by
    /// resetting the downstream; either way with `flag`.
    private func expire(_ status: HTTPResponse.Status, body: String, flag: ResponseFlags) {
        switch state {
        case .connecting, .forwarding, .backingOff, .filtering:
            if case .forwarding(let upstream) = state { upstream.finish(reusable: false) }
            if case .backingOff(let next) = state { next.cancel() }
            if responseStarted {
                record?.flags.insert(flag)
                resetDownstream()
            } else {
                answer(status, body: body, flags: flag)
            }
        case .idle, .answered:
            break
        }
    }

    // MARK: Local replies

    /// Answers the request here (Envoy's local reply), then reads and drops the rest of it.
    private func answer(_ status: HTTPResponse.Status, body: String, flags: ResponseFlags, headers: HTTPFields = HTTPFields()) {
        guard let context else { return }
        if case .forwarding(let upstream) = state { upstream.finish(reusable: false) }
        releaseEndpoint()
        state = .answered
        record?.flags.formUnion(flags)
        record?.responseCode = status.code
        var response = HTTPResponse(status: status, headerFields: headers)
        response.headerFields[ForwardedHeaders.contentLength] = "\(body.utf8.count)"
        if !body.isEmpty, response.headerFields[ForwardedHeaders.contentType] == nil {
            response.headerFields[ForwardedHeaders.contentType] = "text/plain"
        }
        response.headerFields[ForwardedHeaders.server] = connection.config.serverName
        encodeHeaders(&response)
        if connection.config.recordsForAccessLog { record?.responseHeaders = response.headerFields }
        context.write(wrapOutboundOut(.head(response)), promise: nil)
        if !body.isEmpty {
            record?.responseBodyBytes += body.utf8.count
            context.write(wrapOutboundOut(.body(context.channel.allocator.buffer(string: body))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        responseStarted = true
        responseEnded = true
        resumeReads()
        if requestEnded { streamEnded() }
    }

    /// A circuit breaker of the cluster is open: Envoy's 503 `UO`, with `x-envoy-overloaded`.
    private func answerOverflow() {
        var headers = HTTPFields()
        headers[ForwardedHeaders.overloaded] = "true"
        answer(.serviceUnavailable, body: "upstream connect error or disconnect/reset before headers. reset reason: overflow",
               flags: .upstreamOverflow, headers: headers)
    }

    /// A filter's local reply: as gRPC (HTTP 200, `grpc-status`) when it carries a gRPC status and the
    /// request is gRPC, as Envoy's local replies are; else with its HTTP status and body.
    private func localReply(_ reply: HTTPLocalReply, to request: HTTPRequest) {
        guard let grpcStatus = reply.grpcStatus, request.headerFields[.contentType]?.hasPrefix("application/grpc") == true,
              let context else {
            return answer(reply.status, body: reply.body, flags: reply.flags, headers: reply.headers)
        }
        releaseEndpoint()
        state = .answered
        record?.flags.formUnion(reply.flags)
        record?.responseCode = 200
        record?.grpcStatus = String(grpcStatus)
        var response = HTTPResponse(status: .ok)
        response.headerFields[ForwardedHeaders.contentType] = "application/grpc"
        response.headerFields[ForwardedHeaders.server] = connection.config.serverName
        encodeHeaders(&response)
        var status = HTTPFields()
        status[RequestHeaderNames.grpcStatus] = String(grpcStatus)
        status[RequestHeaderNames.grpcMessage] = reply.body
        if requestProtocol() == "HTTP/2" {
            // Headers, then the status as trailers: the HTTP/2 codec ends a stream with a DATA or a
            // trailers frame, so gRPC's one-frame trailers-only form is not available.
            if connection.config.recordsForAccessLog { record?.responseHeaders = response.headerFields; record?.responseTrailers = status }
            context.write(wrapOutboundOut(.head(response)), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(status)), promise: nil)
        } else {
            // HTTP/1.1 has no trailers without chunking: trailers-only, the status in the headers.
            response.headerFields.append(contentsOf: status)
            response.headerFields[ForwardedHeaders.contentLength] = "0"
            if connection.config.recordsForAccessLog { record?.responseHeaders = response.headerFields }
            context.write(wrapOutboundOut(.head(response)), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
        responseStarted = true
        responseEnded = true
        resumeReads()
        if requestEnded { streamEnded() }
    }

    /// After the response began: the downstream cannot be told by status, so its stream (HTTP/2) or
    /// connection (HTTP/1.1) is reset.
    private func resetDownstream() {
        state = .answered
        releaseEndpoint()
        streamEnded()
        context?.close(promise: nil)
    }

    // MARK: The end

    private func finishIfDone() {
        guard requestEnded, responseEnded, case .forwarding(let upstream) = state else { return }
        upstream.finish(reusable: !upstream.forwarder.closesAfterResponse)
        state = .answered
        releaseEndpoint()
        streamEnded()
    }

    private func releaseEndpoint() {
        timeout?.cancel()
        timeout = nil
        requestTimer?.cancel()
        requestTimer = nil
        releaseAttempt()
        releaseRetry()
        endpoint = nil
    }

    /// How the current attempt went, for the cluster's outlier detection (none between attempts).
    private func report(_ outcome: UpstreamOutcome) {
        if let cluster, let endpoint { cluster.record(outcome, at: endpoint) }
    }

    /// The current attempt is over: its endpoint's request count, its place among the cluster's
    /// requests (and among those waiting for a connection), and its per-try timer.
    private func releaseAttempt() {
        perTryTimer?.cancel()
        perTryTimer = nil
        if let cluster, let endpoint {
            if let awaited {
                connection.pools.abandon(awaited.stream, to: endpoint, of: cluster, alpn: awaited.alpn)
                self.awaited = nil
            }
            cluster.requestEnded(at: endpoint)
        }
        if holdsRequest {
            holdsRequest = false
            cluster?.circuitBreakers.close(.requests)
        }
    }

    /// The retry's back-off is over (or the request ended during it).
    private func releaseRetry() {
        guard holdsRetry else { return }
        holdsRetry = false
        cluster?.circuitBreakers.close(.retries)
    }

    /// The record goes to the observer, and the handler waits for the next request.
    private func streamEnded() {
        guard var record else { return }
        self.record = nil
        for filter in filters { filter.requestEnded() }
        filters = []
        filtered = nil
        heldParts = []
        endShadows()
        record.end = .now()
        state = .idle
        connection.observer?.streamEnded(record, on: connection.downstream, manager: connection.config)
    }
}

// MARK: Upstream

extension HTTPStreamHandler: UpstreamResponseReceiver {
    func upstreamResponse(_ part: HTTPResponsePart) {
        guard let context, case .forwarding(let upstream) = state else { return }
        lastActivity = context.eventLoop.now
        switch part {
        case .head(var response):
            if response.status.kind != .informational || response.status.code == 101 { report(.response(status: response.status.code)) }
            if response.status.code == 101, let upgrade {
                // The upstream switches protocols: the 101 goes down with its upgrade headers, and once its
                // head has ended the two connections carry bytes.
                upgraded = true
                responseStarted = true
                record?.responseCode = 101
                record?.respondedByUpstream = true
                ForwardedHeaders.prepareResponse(&response, config: connection.config, forwarding: forwarding)
                response.headerFields[.connection] = "upgrade"
                response.headerFields[.upgrade] = upgrade
                encodeHeaders(&response)
                context.writeAndFlush(wrapOutboundOut(.head(response)), promise: nil)
                return
            }
            // Envoy answered 100-continue itself; other 1xx are not relayed either.
            if response.status.kind == .informational { return }
            if retry != nil {
                let grpc = response.headerFields[RequestHeaderNames.grpcStatus].flatMap { Int($0) }
                if retryIfAllowed(after: .response(status: response.status.code, grpcStatus: grpc), context: context) { return }
            }
            perTryTimer?.cancel()
            perTryTimer = nil
            responseStarted = true
            record?.responseCode = response.status.code
            record?.respondedByUpstream = true
            record?.upstreamResponseStart = lastActivity
            if let grpc = response.headerFields[RequestHeaderNames.grpcStatus] { record?.grpcStatus = grpc }
            ForwardedHeaders.prepareResponse(&response, config: connection.config, forwarding: forwarding)
            if let cookie = requestHash?.setCookie { response.headerFields.append(HTTPField(name: .setCookie, value: cookie)) }
            encodeHeaders(&response)
            if connection.config.recordsForAccessLog { record?.responseHeaders = response.headerFields }
            context.write(wrapOutboundOut(.head(response)), promise: nil)
        case .body(let body):
            record?.responseBodyBytes += body.readableBytes
            context.write(wrapOutboundOut(.body(body)), promise: nil)
            if !context.channel.isWritable { upstream.forwarder.holdReading() }
        case .end(let trailers):
            if upgraded { return tunnel(context: context, upstream: upstream) }
            if let grpc = trailers?[RequestHeaderNames.grpcStatus] { record?.grpcStatus = grpc }
            if connection.config.recordsForAccessLog { record?.responseTrailers = trailers }
            // Set first: on HTTP/2, writing the end can close the stream (channelInactive) before it returns.
            responseEnded = true
            context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
            guard case .forwarding = state else { return }
            if requestEnded {
                finishIfDone()
            } else {
                // The upstream answered before the request was all sent: that connection cannot be reused,
                // and the rest of the request is dropped.
                upstream.finish(reusable: false)
                state = .answered
                releaseEndpoint()
            }
        }
    }

    /// After a 101: both connections lose their HTTP handlers and are joined by an ``UpgradeTunnel``; what
    /// either HTTP decoder read past the upgrade goes on as bytes. The request is recorded now (101). Done
    /// on the next turn of the loop, outside the upstream decoder's read.
    private func tunnel(context: ChannelHandlerContext, upstream: UpstreamStream) {
        upstream.forwarder.receiver = nil
        releaseEndpoint()
        state = .answered
        streamEnded()
        context.eventLoop.assumeIsolated().execute { [self] in
            do {
                try join(context: context, upstream: upstream)
            } catch {
                upstream.channel.close(promise: nil)
                context.close(promise: nil)
            }
        }
    }

    private func join(context: ChannelHandlerContext, upstream: UpstreamStream) throws {
        let ends = UpgradeTunnel.pair()
        let down = context.pipeline.syncOperations
        let up = upstream.channel.pipeline.syncOperations
        let downDecoder = try down.context(handlerType: ByteToMessageHandler<HTTPRequestDecoder>.self)
        let upDecoder = try up.context(handlerType: ByteToMessageHandler<HTTPResponseDecoder>.self)
        // Both ends in place before any byte can move; then every HTTP handler out, the decoders last, so
        // what they hold past the upgrade reaches the other side as bytes.
        try down.addHandler(ends.downstream, position: .after(downDecoder.handler))
        try up.addHandler(ends.upstream)
        var leaving = [try down.context(handlerType: HTTPResponseEncoder.self), try down.context(handlerType: HTTP1ServerAdapter.self)]
        // No more request heads to time: the tunnel's bytes are not one.
        if let watcher = try? down.context(handlerType: RequestHeadersTimeout.ByteWatcher.self) { leaving.append(watcher) }
        if let watcher = try? down.context(handlerType: RequestHeadersTimeout.HeadWatcher.self) { leaving.append(watcher) }
        for handler in leaving { down.removeHandler(context: handler, promise: nil) }
        var upLeaving = [try up.context(handlerType: UpstreamResponseForwarder.self), try up.context(handlerType: HTTP1ToHTTPClientCodec.self),
                         try up.context(handlerType: HTTPRequestEncoder.self)]
        if let validator = try? up.context(handlerType: NIOHTTPRequestHeadersValidator.self) { upLeaving.append(validator) }
        for handler in upLeaving { up.removeHandler(context: handler, promise: nil) }
        down.removeHandler(context: context, promise: nil)
        up.removeHandler(context: upDecoder, promise: nil)
        down.removeHandler(context: downDecoder, promise: nil)
    }

    func upstreamReadComplete() {
        context?.flush()
    }

    func upstreamFailed() {
        guard case .forwarding = state else { return }
        report(.reset)
        if let context, retryIfAllowed(after: .reset, context: context) { return }
        if responseStarted {
            record?.flags.insert(.upstreamConnectionTermination)
            resetDownstream()
        } else {
            answer(.serviceUnavailable,
                   body: "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                   flags: .upstreamConnectionTermination)
        }
    }

    func upstreamWritabilityChanged(_ writable: Bool) {
        if writable { resumeReads() } else { holdReads() }
    }
}

enum RequestHeaderNames {
    static let grpcStatus = HTTPField.Name("grpc-status")!
    static let grpcMessage = HTTPField.Name("grpc-message")!
}

// MARK: HTTP filters

extension HTTPStreamHandler: HTTPFilterCallbacks {
    // Filters run from `runFilters`, which runs only while the handler is in its pipeline.
    var eventLoop: any EventLoop { context!.eventLoop }

    func resume() {
        guard case .filtering = state else { return }  // answered meanwhile (stream idle timeout) or gone
        runFilters()
    }

    func resume(_ change: (inout HTTPRequest) -> Void) {
        guard case .filtering = state, filtered != nil else { return }
        change(&filtered!.request)
        runFilters()
    }

    func reply(_ reply: HTTPLocalReply) {
        guard case .filtering = state, let request = filtered?.request else { return }
        filtered = nil
        localReply(reply, to: request)
    }

    func addFlags(_ flags: ResponseFlags) {
        record?.flags.formUnion(flags)
    }

    var downstream: DownstreamConnectionInfo { connection.downstream }

    func setResponseCodeDetails(_ details: String) {
        record?.filterDetails = details
    }

    var protocolName: String { requestProtocol() }

    func upstream(named name: String) -> (cluster: any UpstreamCluster, pools: UpstreamPools)? {
        let snapshot = filtered?.snapshot ?? connection.routing()
        return snapshot.cluster(named: name).map { ($0, connection.pools) }
    }
}
