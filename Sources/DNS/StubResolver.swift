import NIOCore
import NIOPosix

/// A stub resolver, as glibc's or c-ares' is: it asks the configured nameservers in order (each for up to
/// `timeout`, `attempts` rounds), over UDP from a fresh random port per query, and again over TCP when the
/// answer comes back truncated. SERVFAIL, NOTIMP and REFUSED move on to the next nameserver.
///
/// `exchange` passes a query's bytes through unchanged (the agent's DNS forwarder: EDNS and flags stay
/// the client's); `resolve` asks for A and/or AAAA records of a name and returns the addresses with their
/// TTLs, following CNAME chains in the answer (the proxy's STRICT_DNS and LOGICAL_DNS clusters).
public final class StubResolver: Sendable {
    public let configuration: ResolverConfiguration
    private let group: any EventLoopGroup
    private let nameservers: [SocketAddress]

    public init(configuration: ResolverConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.configuration = configuration
        self.group = group
        self.nameservers = configuration.nameserverAddresses
    }

    /// Sends `query` (one message's wire bytes) and completes with the first usable response's bytes.
    /// Over TCP from the start when `overTCP` (a client that asked over TCP); over UDP otherwise, retried
    /// over TCP when truncated (if TCP fails, the truncated answer is returned: the client may retry).
    public func exchange(_ query: ByteBuffer, overTCP: Bool = false, on eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer> {
        guard let id = query.getInteger(at: query.readerIndex, as: UInt16.self), query.readableBytes >= 12 else {
            return eventLoop.makeFailedFuture(DNSWireError(field: "header", reason: "query is \(query.readableBytes) bytes, a header needs 12"))
        }
        guard !nameservers.isEmpty else { return eventLoop.makeFailedFuture(DNSExchangeError.noNameservers) }
        let promise = eventLoop.makePromise(of: ByteBuffer.self)
        attempt(0, query: query, id: id, overTCP: overTCP, eventLoop: eventLoop, promise: promise,
                lastResponse: nil, lastError: DNSExchangeError.noNameservers)
        return promise.futureResult
    }

    private func attempt(_ index: Int, query: ByteBuffer, id: UInt16, overTCP: Bool, eventLoop: any EventLoop,
                         promise: EventLoopPromise<ByteBuffer>, lastResponse: ByteBuffer?, lastError: any Error) {
        let total = nameservers.count * max(1, configuration.attempts)
        let server = nameservers[index % nameservers.count]
        let answer: EventLoopFuture<ByteBuffer>
        if overTCP {
            answer = tcp(query, id: id, server: server, eventLoop: eventLoop)
        } else {
            answer = udp(query, id: id, server: server, eventLoop: eventLoop).flatMap { response in
                guard let flags = response.getInteger(at: response.readerIndex + 2, as: UInt16.self), flags & 0x0200 != 0 else {
                    return eventLoop.makeSucceededFuture(response)
                }
                return self.tcp(query, id: id, server: server, eventLoop: eventLoop).flatMapError { _ in
                    eventLoop.makeSucceededFuture(response)
                }
            }
        }
        answer.whenComplete { result in
            let isLast = index + 1 >= total
            switch result {
            case .success(let response):
                let code = (response.getInteger(at: response.readerIndex + 2, as: UInt16.self) ?? 0) & 0x000F
                let tryNext = code == DNSResponseCode.serverFailure.rawValue || code == DNSResponseCode.notImplemented.rawValue
                    || code == DNSResponseCode.refused.rawValue
                if tryNext, !isLast {
                    self.attempt(index + 1, query: query, id: id, overTCP: overTCP, eventLoop: eventLoop, promise: promise,
                                 lastResponse: response, lastError: lastError)
                } else {
                    promise.succeed(response)
                }
            case .failure(let error):
                if !isLast {
                    self.attempt(index + 1, query: query, id: id, overTCP: overTCP, eventLoop: eventLoop, promise: promise,
                                 lastResponse: lastResponse, lastError: error)
                } else if let lastResponse {
                    promise.succeed(lastResponse)
                } else {
                    promise.fail(error)
                }
            }
        }
    }

    private func udp(_ query: ByteBuffer, id: UInt16, server: SocketAddress, eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer> {
        let promise = eventLoop.makePromise(of: ByteBuffer.self)
        let timeout = configuration.timeout
        DatagramBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(DNSUDPExchangeHandler(nameserver: server, queryID: id, promise: promise))
                }
            }
            .bind(host: server.protocol == .inet6 ? "::" : "0.0.0.0", port: 0)
            .whenComplete { result in
                switch result {
                case .failure(let error):
                    promise.fail(DNSExchangeError.transportFailed(nameserver: "\(server)", transport: "udp", reason: "\(error)"))
                case .success(let channel):
                    let timer = eventLoop.scheduleTask(in: timeout) {
                        promise.fail(DNSExchangeError.timedOut(nameserver: "\(server)", transport: "udp"))
                    }
                    promise.futureResult.whenComplete { _ in
                        timer.cancel()
                        channel.close(promise: nil)
                    }
                    channel.writeAndFlush(AddressedEnvelope(remoteAddress: server, data: query)).whenFailure { error in
                        promise.fail(DNSExchangeError.transportFailed(nameserver: "\(server)", transport: "udp", reason: "\(error)"))
                    }
                }
            }
        return promise.futureResult
    }

