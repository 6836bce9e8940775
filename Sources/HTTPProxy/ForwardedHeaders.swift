import HTTPTypes
import NIOCore
import Routing

/// What the proxy changes in a request on its way upstream and in the response on its way back, as
/// Envoy's connection manager and router do for Istio: hop-by-hop headers dropped, `x-request-id`,
/// `x-forwarded-proto`/`-for`, `x-forwarded-client-cert`, `x-envoy-attempt-count`, internal headers from
/// outside dropped, the route's rewrites and header changes, and `server`.
enum ForwardedHeaders {
    /// Connection-specific headers, never forwarded (RFC 9110 §7.6.1), plus those the connection header
    /// names; with `internalHeaders`, also Envoy's `x-envoy-*` (from outside the mesh). One pass.
    static func removeHopByHop(from fields: inout HTTPFields) {
        var named: [HTTPField.Name] = []
        if let connection = fields[.connection] {
            for token in ConnectionTokens(connection) where !token.isKeepAlive && !token.isClose {
                if let field = HTTPField.Name(token.text), field != .te { named.append(field) }
            }
        }
        fields.removeAll { field in
            let name = field.name
            if hopByHop.contains(name) || (!named.isEmpty && named.contains(name)) { return true }
            if name == .te { return field.value.lowercased() != "trailers" }
            return false
        }
    }

    private static let hopByHop: [HTTPField.Name] = [
        .connection, .transferEncoding, .upgrade, .proxyAuthenticate,
        HTTPField.Name("keep-alive")!, HTTPField.Name("proxy-connection")!,
    ]
    private static let envoyPrefix = Array("x-envoy-".utf8)

    /// Whether a `connection` header value has the `close` token.
    static func asksToClose(_ connection: String) -> Bool {
        ConnectionTokens(connection).contains { $0.isClose }
    }

    static let requestID = HTTPField.Name("x-request-id")!
    static let forwardedProto = HTTPField.Name("x-forwarded-proto")!
    static let forwardedFor = HTTPField.Name("x-forwarded-for")!
    static let forwardedClientCert = HTTPField.Name("x-forwarded-client-cert")!
    static let attemptCount = HTTPField.Name("x-envoy-attempt-count")!
    /// On a local reply for an open circuit breaker.
    static let overloaded = HTTPField.Name("x-envoy-overloaded")!
    /// Spelled in lower case, as Envoy writes every header name (swift-http-types' `.server` is `Server`).
    static let server = HTTPField.Name("server")!
    static let contentLength = HTTPField.Name("content-length")!
    static let contentType = HTTPField.Name("content-type")!

    /// The downstream request as it goes upstream (its `x-request-id` already assigned).
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
        if config.useRemoteAddress || fields[forwardedProto] == nil {
            fields[forwardedProto] = downstream.isTLS ? "https" : "http"
        }
        if config.useRemoteAddress, let client = downstream.remoteAddress?.ipAddress {
            fields[forwardedFor] = fields[forwardedFor].map { "\($0),\(client)" } ?? client
        }
        applyClientCert(to: &fields, config: config, downstream: downstream)
        if decision.includesRequestAttemptCount { fields[attemptCount] = "1" }
        forwarding.requestHeaders.apply(to: &fields)
        request.headerFields = fields
        if let path = request.path, let rewritten = forwarding.rewrittenPath(path) { request.path = rewritten }
        if let host = forwarding.hostRewrite { request.authority = host }
    }

    /// Envoy's internal headers (`x-envoy-*`) steer retries, timeouts and routing: from outside the mesh
    /// they are removed as the request arrives, before routing and the filters, as Envoy's connection
    /// manager removes them (headers a filter adds later, such as an authorization service's, stay).
    static func removeInternalHeaders(_ request: inout HTTPRequest, config: HTTPConnectionManagerConfig, downstream: DownstreamConnectionInfo) {
        guard isExternal(downstream, config: config),
              request.headerFields.contains(where: { $0.name.canonicalName.utf8.starts(with: envoyPrefix) }) else { return }
        request.headerFields.removeAll { $0.name.canonicalName.utf8.starts(with: envoyPrefix) }
    }

    /// A request from outside the mesh: the connection manager uses the remote address and the client
    /// is not in Envoy's internal ranges.
    static func isExternal(_ downstream: DownstreamConnectionInfo, config: HTTPConnectionManagerConfig) -> Bool {
        config.useRemoteAddress && !(downstream.remoteAddress.map(isInternal) ?? true)
    }

    /// `x-request-id`, as the connection manager sets it before routing (so local replies and their
    /// access log lines have one too): made when the request has none.
    static func assignRequestID(_ request: inout HTTPRequest, config: HTTPConnectionManagerConfig) {
        guard config.generatesRequestID, request.headerFields[requestID] == nil else { return }
        request.headerFields[requestID] = RequestID.make()
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

/// The comma-separated tokens of a `connection` header, trimmed, read without copying until a token
/// names a header to drop (the usual `keep-alive` and `close` never do).
struct ConnectionTokens: Sequence, IteratorProtocol {
    struct Token {
        let bytes: Substring.UTF8View

        var text: String { String(Substring(bytes)) }
        var isKeepAlive: Bool { equalsIgnoringCase("keep-alive") }
        var isClose: Bool { equalsIgnoringCase("close") }

        private func equalsIgnoringCase(_ lowercase: StaticString) -> Bool {
            guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
            return lowercase.withUTF8Buffer { expected in
                zip(bytes, expected).allSatisfy { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) ? $0 | 0x20 == $1 : $0 == $1 }
            }
        }
    }

    private var rest: Substring.UTF8View

    init(_ value: String) { rest = Substring(value).utf8 }

    mutating func next() -> Token? {
        while !rest.isEmpty {
            let end = rest.firstIndex(of: UInt8(ascii: ",")) ?? rest.endIndex
            var token = rest[rest.startIndex..<end]
            rest = end == rest.endIndex ? rest[end...] : rest[rest.index(after: end)...]
            while let first = token.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") { token = token.dropFirst() }
            while let last = token.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { token = token.dropLast() }
            if !token.isEmpty { return Token(bytes: token) }
        }
        return nil
    }
}

/// `x-request-id` values: random (version 4) UUIDs, as Envoy's default request ID extension makes.
enum RequestID {
    private static let digits: StaticString = "0123456789abcdef"

    static func make() -> String {
        var random = RequestRandomness()
        let high = (random.next() & ~0xF000) | 0x4000  // version 4
        let low = (random.next() & ~(0xC << 60)) | (0x8 << 60)  // variant 10
        return String(unsafeUninitializedCapacity: 36) { text in
            digits.withUTF8Buffer { digits in
                var at = 0
                // 8-4-4-4-12 hexadecimal digits: dashes before digits 8, 12, 16 and 20.
                for position in 0..<32 {
                    if position == 8 || position == 12 || position == 16 || position == 20 {
                        text[at] = UInt8(ascii: "-")
                        at += 1
                    }
                    let value = position < 16 ? high : low
                    text[at] = digits[Int((value >> UInt64(60 - (position % 16) * 4)) & 0xF)]
                    at += 1
                }
            }
            return 36
        }
    }
}
