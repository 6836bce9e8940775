#if canImport(Glibc)
import Glibc
#endif
import Configuration
import HTTPTypes
import NIOCore
import SwiftProtobuf
import XDS

/// One `providers` entry of `envoy.filters.http.jwt_authn` (istiod writes one per RequestAuthentication
/// `jwtRules` entry): where its tokens are found, the issuer, audiences and keys they must match, and
/// what a verified token leaves on the request.
struct JWTProvider: Sendable {
    /// A place a token is read from.
    enum Location: Sendable, Equatable {
        /// A header, after `prefix` (`Authorization: Bearer …`).
        case header(HTTPField.Name, prefix: String)
        /// A query parameter (`?access_token=…`).
        case query(String)
        /// A cookie.
        case cookie(String)
    }

    /// A token found in a request, and where.
    struct FoundToken {
        var token: Substring
        var location: Location
    }

    /// `claim_to_headers`: a verified claim copied into a request header.
    struct ClaimHeader: Sendable {
        var header: HTTPField.Name
        var claim: String
    }

    let name: String
    /// Empty: tokens of any issuer.
    let issuer: String
    /// Empty: tokens for any audience.
    let audiences: [String]
    /// Where the keys come from.
    enum KeySource: Sendable {
        case local(JSONWebKeySet)
        case remote(RemoteJWKS)
    }

    let keySource: KeySource
    /// `forward`: false (the default) removes the token's header before the upstream.
    let forwards: Bool
    /// `from_headers`, `from_params`, `from_cookies`; when none is given, Envoy's defaults:
    /// `Authorization: Bearer <token>` and the `access_token` query parameter.
    let locations: [Location]
    let forwardPayloadHeader: HTTPField.Name?
    let padsForwardPayloadHeader: Bool
    let payloadInMetadata: String?
    let headerInMetadata: String?
    /// `normalize_payload_in_metadata.space_delimited_claims`: string claims written as lists of their words.
    let spaceDelimitedClaims: Set<String>
    /// `clock_skew_seconds` (default 60).
    let clockSkew: Int64
    let claimHeaders: [ClaimHeader]

    static let defaultLocations: [Location] = [.header(.authorization, prefix: "Bearer "), .query("access_token")]

    /// Decodes a provider; `path` names it in refusals (`….providers["origins-0"]`), and fields
    /// accepted but not acted on are added to `notActedOn`.
    init(name: String, _ proto: Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtProvider, path: String,
         notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        self.name = name
        issuer = proto.issuer
        audiences = proto.audiences
        // Fields that narrow which tokens pass: ignoring them would accept what Envoy rejects.
        if proto.hasSubjects {
            throw ConfigError(path: "\(path).subjects", message: "is not supported: tokens of other subjects would be accepted")
        }
        if proto.requireExpiration {
            throw ConfigError(path: "\(path).require_expiration", message: "is not supported: tokens without exp would be accepted")
        }
        if proto.hasMaxLifetime {
            throw ConfigError(path: "\(path).max_lifetime", message: "is not supported: tokens living longer would be accepted")
        }
        switch proto.jwksSourceSpecifier {
        case .localJwks(let source)?:
            keySource = .local(try Self.localKeys(source, path: "\(path).local_jwks", notActedOn: &notActedOn))
        case .remoteJwks(let remote)?:
            keySource = .remote(try Self.remoteKeys(remote, path: "\(path).remote_jwks", notActedOn: &notActedOn))
        case nil:
            throw ConfigError(path: path, message: "needs local_jwks or remote_jwks")
        }
        forwards = proto.forward
        var locations: [Location] = []
        for (index, header) in proto.fromHeaders.enumerated() {
            guard let field = HTTPField.Name(header.name) else {
                throw ConfigError(path: "\(path).from_headers[\(index)].name", message: "\"\(header.name)\" is not a header name")
            }
            locations.append(.header(field, prefix: header.valuePrefix))
        }
        locations += proto.fromParams.map { .query($0) }
        locations += proto.fromCookies.map { .cookie($0) }
        self.locations = locations.isEmpty ? Self.defaultLocations : locations
        if proto.forwardPayloadHeader.isEmpty {
            forwardPayloadHeader = nil
        } else {
            guard let field = HTTPField.Name(proto.forwardPayloadHeader) else {
                throw ConfigError(path: "\(path).forward_payload_header", message: "\"\(proto.forwardPayloadHeader)\" is not a header name")
            }
            forwardPayloadHeader = field
        }
        padsForwardPayloadHeader = proto.padForwardPayloadHeader
        payloadInMetadata = proto.payloadInMetadata.isEmpty ? nil : proto.payloadInMetadata
        headerInMetadata = proto.headerInMetadata.isEmpty ? nil : proto.headerInMetadata
        spaceDelimitedClaims = Set(proto.normalizePayloadInMetadata.spaceDelimitedClaims)
        clockSkew = proto.clockSkewSeconds == 0 ? 60 : Int64(proto.clockSkewSeconds)
        var claimHeaders: [ClaimHeader] = []
        for (index, entry) in proto.claimToHeaders.enumerated() {
            guard let field = HTTPField.Name(entry.headerName) else {
                throw ConfigError(path: "\(path).claim_to_headers[\(index)].header_name", message: "\"\(entry.headerName)\" is not a header name")
            }
            claimHeaders.append(ClaimHeader(header: field, claim: entry.claimName))
        }
        self.claimHeaders = claimHeaders
        if !proto.failedStatusInMetadata.isEmpty {
            notActedOn.append(.init(path: "\(path).failed_status_in_metadata", reason: "a failed token's status is not written to dynamic metadata"))
        }
        if proto.hasJwtCacheConfig {
            notActedOn.append(.init(path: "\(path).jwt_cache_config", reason: "Capstan keeps no cache of verified tokens: each is verified"))
        }
        if proto.clearRouteCache_p {
            notActedOn.append(.init(path: "\(path).clear_route_cache", reason: "routes are chosen before HTTP filters run and not again: headers this filter adds do not re-route"))
        }
    }

