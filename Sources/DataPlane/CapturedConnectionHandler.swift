import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// The first handler of every accepted connection: finds where it was going, picks the route (refusing
/// loops), connects upstream on the same event loop, then hands both channels to a ``RelayHandler`` pair.
///
/// The downstream channel does not read until the upstream is connected; only what NIO reads at once
/// when the client half-closes early is kept, and handed to the relay.
final class CapturedConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// The listener's name: its filter chains are looked up when the connection arrives, so an update
    /// applies to new connections without rebinding.
    private let listener: String
    /// Whether the socket was bound with `IP_TRANSPARENT` (TPROXY): the local address is the destination.
    private let transparent: Bool
    private let runtime: ProxyRuntime
    private let listenerStats: ListenerStats

    init(listener: String, transparent: Bool, stats: ListenerStats, runtime: ProxyRuntime) {
        self.listener = listener
        self.transparent = transparent
        self.runtime = runtime
        self.listenerStats = stats
    }

    func channelActive(context: ChannelHandlerContext) {
        let stats = listenerStats
        let connections = runtime.connections
        let channel = context.channel
        stats.connectionsTotal.increment()
        stats.connectionsActive.increment()
        connections.opened(channel, listener: listener)
        // This handler leaves the pipeline once the relay is up; the close future outlives it.
        channel.closeFuture.whenComplete { _ in
            stats.connectionsActive.decrement()
            connections.closed(channel)
        }
        let local = channel.localAddress?.unmapped
        let destination: EventLoopFuture<SocketAddress?>
        if transparent {
            destination = context.eventLoop.makeSucceededFuture(local)
        } else {
            // Not redirected (a connection made to the listener itself): it was going where it arrived.
            destination = OriginalDestination.redirected(channel).map { Optional($0) }.recover { _ in local }
        }
        context.fireChannelActive()
        // Continue once channelActive has returned: the answers below can complete at once (a local
        // connect often does), and the pipeline is rebuilt then.
        context.eventLoop.execute { [self] in
            destination.whenSuccess { address in
                guard let address else {
                    context.close(promise: nil)
                    return
                }
                self.forward(context: context, to: address)
            }
        }
    }

    /// Bytes that arrived before the relay was in place. autoRead is off until then, but when the
    /// client half-closes early, NIO reads everything up to the end of stream at once.
    private var early: [ByteBuffer] = []
    private var inputClosedEarly = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        early.append(unwrapInboundIn(data))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputClosedEarly = true
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// Hands what arrived early to the relay behind this handler.
    private func replayEarlyInput(context: ChannelHandlerContext) {
        if !early.isEmpty {
            for buffer in early { context.fireChannelRead(wrapInboundOut(buffer)) }
            early = []
            context.fireChannelReadComplete()
        }
        if inputClosedEarly {
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
    }

    private func forward(context: ChannelHandlerContext, to destination: SocketAddress) {
        let route: UpstreamRoute
        switch runtime.route(listener: listener, destination: destination, client: context.channel.remoteAddress?.unmapped) {
        case .success(let found):
            route = found
        case .failure(let failure):
            switch failure {
            case .noFilterChain: listenerStats.noFilterChainMatch.increment()
            case .unknownCluster: listenerStats.noCluster.increment()
            case .loop: listenerStats.loopsRefused.increment()
            case .overflow, .noHealthyUpstream: break  // counted by the cluster
            }
            context.close(promise: nil)
            return
        }
        let clusterStats = route.cluster.stats
        let relay = RelayHandler.pair(downstreamBytes: clusterStats.bytesSent, upstreamBytes: clusterStats.bytesReceived)
        let downstream = context.channel
        var bootstrap = ClientBootstrap(group: context.eventLoop)
            .connectTimeout(route.cluster.config.connectTimeout.map { TimeAmount($0) } ?? runtime.options.connectTimeout)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: ProxyOptions.readBuffers)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(relay.upstream)
                }
            }
        if let source = route.source {
            if route.transparent {
                bootstrap = bootstrap
                    .channelOption(.ipTransparent(for: source), value: 1)
                    .channelOption(.packetMark, value: SocketOptionValue(Int32(bitPattern: runtime.options.tproxyMark)))
            }
            bootstrap = bootstrap.bind(to: source)
        }
        clusterStats.connectionsTotal.increment()
        if let endpointIndex = route.endpointIndex {
            // Only LEAST_REQUEST counts open connections per endpoint; others add nothing per connection.
            let cluster = route.cluster
            downstream.closeFuture.whenComplete { _ in cluster.released(endpointIndex) }
        }
        bootstrap.connect(to: route.endpoint).whenComplete { result in
            switch result {
            case .success(let upstream):
                clusterStats.connectionsActive.increment()
                upstream.closeFuture.whenComplete { _ in clusterStats.connectionsActive.decrement() }
                guard downstream.isActive else {
                    // The client left while the upstream was connecting.
                    upstream.close(promise: nil)
                    return
                }
                do {
                    let pipeline = downstream.pipeline.syncOperations
                    try pipeline.addHandler(relay.downstream)
                    relay.downstream.closeWhenIdle(for: route.idleTimeout)
                    self.replayEarlyInput(context: context)
                    pipeline.removeHandler(self, promise: nil)
                    downstream.setOption(.autoRead, value: true).whenFailure { _ in downstream.close(promise: nil) }
                } catch {
                    upstream.close(promise: nil)
                    downstream.close(promise: nil)
                }
            case .failure(let error):
                if case ChannelError.connectTimeout = error {
                    clusterStats.connectTimeouts.increment()
                }
                clusterStats.connectFailures.increment()
                downstream.close(promise: nil)
            }
        }
    }
}

extension ChannelOption where Self == ChannelOptions.Types.SocketOption {
    /// `IP_TRANSPARENT` (19) or `IPV6_TRANSPARENT` (75), for the family of `address`: bind or accept
    /// addresses that are not local (TPROXY).
    static func ipTransparent(for address: SocketAddress) -> Self {
        address.protocol == .inet6
            ? .init(level: NIOBSDSocket.OptionLevel(rawValue: CInt(IPPROTO_IPV6)), name: .init(rawValue: 75))
            : .init(level: NIOBSDSocket.OptionLevel(rawValue: CInt(IPPROTO_IP)), name: .init(rawValue: 19))
    }

    /// `SO_MARK`: the mark TPROXY's policy routing uses to send replies back to the proxy.
    static var packetMark: Self { .socketOption(.init(rawValue: SO_MARK)) }
}
