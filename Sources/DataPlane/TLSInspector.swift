import NIOCore

/// What a listener filter found out about a new connection before a filter chain is chosen: its
/// transport protocol and, for TLS, the ALPN protocols and server name its ClientHello offers.
struct TransportDetection: Sendable, Equatable {
    /// Envoy's names: `tls` (found by tls_inspector) or `raw_buffer` (everything else).
    var transportProtocol: String
    var applicationProtocols: [String] = []
    var serverName: String?

    static let tls = "tls"
    static let rawBuffer = "raw_buffer"
    /// A connection nothing inspected, or one that is not TLS.
    static let plaintext = TransportDetection(transportProtocol: rawBuffer)
}

/// Envoy's `envoy.filters.listener.tls_inspector`: reads a connection's first bytes (without consuming
/// them: they still go to whatever handles the connection) and says whether they are a TLS ClientHello.
///
/// TLS is a handshake record (0x16), version 3.x, whose first message is a ClientHello (type 1). The
/// ClientHello is parsed for ALPN and SNI when its record is complete; a ClientHello split over several
/// records is still TLS, only without those details.
enum TLSInspector {
    /// A record's header: type, version, length.
    private static let recordHeader = 5
    /// The largest TLS record (2^14 bytes of plaintext plus the allowance TLS 1.2 gives ciphertext).
    private static let largestRecord = 16384 + 2048

    /// The detection for `bytes`, or nil when more bytes are needed to tell. `complete`: no more bytes
    /// will come (the client closed, or the wait timed out), so decide with what there is.
    static func inspect(_ bytes: ByteBuffer, complete: Bool) -> TransportDetection? {
        let view = bytes.readableBytesView
        func byte(_ index: Int) -> UInt8? { index < view.count ? view[view.startIndex + index] : nil }
        // Each step below needs one more byte; when it is missing, wait unless nothing more will come.
        guard let type = byte(0) else { return complete ? .plaintext : nil }
        guard type == 0x16 else { return .plaintext }
        guard let major = byte(1) else { return complete ? .plaintext : nil }
        guard major == 0x03 else { return .plaintext }
        guard let minor = byte(2) else { return complete ? .plaintext : nil }
        guard minor <= 0x04 else { return .plaintext }
        guard let high = byte(3), let low = byte(4) else { return complete ? .plaintext : nil }
        let length = Int(high) << 8 | Int(low)
        guard length > 0, length <= largestRecord else { return .plaintext }
        guard let handshake = byte(5) else { return complete ? .plaintext : nil }
        guard handshake == 0x01 else { return .plaintext }
        let recordEnd = recordHeader + length
        if view.count < recordEnd && !complete { return nil }
        var detection = TransportDetection(transportProtocol: TransportDetection.tls)
        if view.count >= recordEnd {
            let record = Array(view[view.startIndex + recordHeader ..< view.startIndex + recordEnd])
            if let hello = ClientHello(record) {
                detection.applicationProtocols = hello.applicationProtocols
                detection.serverName = hello.serverName
            }
        }
        return detection
    }

    /// The ALPN and SNI extensions of a ClientHello handshake message (RFC 8446 §4.1.2); nil when the
    /// message is cut short or malformed.
    private struct ClientHello {
        var applicationProtocols: [String] = []
        var serverName: String?

        init?(_ message: [UInt8]) {
            var reader = ByteReader(message)
            guard reader.byte() == 0x01, let length = reader.integer(3), length <= reader.remaining else { return nil }
            reader.limit(to: length)
            // legacy_version, random, legacy_session_id, cipher_suites, legacy_compression_methods.
            guard reader.skip(2 + 32), let session = reader.integer(1), reader.skip(session),
                  let suites = reader.integer(2), reader.skip(suites),
                  let compression = reader.integer(1), reader.skip(compression) else { return nil }
            guard reader.remaining > 0 else { return }  // No extensions at all.
            guard let extensionsLength = reader.integer(2), extensionsLength <= reader.remaining else { return nil }
            reader.limit(to: extensionsLength)
            while reader.remaining > 0 {
                guard let type = reader.integer(2), let length = reader.integer(2), var body = reader.take(length) else { return nil }
                switch type {
                case 0:  // server_name: a list of (type, name); type 0 is a host name.
                    guard let listLength = body.integer(2), listLength <= body.remaining else { return nil }
                    while body.remaining > 0 {
                        guard let nameType = body.byte(), let nameLength = body.integer(2), let name = body.take(nameLength) else { return nil }
                        if nameType == 0 { serverName = String(decoding: name.rest, as: UTF8.self) }
                    }
                case 16:  // application_layer_protocol_negotiation: a list of length-prefixed names.
                    guard let listLength = body.integer(2), listLength <= body.remaining else { return nil }
                    while body.remaining > 0 {
                        guard let nameLength = body.integer(1), let name = body.take(nameLength) else { return nil }
                        applicationProtocols.append(String(decoding: name.rest, as: UTF8.self))
                    }
                default:
                    continue
                }
            }
        }
    }

    /// Bounds-checked big-endian reads from a byte array: every read that would run past the end is nil.
    private struct ByteReader {
        private let bytes: [UInt8]
        private var position = 0
        private var end: Int

        init(_ bytes: [UInt8]) {
            self.bytes = bytes
            self.end = bytes.count
        }

        var remaining: Int { end - position }
        var rest: ArraySlice<UInt8> { bytes[position..<end] }

        mutating func byte() -> UInt8? {
            guard position < end else { return nil }
            defer { position += 1 }
            return bytes[position]
        }

        mutating func integer(_ width: Int) -> Int? {
            guard width <= remaining else { return nil }
            var value = 0
            for _ in 0..<width { value = value << 8 | Int(bytes[position]); position += 1 }
            return value
        }

        mutating func skip(_ count: Int) -> Bool {
            guard count <= remaining else { return false }
            position += count
            return true
        }

        /// The next `count` bytes as a reader of their own.
        mutating func take(_ count: Int) -> ByteReader? {
            guard count <= remaining else { return nil }
            var taken = self
            taken.end = position + count
            position += count
            return taken
        }

        /// Reads no further than `count` bytes from here.
        mutating func limit(to count: Int) {
            end = min(end, position + count)
        }
    }
}
