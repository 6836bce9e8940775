import NIOCore

/// Splits a TCP byte stream into DNS messages: each is prefixed by its length in two bytes (RFC 1035 4.2.2).
public struct DNSTCPFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer

    public init() {}

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
              buffer.readableBytes >= 2 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        context.fireChannelRead(Self.wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

extension ByteBuffer {
    /// Writes `message` with the two-byte length prefix DNS over TCP uses.
    public mutating func writeDNSTCPFrame(_ message: ByteBuffer) {
        writeInteger(UInt16(truncatingIfNeeded: message.readableBytes))
        writeImmutableBuffer(message)
    }
}