    /// Every token in `request` at this provider's locations, in their order. Envoy verifies them all:
    /// a request with a good token and a bad one fails, lest the upstream read the bad one as verified.
    func findTokens(in request: HTTPRequest) -> [FoundToken] {
        var found: [FoundToken] = []
        for location in locations {
            switch location {
            case .header(let name, let prefix):
                for field in request.headerFields[fields: name] {
                    let value = field.value
                    guard value.hasPrefix(prefix) else { continue }
                    let token = value.dropFirst(prefix.count).drop { $0 == " " }
                    if !token.isEmpty { found.append(FoundToken(token: token, location: location)) }
                }
            case .query(let parameter):
                guard let path = request.path, let mark = path.firstIndex(of: "?") else { continue }
                for pair in path[path.index(after: mark)...].split(separator: "&") {
                    let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                    if parts.count == 2, parts[0] == parameter, !parts[1].isEmpty {
                        found.append(FoundToken(token: parts[1], location: location))
                    }
                }
            case .cookie(let cookie):
                for field in request.headerFields[fields: .cookie] {
                    for pair in field.value.split(separator: ";") {
                        let parts = pair.drop { $0 == " " }.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                        if parts.count == 2, parts[0] == cookie, !parts[1].isEmpty {
                            found.append(FoundToken(token: parts[1], location: location))
                        }
                    }
                }
            }
        }
        return found
    }

    /// Envoy's checks of a found token, in its order: parse, issuer, time, audiences, signature.
    /// `audiences` replaces the provider's (`provider_and_audiences`).
    func verify(_ found: FoundToken, audiences: [String]? = nil, now: Int64) throws(JWTFailure) -> JSONWebToken {
        let token = try JSONWebToken(found.token)
        if !issuer.isEmpty, token.issuer != issuer { throw .unknownIssuer }
        try token.checkTime(now: now, skew: clockSkew)
        let allowed = audiences ?? self.audiences
        if !allowed.isEmpty {
            let wanted = Set(allowed.map(Self.normalizedAudience))
            guard token.audiences.contains(where: { wanted.contains(Self.normalizedAudience($0)) }) else { throw .audienceNotAllowed }
        }
        switch keySource {
        case .local(let keys): try keys.verify(token)
        case .remote(let remote):
            guard let keys = remote.keys else { throw .jwksFetchFailed }
            try keys.verify(token)
        }
        return token
    }

    /// Envoy compares audiences without their `http://` or `https://` and a trailing `/`.
    static func normalizedAudience(_ audience: String) -> Substring {
        var value = Substring(audience)
        for scheme in ["http://", "https://"] where value.hasPrefix(scheme) { value = value.dropFirst(scheme.count) }
        if value.hasSuffix("/") { value = value.dropLast() }
        return value
    }