    private func tcp(_ query: ByteBuffer, id: UInt16, server: SocketAddress, eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer> {
        let promise = eventLoop.makePromise(of: ByteBuffer.self)
        let timer = eventLoop.scheduleTask(in: configuration.timeout) {
            promise.fail(DNSExchangeError.timedOut(nameserver: "\(server)", transport: "tcp"))
        }
        ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(DNSTCPFrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(DNSTCPExchangeHandler(nameserver: server, queryID: id, promise: promise))
                }
            }
            .connect(to: server)
            .whenComplete { result in
                switch result {
                case .failure(let error):
                    promise.fail(DNSExchangeError.transportFailed(nameserver: "\(server)", transport: "tcp", reason: "\(error)"))
                case .success(let channel):
                    promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
                    var framed = channel.allocator.buffer(capacity: query.readableBytes + 2)
                    framed.writeDNSTCPFrame(query)
                    channel.writeAndFlush(framed).whenFailure { error in
                        promise.fail(DNSExchangeError.transportFailed(nameserver: "\(server)", transport: "tcp", reason: "\(error)"))
                    }
                }
            }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        return promise.futureResult
    }

    /// Resolves `name` (absolute: the search list is not applied) to its addresses of the asked families,
    /// A and AAAA queried together. Each address's TTL is the smallest along the CNAME chain that led to it.
    /// An empty answer (NODATA) is an empty list; NXDOMAIN and other failures throw `DNSResolutionError`.
    public func resolve(_ name: String, families: DNSAddressFamilies = .all) async throws(DNSResolutionError) -> DNSResolution {
        let queryName: DNSName
        do { queryName = try DNSName(name) } catch { throw .invalidName(name, error) }
        var types: [DNSRecordType] = []
        if families.contains(.ipv4) { types.append(.a) }
        if families.contains(.ipv6) { types.append(.aaaa) }
        let eventLoop = group.next()
        let futures = types.map { type in
            var query = DNSMessage.query(id: UInt16.random(in: .min ... .max), name: queryName, type: type)
            query.header.recursionDesired = true
            let bytes = (try? query.encoded()) ?? []
            return exchange(ByteBuffer(bytes: bytes), on: eventLoop).map { (type, $0) }
        }
        var resolution = DNSResolution(name: queryName, canonicalName: queryName, addresses: [])
        var failure: DNSResolutionError?
        var nameErrors = 0
        for future in futures {
            let type: DNSRecordType
            let response: DNSMessage
            do {
                let (answeredType, bytes) = try await future.get()
                type = answeredType
                response = try bytes.withUnsafeReadableBytes { raw in try DNSMessage(decoding: raw) }
            } catch let error as DNSWireError {
                failure = .malformedResponse(name, error)
                continue
            } catch let error as DNSExchangeError {
                failure = .unreachable(name, error)
                continue
            } catch {
                failure = .unreachable(name, .transportFailed(nameserver: "?", transport: "?", reason: "\(error)"))
                continue
            }
            switch response.responseCode {
            case .noError:
                let (canonical, addresses) = DNSResolution.follow(queryName, type: type, in: response.answers)
                if canonical != queryName { resolution.canonicalName = canonical }
                resolution.addresses += addresses
            case .nameError:
                nameErrors += 1
            default:
                failure = .serverFailure(name, response.responseCode)
            }
        }
        if nameErrors > 0, resolution.addresses.isEmpty { throw .nameError(name) }
        if let failure, resolution.addresses.isEmpty { throw failure }
        return resolution
    }
}

/// Which address families to resolve.
public struct DNSAddressFamilies: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    public static let ipv4 = DNSAddressFamilies(rawValue: 1)
    public static let ipv6 = DNSAddressFamilies(rawValue: 2)
    public static let all: DNSAddressFamilies = [.ipv4, .ipv6]
}
