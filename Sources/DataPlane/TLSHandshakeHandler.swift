import NIOCore
import NIOSSL
import NIOTLS

/// Sits behind a `NIOSSLHandler` until the TLS handshake is done and the peer accepted; only then may
/// the connection be relayed. When the handshake completes, the peer certificate's subject alt names
/// are checked against the accepted ones and the peer's verified SPIFFE ID is reported through
/// `accepted`. A failed handshake (an untrusted or missing certificate among the reasons), a refused
/// name, or a handshake that takes longer than `timeout` closes the channel and fails `accepted`,
/// counted in Envoy's `ssl.*` statistics. Plaintext the peer sends right after the handshake is held
/// until ``release()``, when the relay is in place.
final class TLSHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    enum Failure: Error {
        case handshake(any Error)
        /// The certificate verified, but none of its names is accepted.
        case subjectAltName
        case timeout
        case closed
    }

    private enum State {
        case handshaking
        case accepted
        case released
        case failed
    }

    private var state = State.handshaking
    private let subjectAltNames: [SubjectAltNameMatcher]
    private let verifiesPeer: Bool
    private let stats: TLSStats
    private let timeout: TimeAmount
    private let accepted: EventLoopPromise<String?>
    private var context: ChannelHandlerContext?
    private var deadline: Scheduled<Void>?
    private var held: [ByteBuffer] = []
    private var inputClosed = false

    /// `accepted` succeeds with the peer's SPIFFE ID when `verifiesPeer` and the certificate has one.
    init(subjectAltNames: [SubjectAltNameMatcher], verifiesPeer: Bool, stats: TLSStats, timeout: TimeAmount,
         accepted: EventLoopPromise<String?>) {
        self.subjectAltNames = subjectAltNames
        self.verifiesPeer = verifiesPeer
        self.stats = stats
        self.timeout = timeout
        self.accepted = accepted
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in fail(.timeout) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        if state == .handshaking {
            state = .failed
            accepted.fail(Failure.closed)
        }
        self.context = nil
    }

    /// The protocol agreed by ALPN (`h2`, `http/1.1`, Istio's `istio-h2` …), once the handshake is done.
    private(set) var negotiatedProtocol: String?

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted(let negotiated)? = event as? TLSUserEvent {
            negotiatedProtocol = negotiated
            if state == .handshaking { verifyPeer(context: context) }
            return
        }
        if let event = event as? ChannelEvent, event == .inputClosed, state != .released {
            inputClosed = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func verifyPeer(context: ChannelHandlerContext) {
        deadline?.cancel()
        let certificate = (try? context.pipeline.syncOperations.nioSSL_peerCertificate()) ?? nil
        // The names are read once, for the check and for the peer's SPIFFE ID.
        let names = certificate.map(PeerIdentity.subjectAltNames(of:)) ?? []
        guard subjectAltNames.isEmpty || subjectAltNames.contains(where: { $0.matches(names) }) else {
            stats.failedSubjectAltNames.increment()
            fail(.subjectAltName)
            return
        }
        stats.handshakes.increment()
        state = .accepted
        accepted.succeed(verifiesPeer ? PeerIdentity.spiffeID(in: names) : nil)
    }

    private func fail(_ failure: Failure) {
        guard state == .handshaking else { return }
        state = .failed
        deadline?.cancel()
        stats.connectionErrors.increment()
        accepted.fail(failure)
        context?.close(promise: nil)
    }

    /// The connection never got as far as a handshake (its connect failed): `accepted` fails, nothing is counted.
    func abandon() {
        guard state == .handshaking else { return }
        state = .failed
        deadline?.cancel()
        accepted.fail(Failure.closed)
    }

    /// Hands what arrived since the handshake to the handler behind this one (the relay), and leaves.
    func release() {
        guard state == .accepted, let context else { return }
        state = .released
        if !held.isEmpty {
            for buffer in held { context.fireChannelRead(wrapInboundOut(buffer)) }
            held = []
            context.fireChannelReadComplete()
        }
        if inputClosed { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .released: context.fireChannelRead(data)
        case .accepted: held.append(unwrapInboundIn(data))
        case .handshaking, .failed: break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if state == .released { context.fireChannelReadComplete() }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if state == .handshaking {
            fail(.handshake(error))
        } else {
            context.fireErrorCaught(error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(.closed)
        context.fireChannelInactive()
    }
}
