import NIOCore

/// What a listener filter found out about a new connection before a filter chain is chosen: its
/// transport protocol and, for TLS, the server name (SNI) and ALPN protocols its ClientHello asks for.
/// Filter chains match on all three; RBAC's `requested_server_name` reads the server name.
struct TransportDetection: Sendable, Equatable {
    /// Envoy's names: `tls` (found by tls_inspector) or `raw_buffer` (everything else).
    var transportProtocol: String
    var applicationProtocols: [String] = []
    /// The ClientHello's `server_name` (a host name, lowercased as Envoy keeps it); nil without one.
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
/// ClientHello is parsed for server name and ALPN when its record is complete; a ClientHello split over
/// several records is still TLS, only without those details.
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
        if view.count >= recordEnd, var message = bytes.getSlice(at: bytes.readerIndex + recordHeader, length: length),
           let details = clientHelloDetails(&message) {
            detection.applicationProtocols = details.protocols
            detection.serverName = details.serverName
        }
        return detection
    }

    /// The ALPN protocols a ClientHello handshake message offers (none without the extension) and the
    /// host name it asks for; nil when the message is cut short or malformed. Every read is
    /// bounds-checked by ByteBuffer.
    private static func clientHelloDetails(_ message: inout ByteBuffer) -> (protocols: [String], serverName: String?)? {
        guard message.readInteger(as: UInt8.self) == 0x01, let high = message.readInteger(as: UInt8.self),
              let low = message.readInteger(as: UInt16.self), var hello = message.readSlice(length: Int(high) << 16 | Int(low))
        else { return nil }
        // legacy_version and random, then legacy_session_id, cipher_suites, legacy_compression_methods.
        guard hello.readSlice(length: 2 + 32) != nil,
              let session = hello.readInteger(as: UInt8.self), hello.readSlice(length: Int(session)) != nil,
              let suites = hello.readInteger(as: UInt16.self), hello.readSlice(length: Int(suites)) != nil,
              let compression = hello.readInteger(as: UInt8.self), hello.readSlice(length: Int(compression)) != nil
        else { return nil }
        guard hello.readableBytes > 0 else { return ([], nil) }  // No extensions at all.
        guard let extensionsLength = hello.readInteger(as: UInt16.self),
              var extensions = hello.readSlice(length: Int(extensionsLength)) else { return nil }
        var protocols: [String] = []
        var serverName: String?
        while extensions.readableBytes > 0 {
            guard let type = extensions.readInteger(as: UInt16.self), let length = extensions.readInteger(as: UInt16.self),
                  var body = extensions.readSlice(length: Int(length)) else { return nil }
            switch type {
            case 0:  // server_name: a list of (type, length-prefixed name); type 0 is host_name, the only one defined.
                guard let listLength = body.readInteger(as: UInt16.self), var list = body.readSlice(length: Int(listLength)) else { return nil }
                while list.readableBytes > 0 {
                    guard let nameType = list.readInteger(as: UInt8.self), let nameLength = list.readInteger(as: UInt16.self),
                          let name = list.readString(length: Int(nameLength)) else { return nil }
                    if nameType == 0 && serverName == nil && !name.isEmpty { serverName = name.lowercased() }
                }
            case 16:  // application_layer_protocol_negotiation: length-prefixed names.
                guard let listLength = body.readInteger(as: UInt16.self), var list = body.readSlice(length: Int(listLength)) else { return nil }
                while list.readableBytes > 0 {
                    guard let nameLength = list.readInteger(as: UInt8.self), let name = list.readString(length: Int(nameLength)) else { return nil }
                    protocols.append(name)
                }
            default:
                continue
            }
        }
        return (protocols, serverName)
    }
}
