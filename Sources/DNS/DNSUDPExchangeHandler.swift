import NIOCore

/// Waits on a fresh UDP socket for the one response to a query it sent: from the nameserver asked, with
/// the query's id and QR set. Anything else is dropped; the socket is closed once the promise completes.
final class DNSUDPExchangeHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    private let nameserver: SocketAddress
    private let queryID: UInt16
    private let promise: EventLoopPromise<ByteBuffer>

    init(nameserver: SocketAddress, queryID: UInt16, promise: EventLoopPromise<ByteBuffer>) {
        self.nameserver = nameserver
        self.queryID = queryID
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = Self.unwrapInboundIn(data)
        let payload = envelope.data
        guard envelope.remoteAddress == nameserver,
              payload.getInteger(at: payload.readerIndex, as: UInt16.self) == queryID,
              let flags = payload.getInteger(at: payload.readerIndex + 2, as: UInt16.self), flags & 0x8000 != 0 else { return }
        promise.succeed(payload)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(DNSExchangeError.transportFailed(nameserver: "\(nameserver)", transport: "udp", reason: "\(error)"))
    }
}

/// Collects the one length-prefixed response on a TCP connection (after `DNSTCPFrameDecoder`).
final class DNSTCPExchangeHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let nameserver: SocketAddress
    private let queryID: UInt16
    private let promise: EventLoopPromise<ByteBuffer>

    init(nameserver: SocketAddress, queryID: UInt16, promise: EventLoopPromise<ByteBuffer>) {
        self.nameserver = nameserver
        self.queryID = queryID
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let payload = Self.unwrapInboundIn(data)
        guard payload.getInteger(at: payload.readerIndex, as: UInt16.self) == queryID else { return }
        promise.succeed(payload)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(DNSExchangeError.transportFailed(nameserver: "\(nameserver)", transport: "tcp", reason: "closed before an answer"))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(DNSExchangeError.transportFailed(nameserver: "\(nameserver)", transport: "tcp", reason: "\(error)"))
    }
}
