import Configuration
import HTTPTypes
import XDS

/// One of a route's `hash_policy` entries: what a request is hashed by for a RING_HASH or MAGLEV
/// cluster, so that requests with the same header, cookie, source address or query parameter go to the
/// same host (Istio's DestinationRule `consistentHash`).
public struct HashPolicy: Sendable {
    public enum Key: Sendable {
        /// A request header's value, after `regex_rewrite` if given.
        case header(HTTPField.Name, rewrite: RegexSubstitution?)
        /// A cookie's value. Without it and with a `ttl`, the proxy makes one (from the client's address)
        /// and sets it on the response, so that the client's next requests carry it.
        case cookie(Cookie)
        /// The downstream connection's source IP.
        case sourceIP
        /// A query parameter's first value.
        case queryParameter(String)
    }

    public struct Cookie: Sendable {
        public let name: String
        /// nil: no cookie is made when the request has none.
        public let ttl: Duration?
        public let path: String
        /// `attributes`, each `name` or `name=value`, added to a made cookie.
        public let attributes: [String]
    }

    public let key: Key
    /// `terminal`: when this policy yields a hash, the later ones are not evaluated.
    public let terminal: Bool

    init(_ proto: Envoy_Config_Route_V3_RouteAction.HashPolicy, path: String) throws(ConfigError) {
        terminal = proto.terminal
        switch proto.policySpecifier {
        case .header(let header)?:
            guard let name = HTTPField.Name(header.headerName) else {
                throw ConfigError(path: "\(path).header.header_name", message: "\"\(header.headerName)\" is not a header name")
            }
            key = .header(name, rewrite: header.hasRegexRewrite
                ? try RegexSubstitution(header.regexRewrite, path: "\(path).header.regex_rewrite") : nil)
        case .cookie(let cookie)?:
            guard !cookie.name.isEmpty else { throw ConfigError(path: "\(path).cookie.name", message: "is required") }
            key = .cookie(Cookie(name: cookie.name, ttl: cookie.hasTtl ? Duration(cookie.ttl) : nil, path: cookie.path,
                                 attributes: cookie.attributes.map { $0.value.isEmpty ? $0.name : "\($0.name)=\($0.value)" }))
        case .connectionProperties(let properties)?:
            guard properties.sourceIp else {
                throw ConfigError(path: "\(path).connection_properties.source_ip", message: "must be true: it is the only connection property")
            }
            key = .sourceIP
        case .queryParameter(let parameter)?:
            guard !parameter.name.isEmpty else { throw ConfigError(path: "\(path).query_parameter.name", message: "is required") }
            key = .queryParameter(parameter.name)
        case nil:
            throw ConfigError(path: path, message: "needs header, cookie, connection_properties or query_parameter (filter_state is not supported)")
        }
    }

    /// What a request hashes to by a route's policies: Envoy's combination, each value found mixed into
    /// the hash so far, stopping after a terminal policy that found one; nil when none did (the cluster
    /// then picks at random). `setCookie`: a cookie made for the response (`Set-Cookie`'s value).
    public struct RequestHash: Sendable {
        public var value: UInt64?
        public var setCookie: String?
    }

    /// `request`'s hash by `policies`; `sourceAddress` is the downstream connection's source (IP and port:
    /// a made cookie's value comes from it).
    public static func hash(_ policies: [HashPolicy], request: HTTPRequest, sourceIP: String?, sourceAddress: String?) -> RequestHash {
        var result = RequestHash()
        for policy in policies {
            guard let found = policy.evaluate(request, sourceIP: sourceIP, sourceAddress: sourceAddress, setCookie: &result.setCookie) else {
                continue
            }
            result.value = result.value.map { (($0 << 1) | ($0 >> 63)) ^ found } ?? found
            if policy.terminal { break }
        }
        return result
    }

    private func evaluate(_ request: HTTPRequest, sourceIP: String?, sourceAddress: String?, setCookie: inout String?) -> UInt64? {
        switch key {
        case .header(let name, let rewrite):
            guard let value = request.headerFields[name] else { return nil }
            return XXHash64.hash(rewrite.map { $0.apply(to: Substring(value)) } ?? value)
        case .cookie(let cookie):
            if let value = Self.cookie(named: cookie.name, in: request.headerFields) { return XXHash64.hash(String(value)) }
            guard let ttl = cookie.ttl, let sourceAddress else { return nil }
            // The same value for every request of a connection, so that racing requests agree on it.
            let value = Self.hex(XXHash64.hash(sourceAddress))
            var made = "\(cookie.name)=\"\(value)\""
            let seconds = ttl.components.seconds
            if seconds > 0 { made += "; Max-Age=\(seconds)" }
            if !cookie.path.isEmpty { made += "; Path=\(cookie.path)" }
            for attribute in cookie.attributes { made += "; \(attribute)" }
            made += "; HttpOnly"
            setCookie = made
            return XXHash64.hash(value)
        case .sourceIP:
            return sourceIP.map { XXHash64.hash($0) }
        case .queryParameter(let name):
            guard let path = request.path, let value = QueryParameterMatcher.firstValue(of: name, in: RouteMatch.query(of: Substring(path))) else {
                return nil
            }
            return XXHash64.hash(String(value))
        }
    }

    /// The value of the first cookie named `name` in the request's `Cookie` headers, without quotes.
    static func cookie(named name: String, in fields: HTTPFields) -> Substring? {
        for field in fields where field.name == .cookie {
            for pair in field.value.split(separator: ";") {
                let trimmed = pair.drop { $0 == " " }
                guard let equals = trimmed.firstIndex(of: "="), trimmed[..<equals] == name else { continue }
                var value = trimmed[trimmed.index(after: equals)...]
                if value.count >= 2, value.first == "\"", value.last == "\"" { value = value.dropFirst().dropLast() }
                return value
            }
        }
        return nil
    }

    /// The hash a retry's host is chosen by, so that it lands elsewhere on the ring or table (Envoy moves
    /// on from the first choice when a retry host predicate rejects it): `hash` mixed with the try's number.
    public static func rehash(_ hash: UInt64, try number: Int) -> UInt64 {
        guard number > 0 else { return hash }
        var mixed = hash &+ UInt64(number) &* 0x9E37_79B9_7F4A_7C15
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