    /// The payload as written to metadata: `space_delimited_claims` split into lists.
    func metadataPayload(_ token: JSONWebToken) -> Google_Protobuf_Struct {
        guard !spaceDelimitedClaims.isEmpty else { return token.payload }
        var payload = token.payload
        for claim in spaceDelimitedClaims {
            guard case .stringValue(let text)? = payload.fields[claim]?.kind else { continue }
            payload.fields[claim] = Google_Protobuf_Value(listValue: Google_Protobuf_ListValue(values: text.split(separator: " ").map { Google_Protobuf_Value(stringValue: String($0)) }))
        }
        return payload
    }

    /// `local_jwks`: inline or from a file. A set that does not parse, or has no key Capstan can use,
    /// is listed, and the configuration stands with every token of the provider failing, as Envoy does.
    private static func localKeys(_ source: Envoy_Config_Core_V3_DataSource, path: String,
                                  notActedOn: inout [FieldNotActedOn]) throws(ConfigError) -> JSONWebKeySet {
        let json: String
        switch source.specifier {
        case .inlineString(let text)?: json = text
        case .inlineBytes(let bytes)?: json = String(decoding: bytes, as: UTF8.self)
        case .filename(let file)?:
            guard let text = readFile(file) else {
                throw ConfigError(path: "\(path).filename", message: "\"\(file)\" cannot be read (errno \(errno))")
            }
            json = text
        case .environmentVariable?:
            throw ConfigError(path: "\(path).environment_variable", message: "is not supported: give the JWKS inline or in a file")
        case nil:
            throw ConfigError(path: path, message: "needs inline_string, inline_bytes or filename")
        }
        do {
            let keys = try JSONWebKeySet(json: json)
            if keys.keys.isEmpty {
                notActedOn.append(.init(path: path, reason: "the JWKS has no key Capstan can use: every token of this provider fails verification"))
            }
            return keys
        } catch {
            notActedOn.append(.init(path: path, reason: "the JWKS \(error): every token of this provider fails verification"))
            return JSONWebKeySet(keys: [])
        }
    }

    /// `remote_jwks`: fetched through the named cluster (``RemoteJWKS``).
    private static func remoteKeys(_ remote: Envoy_Extensions_Filters_Http_JwtAuthn_V3_RemoteJwks, path: String,
                                   notActedOn: inout [FieldNotActedOn]) throws(ConfigError) -> RemoteJWKS {
        let uri = remote.httpUri
        guard case .cluster(let cluster)? = uri.httpUpstreamType, !cluster.isEmpty else {
            throw ConfigError(path: "\(path).http_uri.cluster", message: "is required: the JWKS is fetched through one of the proxy's clusters")
        }
        let schemeEnd = uri.uri.firstRange(of: "://")
        guard let schemeEnd, ["http", "https"].contains(uri.uri[..<schemeEnd.lowerBound]) else {
            throw ConfigError(path: "\(path).http_uri.uri", message: "\"\(uri.uri)\" is not an http:// or https:// URI")
        }
        let rest = uri.uri[schemeEnd.upperBound...]
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = String(rest[..<slash])
        let requestPath = slash == rest.endIndex ? "/" : String(rest[slash...])
        guard !authority.isEmpty else {
            throw ConfigError(path: "\(path).http_uri.uri", message: "\"\(uri.uri)\" has no host")
        }
        // The cluster's transport socket decides TLS; the request names the URI's scheme and host.
        let request = HTTPRequest(method: .get, scheme: String(uri.uri[..<schemeEnd.lowerBound]), authority: authority, path: requestPath)
        let timeout: TimeAmount = uri.hasTimeout && (uri.timeout.seconds > 0 || uri.timeout.nanos > 0)
            ? .nanoseconds(uri.timeout.seconds * 1_000_000_000 + Int64(uri.timeout.nanos)) : .seconds(1)
        let cacheDuration: Int64 = remote.hasCacheDuration && remote.cacheDuration.seconds > 0 ? remote.cacheDuration.seconds : 600
        if remote.hasAsyncFetch {
            notActedOn.append(.init(path: "\(path).async_fetch", reason: "the JWKS is fetched when a request first needs it, and that request waits for it"))
        }
        return RemoteJWKS(request: request, cluster: cluster, timeout: timeout, cacheDuration: cacheDuration)
    }

    /// A JWKS file's text (at most 1 MiB), read when the configuration is decoded, as Envoy reads it.
    private static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while bytes.count <= 1 << 20 {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count < 0 { return nil }
            if count == 0 { return String(decoding: bytes, as: UTF8.self) }
            bytes += chunk[..<count]
        }
        return nil
    }
}
