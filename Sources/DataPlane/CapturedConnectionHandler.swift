import Authorization
import HTTPProxy
import NIOCore
import NIOPosix
import NIOSSL
import XDS
#if canImport(Glibc)
import Glibc
#endif

/// The first handler of every accepted connection: finds where it was going, reads the first bytes when
/// the listener has tls_inspector, picks the route (refusing loops), terminates TLS when the chosen
/// chain has a TLS context, connects upstream on the same event loop (over TLS when the cluster has a
/// TLS context), then hands both channels to a ``RelayHandler`` pair.
///
/// The downstream channel does not read until the upstream is connected and TLS, on either side, is
/// accepted: nothing is relayed before. Only what tls_inspector read, and what NIO reads at once when
/// the client half-closes early, is kept, and handed on.
final class CapturedConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// The identities at the two ends of a TLS leg, for Istio's metrics.
    private struct Principals {
        /// The series of the leg's TLS context, which knows this side's identity.
        var local: IstioPeerSeries
        var peer: String?
        /// Both sides presented a certificate and the peer's was verified.
        var mutual: Bool
    }

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
                self.detectTransport(context: context, destination: address)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        inspection?.deadline.cancel()
        inspection = nil
        context.fireChannelInactive()
    }

    /// Bytes that arrived before the relay was in place: what tls_inspector read, and everything up to
    /// the end of stream when the client half-closes early (autoRead is off until then, but NIO reads
    /// to the end at once).
    private var early: [ByteBuffer] = []
    private var inputClosedEarly = false
    /// While tls_inspector waits for the first bytes: where the connection was going, and the wait's end.
    private var inspection: (destination: SocketAddress, listener: String, configuration: ActiveConfiguration, deadline: Scheduled<Void>)?
    /// Once TLS is terminated here, reads go on to the TLS handler behind this one.
    private var passingThrough = false
    /// The TLS server name the client asked for, as tls_inspector read it (RBAC's `requested_server_name`).
    private var requestedServerName: String?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if passingThrough {
            context.fireChannelRead(data)
        } else {
            early.append(unwrapInboundIn(data))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if passingThrough {
            context.fireChannelReadComplete()
        } else if inspection != nil {
            inspect(context: context, complete: inputClosedEarly)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed, !passingThrough {
            inputClosedEarly = true
            if inspection != nil { inspect(context: context, complete: true) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// Hands what arrived early to the handler behind this one: the relay, or the TLS handler.
    private func replayEarlyInput(context: ChannelHandlerContext) {
        if !early.isEmpty {
            for buffer in early { context.fireChannelRead(wrapInboundOut(buffer)) }
            early = []
            context.fireChannelReadComplete()
        }
        if inputClosedEarly {
            inputClosedEarly = false
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
    }

    // MARK: Listener filters

    /// With tls_inspector, reads until the first bytes tell TLS from plaintext (or the client stops,
    /// or the listener filters' timeout passes: plaintext); without, goes on at once.
    private func detectTransport(context: ChannelHandlerContext, destination: SocketAddress) {
        // One look at the configuration per connection: it is routed by the version in force now, by the
        // listener its original destination hands it to (Envoy's use_original_dst), or this one.
        let configuration = runtime.configuration
        let serving = runtime.listener(handingOff: listener, destination: destination, in: configuration)
        let filters = configuration.listeners[serving]
        guard filters?.inspectsTLS == true || filters?.inspectsHTTP == true else {
            forward(context: context, to: destination, detected: .plaintext, listener: serving, in: configuration)
            return
        }
        guard context.channel.isActive else { return }
        let deadline = context.eventLoop.assumeIsolated().scheduleTask(in: runtime.options.listenerFiltersTimeout) { [self] in
            inspect(context: context, complete: true)
        }
        inspection = (destination, serving, configuration, deadline)
        context.read()
    }

    /// tls_inspector first (when configured), then, on plaintext, http_inspector (when configured).
    private func inspect(context: ChannelHandlerContext, complete: Bool) {
        guard let (destination, serving, configuration, deadline) = inspection else { return }
        var bytes = early.first ?? context.channel.allocator.buffer(capacity: 0)
        for var buffer in early.dropFirst() { bytes.writeBuffer(&buffer) }
        let filters = configuration.listeners[serving]
        var detected = TransportDetection.plaintext
        if filters?.inspectsTLS == true {
            guard let found = TLSInspector.inspect(bytes, complete: complete) else { return context.read() }
            detected = found
        }
        if detected.transportProtocol == TransportDetection.rawBuffer, filters?.inspectsHTTP == true {
            guard let protocols = HTTPInspector.inspect(bytes, complete: complete) else { return context.read() }
            detected.applicationProtocols = protocols
        }
        deadline.cancel()
        inspection = nil
        requestedServerName = detected.serverName
        forward(context: context, to: destination, detected: detected, listener: serving, in: configuration)
    }

    // MARK: Routing

    private func forward(context: ChannelHandlerContext, to destination: SocketAddress, detected: TransportDetection,
                         listener: String, in configuration: ActiveConfiguration) {
        let route: UpstreamRoute
        switch runtime.route(listener: listener, destination: destination, client: context.channel.remoteAddress?.unmapped,
                             detected: detected, in: configuration) {
        case .success(let found):
            route = found
        case .failure(let failure):
            switch failure {
            case .noFilterChain: listenerStats.noFilterChainMatch.increment()
            case .unknownCluster: listenerStats.noCluster.increment()
            case .loop: listenerStats.loopsRefused.increment()
            case .overflow, .noHealthyUpstream: break  // counted by the cluster
            case .servesHTTP(let chain):
                guard case .http(let manager) = chain.action else { break }
                return serveHTTP(context: context, config: manager, chain: chain, destination: destination,
                                 inbound: configuration.listeners[listener]?.direction == .inbound)
            }
            context.close(promise: nil)
            return
        }
        let cluster = route.cluster
        let endpointIndex = route.endpointIndex
        // The connection's place under max_connections; and, for LEAST_REQUEST only, its endpoint's count.
        context.channel.closeFuture.whenComplete { _ in
            cluster.circuitBreakers.close(.connections)
            cluster.released(endpointIndex)
        }
        guard let tls = route.downstreamTLS else {
            return authorize(route.authorization, context: context, destination: destination, principals: nil) { [self] in
                connect(context: context, route: route, downstreamTLS: nil)
            }
        }
        // The upstream is connected once the client is accepted, and its peer authorized.
        terminateTLS(context: context, tls: tls) { [self] downstreamTLS in
            authorize(route.authorization, context: context, destination: destination, principals: downstreamTLS.principals) { [self] in
                connect(context: context, route: route, downstreamTLS: downstreamTLS)
            }
        }
    }

    /// The chain's network authorization filters' verdict on this connection, once its peer is known:
    /// `allowed` runs (at once, or when an external authorization service has answered) unless one
    /// denies, and then the connection is closed (RBAC counting it in `<stat_prefix>rbac.denied`).
    private func authorize(_ authorization: NetworkAuthorization, context: ChannelHandlerContext, destination: SocketAddress,
                           principals: Principals?, allowed: @escaping () -> Void) {
        guard !authorization.isEmpty else { return allowed() }
        for engine in authorization.engines { runtime.stats.networkRBAC.bind(engine) }
        let connection = DownstreamConnectionInfo(remoteAddress: context.channel.remoteAddress?.unmapped, localAddress: destination,
                                                  isTLS: principals != nil, peerPrincipal: principals?.peer,
                                                  localPrincipal: principals?.local.local, requestedServerName: requestedServerName)
        authorize(authorization.steps[...], request: AuthorizationRequest(connection: connection), connection: connection,
                  context: context, allowed: allowed)
    }

    /// The steps in order, until one denies or asks a service (then the rest once it allows).
    private func authorize(_ steps: ArraySlice<NetworkAuthorization.Step>, request: AuthorizationRequest, connection: DownstreamConnectionInfo,
                           context: ChannelHandlerContext, allowed: @escaping () -> Void) {
        var request = request
        for (index, step) in zip(steps.indices, steps) {
            switch step {
            case .rbac(let engine):
                let (verdict, shadow) = engine.checkWithShadow(request)
                if let shadow, let keys = engine.shadowMetadataKeys {
                    RBACFilterConfig.record(shadow, keys: keys, in: &request.metadata, under: NetworkAuthorization.rbacMetadataNamespace)
                }
                guard verdict.allowed else { return context.close(promise: nil) }
            case .externalAuthorization(let external):
                if let enabled = external.enabledMetadata, !enabled.matches(request.metadata) { continue }
                let rest = steps[(index + 1)...]
                return ask(external, connection: connection, context: context) { [self] in
                    authorize(rest, request: request, connection: connection, context: context, allowed: allowed)
                }
            }
        }
        allowed()
    }

    /// Asks `external`'s service about the connection, which is held meanwhile (nothing read is sent
    /// on): `allowed` runs when it answers OK, or fails with `failure_mode_allow`; else the connection
    /// is closed.
    private func ask(_ external: NetworkExternalAuthorization, connection: DownstreamConnectionInfo, context: ChannelHandlerContext,
                     allowed: @escaping () -> Void) {
        let service = external.service
        let decide = { (outcome: Result<Envoy_Service_Auth_V3_CheckResponse, ExternalAuthorizationService.CheckFailure>) in
            switch outcome {
            case .success(let response) where response.status.code == 0: allowed()
            case .failure where external.failureModeAllow: allowed()
            case .success, .failure: context.close(promise: nil)
            }
        }
        guard let cluster = runtime.configuration.cluster(named: service.clusterName) else {
            return decide(.failure(.init(reason: "no cluster \(service.clusterName)")))
        }
        guard case .success(let endpoint) = cluster.chooseEndpoint(for: connection, hash: nil) else {
            return decide(.failure(.init(reason: "no healthy endpoint in \(service.clusterName)")))
        }
        let call = service.check(ExternalAuthorizationService.checkRequest(for: connection), cluster: cluster, endpoint: endpoint,
                                 pools: runtime.upstreamPools(for: context.eventLoop), completion: decide)
        // A connection closed while the service decides needs no answer.
        if let call { context.channel.closeFuture.assumeIsolated().whenComplete { _ in call.cancel() } }
    }

    /// TLS with `tls`'s context between the socket and this handler, fed what was read so far (the
    /// ClientHello); `accepted` runs once the client's certificate (if asked for) is verified. A refused
    /// or failed handshake closes the connection (counted by the handshake handler).
    private func terminateTLS(context: ChannelHandlerContext, tls: TransportSocketConfig,
                              accepted: @escaping ((handshake: TLSHandshakeHandler, principals: Principals)) -> Void) {
        let stats = listenerStats.tls
        let built: TLSContextCache.Built
        switch runtime.contexts.context(for: tls.contextKey, secrets: runtime.secrets) {
        case .success(let found):
            built = found
        case .failure:
            stats.connectionErrors.increment()
            context.close(promise: nil)
            return
        }
        let verdict = context.eventLoop.makePromise(of: String?.self)
        let handshake = TLSHandshakeHandler(subjectAltNames: built.subjectAltNames, verifiesPeer: built.verifiesPeer, stats: stats,
                                            timeout: runtime.options.tlsHandshakeTimeout, accepted: verdict)
        do {
            try context.pipeline.syncOperations.addHandlers([NIOSSLServerHandler(context: built.context), handshake],
                                                            position: .after(self))
        } catch {
            context.close(promise: nil)
            return
        }
        passingThrough = true
        verdict.futureResult.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let peer): accepted((handshake, Principals(local: built.istio, peer: peer, mutual: peer != nil)))
            case .failure: context.close(promise: nil)
            }
        }
        // The TLS handler reads for itself once it has bytes to answer; with none yet, it needs a first read.
        if early.isEmpty { context.read() }
        replayEarlyInput(context: context)
    }

    /// Connects to the route's endpoint (with TLS when the cluster has it) and starts the relay once the
    /// upstream is there and, with TLS, accepted.
    private func connect(context: ChannelHandlerContext, route: UpstreamRoute,
                         downstreamTLS: (handshake: TLSHandshakeHandler, principals: Principals)?) {
        let clusterStats = route.cluster.stats
        let relay = RelayHandler.pair(downstreamBytes: clusterStats.bytesSent, upstreamBytes: clusterStats.bytesReceived)
        let downstream = context.channel
        let connectTimeout = route.cluster.config.connectTimeout.map { TimeAmount($0) } ?? runtime.options.connectTimeout
        let upstreamTLS: UpstreamTLS?
        switch UpstreamTLS.make(for: route.cluster, socket: route.upstreamTLS, contexts: runtime.contexts, secrets: runtime.secrets, on: context.eventLoop,
                                timeout: connectTimeout) {
        case .success(let made):
            upstreamTLS = made
        case .failure:
            clusterStats.tls.connectionErrors.increment()
            context.close(promise: nil)
            return
        }
        var bootstrap = ClientBootstrap(group: context.eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: ProxyOptions.readBuffers)
            .keepalive(route.cluster.config.tcpKeepalive, to: route.endpoint)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let upstreamTLS {
                        try pipeline.addHandler(NIOSSLClientHandler(context: upstreamTLS.built.context, serverHostname: upstreamTLS.serverName))
                        try pipeline.addHandler(upstreamTLS.handshake)
                    } else {
                        try pipeline.addHandler(relay.upstream)
                    }
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
        bootstrap.connect(to: route.endpoint).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let upstream):
                clusterStats.connectionsActive.increment()
                upstream.closeFuture.whenComplete { _ in clusterStats.connectionsActive.decrement() }
                // Envoy's tcp_proxy reports a connection made as a final success, which counts as a 200.
                if let detector = route.cluster.outlierDetector, let index = route.endpointIndex { detector.record(.response(status: 200), host: index) }
                guard downstream.isActive else {
                    // The client left while the upstream was connecting.
                    upstream.close(promise: nil)
                    return
                }
                guard let upstreamTLS else {
                    self.startRelay(context: context, relay: relay, upstream: upstream, route: route,
                                    downstreamTLS: downstreamTLS, upstreamPrincipals: nil)
                    return
                }
                upstreamTLS.accepted.assumeIsolated().whenComplete { verdict in
                    guard case .success(let peer) = verdict, downstream.isActive else {
                        // Refused (counted by the handshake handler), or the client left meanwhile.
                        upstream.close(promise: nil)
                        downstream.close(promise: nil)
                        return
                    }
                    do {
                        try upstream.pipeline.syncOperations.addHandler(relay.upstream)
                    } catch {
                        upstream.close(promise: nil)
                        downstream.close(promise: nil)
                        return
                    }
                    upstreamTLS.handshake.release()
                    let principals = Principals(local: upstreamTLS.built.istio, peer: peer,
                                                mutual: upstreamTLS.presentsCertificate && peer != nil)
                    self.startRelay(context: context, relay: relay, upstream: upstream, route: route,
                                    downstreamTLS: downstreamTLS, upstreamPrincipals: principals)
                }
            case .failure(let error):
                upstreamTLS?.handshake.abandon()
                if case ChannelError.connectTimeout = error {
                    clusterStats.connectTimeouts.increment()
                }
                clusterStats.connectFailures.increment()
                if let detector = route.cluster.outlierDetector, let index = route.endpointIndex { detector.record(.connectFailure, host: index) }
                downstream.close(promise: nil)
            }
        }
    }

    // MARK: HTTP

    /// Hands the connection to Envoy's HTTP connection manager (after TLS, when the chain terminates it):
    /// from here on each request is routed on its own.
    private func serveHTTP(context: ChannelHandlerContext, config: HTTPConnectionManagerConfig, chain: BootstrapConfig.FilterChain,
                           destination: SocketAddress, inbound: Bool) {
        guard let tls = chain.transportSocket else {
            return authorize(chain.authorization, context: context, destination: destination, principals: nil) { [self] in
                startHTTP(context: context, config: config, destination: destination, inbound: inbound, downstreamTLS: nil)
            }
        }
        terminateTLS(context: context, tls: tls) { [self] downstreamTLS in
            authorize(chain.authorization, context: context, destination: destination, principals: downstreamTLS.principals) { [self] in
                startHTTP(context: context, config: config, destination: destination, inbound: inbound, downstreamTLS: downstreamTLS)
            }
        }
    }

    private func startHTTP(context: ChannelHandlerContext, config: HTTPConnectionManagerConfig, destination: SocketAddress, inbound: Bool,
                           downstreamTLS: (handshake: TLSHandshakeHandler, principals: Principals)?) {
        let channel = context.channel
        let principals = downstreamTLS?.principals
        let downstream = DownstreamConnectionInfo(remoteAddress: channel.remoteAddress?.unmapped, localAddress: destination,
                                                  isTLS: principals != nil, peerPrincipal: principals?.peer,
                                                  localPrincipal: principals?.local.local, requestedServerName: requestedServerName,
                                                  isInbound: inbound)
        let runtime = self.runtime
        let managerStats = runtime.stats.connectionManager(config.statPrefix)
        managerStats.adopt(config.filters)
        let manager = HTTPConnectionManager(config: config, downstream: downstream, routing: runtime,
                                            pools: runtime.upstreamPools(for: context.eventLoop),
                                            observer: RequestStatistics(istio: runtime.stats.istioHTTP,
                                                                        manager: managerStats,
                                                                        accessLogs: config.recordsForAccessLog ? runtime.accessLogs.sinks(for: config.accessLogs) : []))
        do {
            try manager.serve(on: channel, negotiatedProtocol: downstreamTLS?.handshake.negotiatedProtocol)
        } catch {
            context.close(promise: nil)
            return
        }
        // Reading on before the early bytes go on: HTTP/2 streams opened by them take the connection's
        // autoRead as theirs. No read lands in between: both happen in this turn of the event loop.
        channel.setOption(.autoRead, value: true).whenFailure { _ in channel.close(promise: nil) }
        replayEarlyInput(context: context)
        downstreamTLS?.handshake.release()
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }

    /// Joins the two channels, hands on what arrived early, and steps out of the pipeline.
    private func startRelay(context: ChannelHandlerContext, relay: (downstream: RelayHandler, upstream: RelayHandler), upstream: Channel,
                            route: UpstreamRoute, downstreamTLS: (handshake: TLSHandshakeHandler, principals: Principals)?,
                            upstreamPrincipals: Principals?) {
        let downstream = context.channel
        do {
            let pipeline = downstream.pipeline.syncOperations
            try pipeline.addHandler(relay.downstream)
            relay.downstream.closeWhenIdle(for: route.idleTimeout)
            replayEarlyInput(context: context)
            downstreamTLS?.handshake.release()
            countConnection(downstream, route: route, downstreamTLS: downstreamTLS?.principals, upstreamTLS: upstreamPrincipals)
            pipeline.removeHandler(self, promise: nil)
            downstream.setOption(.autoRead, value: true).whenFailure { _ in downstream.close(promise: nil) }
        } catch {
            upstream.close(promise: nil)
            downstream.close(promise: nil)
        }
    }

    /// Istio's `istio_tcp_connections_opened_total` now and `…_closed_total` when the client's side
    /// closes, reported by the source's proxy (outbound) or the destination's (inbound). A TLS leg's
    /// series comes from its context, which keeps them by peer.
    private func countConnection(_ downstream: Channel, route: UpstreamRoute, downstreamTLS: Principals?, upstreamTLS: Principals?) {
        let istio = runtime.stats.istio
        let series: IstioTCPMetrics.Series
        switch route.direction {
        case .outbound:
            series = upstreamTLS.map { $0.local.series(.source, peer: $0.peer, mutualTLS: $0.mutual) } ?? istio.plaintext(.source)
        case .inbound:
            series = downstreamTLS.map { $0.local.series(.destination, peer: $0.peer, mutualTLS: $0.mutual) } ?? istio.plaintext(.destination)
        }
        series.opened.increment()
        downstream.closeFuture.whenComplete { _ in series.closed.increment() }
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
