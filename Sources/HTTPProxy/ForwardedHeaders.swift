import HTTPTypes
import NIOCore
import Routing

/// What the proxy changes in a request on its way upstream and in the response on its way back, as
/// Envoy's connection manager and router do for Istio: hop-by-hop headers dropped, `x-request-id`,
/// `x-forwarded-proto`/`-for`, `x-forwarded-client-cert`, `x-envoy-attempt-count`, internal headers from
/// outside dropped, the route's rewrites and header changes, and `server`.
enum ForwardedHeaders {
    /// Connection-specific headers, never forwarded (RFC 9110 §7.6.1), plus those the connection header names.
    static func removeHopByHop(from fields: inout HTTPFields) {
        if let named = fields[.connection] {
            for name in named.split(separator: ",") {
                let trimmed = String(name.filter { $0 != " " && $0 != "\t" })
                if let field = HTTPField.Name(trimmed), field != .te { fields[field] = nil }
            }
        }
        for name in hopByHop { fields[name] = nil }
        if let te = fields[.te], te.lowercased() != "trailers" { fields[.te] = nil }
    }

    private static let hopByHop: [HTTPField.Name] = [
        .connection, .transferEncoding, .upgrade, .proxyAuthenticate,
        HTTPField.Name("keep-alive")!, HTTPField.Name("proxy-connection")!,
    ]

    static let requestID = HTTPField.Name("x-request-id")!
    static let forwardedProto = HTTPField.Name("x-forwarded-proto")!
    static let forwardedFor = HTTPField.Name("x-forwarded-for")!
    static let forwardedClientCert = HTTPField.Name("x-forwarded-client-cert")!
    static let attemptCount = HTTPField.Name("x-envoy-attempt-count")!
    /// Spelled in lower case, as Envoy writes every header name (swift-http-types' `.server` is `Server`).
    static let server = HTTPField.Name("server")!
    static let contentLength = HTTPField.Name("content-length")!
    static let contentType = HTTPField.Name("content-type")!

    /// The downstream request as it goes upstream.
    /// `upgrade`: the protocol an HTTP/1.1 upgrade the connection manager enables asks for (its
    /// `connection` and `upgrade` headers go on).
    static func prepareRequest(_ request: inout HTTPRequest, config: HTTPConnectionManagerConfig, downstream: DownstreamConnectionInfo,
                               decision: RouteDecision, forwarding: Forwarding, upgrade: String? = nil) {
        var fields = request.headerFields
        removeHopByHop(from: &fields)
        if let upgrade {
            fields[.connection] = "upgrade"
            fields[.upgrade] = upgrade
        }
        let external = config.useRemoteAddress && !(downstream.remoteAddress.map(isInternal) ?? true)
        if external {
            // Envoy's internal headers steer retries, timeouts and routing: not from outside the mesh.
            fields = HTTPFields(fields.filter { !$0.name.canonicalName.hasPrefix("x-envoy-") })
        }
        if config.useRemoteAddress || fields[forwardedProto] == nil {
            fields[forwardedProto] = downstream.isTLS ? "https" : "http"
        }
        if config.useRemoteAddress, let client = downstream.remoteAddress?.ipAddress {
            fields[forwardedFor] = fields[forwardedFor].map { "\($0),\(client)" } ?? client
        }
        if config.generatesRequestID, fields[requestID] == nil {
            fields[requestID] = RequestID.make()
        }
        applyClientCert(to: &fields, config: config, downstream: downstream)
        if decision.includesRequestAttemptCount { fields[attemptCount] = "1" }
        forwarding.requestHeaders.apply(to: &fields)
        request.headerFields = fields
        if let path = request.path, let rewritten = forwarding.rewrittenPath(path) { request.path = rewritten }
        if let host = forwarding.hostRewrite { request.authority = host }
    }

    /// `x-forwarded-client-cert` by `forward_client_cert_details` and `set_current_client_cert_details`.
    private static func applyClientCert(to fields: inout HTTPFields, config: HTTPConnectionManagerConfig, downstream: DownstreamConnectionInfo) {
        let mutual = downstream.isTLS && downstream.peerPrincipal != nil
        switch config.forwardClientCert {
        case .sanitize:
            fields[forwardedClientCert] = nil
        case .forwardOnly:
            if !mutual { fields[forwardedClientCert] = nil }
        case .alwaysForwardOnly:
            break
        case .appendForward, .sanitizeSet:
            guard mutual, let peer = downstream.peerPrincipal else {
                if config.forwardClientCert == .sanitizeSet || !downstream.isTLS { fields[forwardedClientCert] = nil }
                return
            }
            var element = downstream.localPrincipal.map { "By=\($0)" } ?? ""
            if config.clientCertDetails.uri { element += (element.isEmpty ? "" : ";") + "URI=\(peer)" }
            if config.forwardClientCert == .appendForward, let previous = fields[forwardedClientCert] {
                fields[forwardedClientCert] = "\(previous),\(element)"
            } else {
                fields[forwardedClientCert] = element
            }
        }
    }

    /// The upstream response as it goes downstream.
    static func prepareResponse(_ response: inout HTTPResponse, config: HTTPConnectionManagerConfig, forwarding: Forwarding?) {
        removeHopByHop(from: &response.headerFields)
        forwarding?.responseHeaders.apply(to: &response.headerFields)
        response.headerFields[server] = nil
        response.headerFields.append(HTTPField(name: server, value: config.serverName))
    }

    /// Envoy's default internal addresses: loopback, RFC 1918, and IPv6 unique local.
    static func isInternal(_ address: SocketAddress) -> Bool {
        switch address {
        case .v4(let v4):
            let ip = UInt32(bigEndian: v4.address.sin_addr.s_addr)
            return ip >> 24 == 127 || ip >> 24 == 10 || ip >> 20 == 0xAC1 || ip >> 16 == 0xC0A8
        case .v6(let v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
                let ip = UInt32(bytes[12]) << 24 | UInt32(bytes[13]) << 16 | UInt32(bytes[14]) << 8 | UInt32(bytes[15])
                return ip >> 24 == 127 || ip >> 24 == 10 || ip >> 20 == 0xAC1 || ip >> 16 == 0xC0A8
            }
            return bytes[0..<15].allSatisfy { $0 == 0 } && bytes[15] == 1 || bytes[0] & 0xFE == 0xFC
        case .unixDomainSocket:
            return true
        }
    }
}

/// `x-request-id` values: random (version 4) UUIDs, as Envoy's default request ID extension makes.
enum RequestID {
    private static let digits = Array("0123456789abcdef".utf8)

    static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        var high = generator.next() as UInt64
        var low = generator.next() as UInt64
        high = (high & ~0xF000) | 0x4000  // version 4
        low = (low & ~(0xC << 60)) | (0x8 << 60)  // variant 10
        var bytes = [UInt8]()
        bytes.reserveCapacity(36)
        for (index, value) in [(0, high), (1, low)] {
            for nibble in 0..<16 {
                let position = index * 16 + nibble
                if position == 8 || position == 12 || position == 16 || position == 20 { bytes.append(UInt8(ascii: "-")) }
                bytes.append(digits[Int((value >> UInt64(60 - nibble * 4)) & 0xF)])
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
