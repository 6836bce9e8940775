import HTTPTypes
import NIOCore
import NIOHTTPTypes
import Routing

/// A copy of one request sent to a route's mirror cluster (Envoy's shadowing): fire and forget. It gets
/// the upstream request's head (with `-shadow` in its authority) and the body as it arrives; its response
/// is read and dropped, and nothing that happens to it reaches the main request. It is never retried.
///
/// It never holds the client back: parts that come while its connection is being had are kept up to
/// ``bufferLimit`` bytes, and a body part that finds its connection not writable (its write buffer past
/// the high-water mark) ends it. Either way the copy is dropped, not the client slowed. Lives on the
/// downstream's event loop; the pool's future and the forwarder keep it alive.
final class ShadowRequest: UpstreamResponseReceiver {
    private enum State {
        case connecting(EventLoopFuture<UpstreamStream>, pending: [HTTPRequestPart], bytes: Int)
        case forwarding(UpstreamStream)
        case done
    }

    /// Request bytes kept for a copy whose connection is not there yet (Envoy buffers a shadow likewise).
    static let bufferLimit = 1 << 20

    private let cluster: any UpstreamCluster
    private let endpoint: UpstreamEndpoint
    private let pools: UpstreamPools
    private let alpn: [String]?
    private let observer: (any HTTPStreamObserver)?
    private var state: State = .done
    private var requestEnded = false
    private var status = 0
    private var flags: ResponseFlags = []
    private var timer: Scheduled<Void>?

    /// Starts the copy of `head` to `endpoint` of `cluster` (chosen by the caller, the cluster's request
    /// circuit breaker already open for it); `timeout` (the route's) ends it if it is not over by then.
    init(_ head: HTTPRequest, to endpoint: UpstreamEndpoint, of cluster: any UpstreamCluster, version: UpstreamVersion,
         alpn: [String]?, pools: UpstreamPools, observer: (any HTTPStreamObserver)?, timeout: Duration?, on loop: any EventLoop) {
        self.cluster = cluster
        self.endpoint = endpoint
        self.pools = pools
        self.alpn = alpn
        self.observer = observer
        if let timeout {
            timer = loop.assumeIsolated().scheduleTask(in: TimeAmount(timeout)) { [self] in
                timer = nil
                flags.insert(.upstreamRequestTimeout)
                drop()
            }
        }
        if let idle = pools.idleStream(to: endpoint, of: cluster, version: version, alpn: alpn) {
            state = .forwarding(idle)
            idle.attach(self)
            idle.channel.write(HTTPRequestPart.head(head), promise: nil)
            return
        }
        let stream = pools.stream(to: endpoint, of: cluster, version: version, alpn: alpn)
        state = .connecting(stream, pending: [.head(head)], bytes: 0)
        stream.assumeIsolated().whenComplete { [self] result in
            guard case .connecting(_, let pending, _) = state else {
                if case .success(let upstream) = result { upstream.finish(reusable: true) }
                return
            }
            switch result {
            case .success(let upstream):
                state = .forwarding(upstream)
                upstream.attach(self)
                for part in pending { upstream.channel.write(part, promise: nil) }
                upstream.channel.flush()
            case .failure(let error):
                if (error as? UpstreamUnavailable) == .overflow { flags.insert(.upstreamOverflow) } else {
                    flags.insert(.upstreamConnectionFailure)
                    cluster.record(.connectFailure, at: endpoint)
                }
                state = .done
                ended()
            }
        }
    }

    /// The next part of the downstream request, as it arrives.
    func send(_ part: HTTPRequestPart) {
        if case .end = part { requestEnded = true }
        switch state {
        case .connecting(let stream, var pending, var bytes):
            if case .body(let body) = part { bytes += body.readableBytes }
            guard bytes <= Self.bufferLimit else { return drop() }
            pending.append(part)
            state = .connecting(stream, pending: pending, bytes: bytes)
        case .forwarding(let upstream):
            guard upstream.channel.isWritable else { return drop() }
            upstream.channel.write(part, promise: nil)
        case .done:
            break
        }
    }

    /// The downstream read what it had: what was written goes out.
    func flush() {
        if case .forwarding(let upstream) = state { upstream.channel.flush() }
    }

    /// The downstream request will not be complete (its client left): the copy is abandoned.
    func downstreamEnded() {
        if !requestEnded { drop() }
    }

    /// Ends the copy early: its connection closed (or its wait for one given up).
    private func drop() {
        switch state {
        case .connecting(let stream, _, _):
            state = .done
            pools.abandon(stream, to: endpoint, of: cluster, alpn: alpn)
        case .forwarding(let upstream):
            state = .done
            upstream.finish(reusable: false)
        case .done:
            return
        }
        ended()
    }

    /// Counted in its cluster's statistics as any request to it is, and its places released.
    private func ended() {
        timer?.cancel()
        timer = nil
        cluster.requestEnded(at: endpoint)
        cluster.circuitBreakers.close(.requests)
        observer?.shadowEnded(to: cluster, status: status, flags: flags)
    }

    // MARK: The upstream's response, dropped

    func upstreamResponse(_ part: HTTPResponsePart) {
        guard case .forwarding(let upstream) = state else { return }
        switch part {
        case .head(let response):
            guard response.status.kind != .informational else { return }
            status = response.status.code
            cluster.record(.response(status: status), at: endpoint)
        case .body:
            break
        case .end:
            state = .done
            upstream.finish(reusable: requestEnded && !upstream.forwarder.closesAfterResponse)
            ended()
        }
    }

    func upstreamReadComplete() {}

    func upstreamFailed() {
        guard case .forwarding = state else { return }
        state = .done
        if status == 0 { cluster.record(.reset, at: endpoint) }
        flags.insert(.upstreamConnectionTermination)
        ended()
    }

    func upstreamWritabilityChanged(_ writable: Bool) {}
}
