import Configuration
import HTTPTypes
import XDS

/// Envoy's `RouteMatch`: the path specifier, then every header and query parameter matcher, then (if
/// asked) that the request is gRPC. All must hold.
public struct RouteMatch: Sendable {
    enum PathSpecifier: Sendable {
        /// `prefix`, tested against the whole `:path`, query included, as Envoy does.
        case prefix(StringMatcher, length: Int)
        /// `path`, tested against the path without its query.
        case path(StringMatcher)
        /// `safe_regex`, a full match of the path without its query (`case_sensitive` does not apply).
        case regex(RegularExpression)
        /// `path_separated_prefix`: the path without its query is the prefix, or the prefix and then `/`.
        case separatedPrefix(StringMatcher, length: Int)
    }

    let pathSpecifier: PathSpecifier
    let headers: [HeaderMatcher]
    let queryParameters: [QueryParameterMatcher]
    /// `grpc`: the request's content-type is `application/grpc`, possibly with a suffix (`application/grpc+proto`), as Envoy tells gRPC.
    let grpcOnly: Bool

    public init(_ proto: Envoy_Config_Route_V3_RouteMatch, path: String) throws(ConfigError) {
        // A match field outside Capstan's subset (runtime_fraction, tls_context, dynamic_metadata, filter_state)
        // would narrow which requests match: refused, not listed and ignored.
        if let unknown = UnknownFields.paths(in: proto).first {
            throw ConfigError(path: "\(path).\(unknown)", message: "a match field Capstan's subset of Envoy's API does not have (by its number): it would change which requests match")
        }
        // Envoy compares paths case-sensitively unless told otherwise.
        let ignoreCase = proto.hasCaseSensitive && !proto.caseSensitive.value
        switch proto.pathSpecifier {
        case .prefix(let prefix)?:
            pathSpecifier = .prefix(StringMatcher(.prefix(Array(prefix.utf8)), ignoreCase: ignoreCase), length: prefix.utf8.count)
        case .path(let exact)?:
            pathSpecifier = .path(StringMatcher(.exact(Array(exact.utf8)), ignoreCase: ignoreCase))
        case .safeRegex(let regex)?:
            pathSpecifier = .regex(try RegularExpression(regex, path: "\(path).safe_regex"))
        case .pathSeparatedPrefix(let prefix)?:
            guard prefix.hasPrefix("/"), !prefix.hasSuffix("/") || prefix == "/", !prefix.contains(where: { $0 == "?" || $0 == "#" }) else {
                throw ConfigError(path: "\(path).path_separated_prefix",
                                  message: "\"\(prefix)\" must start with /, not end with /, and hold no ? or #")
            }
            pathSpecifier = .separatedPrefix(StringMatcher(.prefix(Array(prefix.utf8)), ignoreCase: ignoreCase), length: prefix.utf8.count)
        case nil:
            throw ConfigError(path: path, message: "needs prefix, path, safe_regex or path_separated_prefix (connect_matcher and path_match_policy are not supported)")
        }
        var headers: [HeaderMatcher] = []
        for (index, header) in proto.headers.enumerated() {
            headers.append(try HeaderMatcher(header, path: "\(path).headers[\(index)]"))
        }
        self.headers = headers
        var queryParameters: [QueryParameterMatcher] = []
        for (index, parameter) in proto.queryParameters.enumerated() {
            queryParameters.append(try QueryParameterMatcher(parameter, path: "\(path).query_parameters[\(index)]"))
        }
        self.queryParameters = queryParameters
        grpcOnly = proto.hasGrpc
    }

    /// The length of the path the route's prefix matched (for `prefix_rewrite`); nil for other specifiers.
    var prefixLength: Int? {
        switch pathSpecifier {
        case .prefix(_, let length), .separatedPrefix(_, let length): length
        case .path, .regex: nil
        }
    }

    /// Whether the request matches; `path` is its whole `:path`, `pathOnly` that without query or fragment.
    public func matches(_ request: HTTPRequest, path: Substring, pathOnly: Substring) -> Bool {
        switch pathSpecifier {
        case .prefix(let matcher, _): guard matcher.matches(path) else { return false }
        case .path(let matcher): guard matcher.matches(pathOnly) else { return false }
        case .regex(let regex): guard regex.matchesWhole(pathOnly) else { return false }
        case .separatedPrefix(let matcher, let length):
            guard matcher.matches(pathOnly) else { return false }
            let rest = pathOnly.utf8.dropFirst(length)
            guard rest.isEmpty || rest.first == UInt8(ascii: "/") else { return false }
        }
        if grpcOnly {
            guard let contentType = request.headerFields[.contentType],
                  contentType == "application/grpc" || contentType.utf8.starts(with: "application/grpc+".utf8) else { return false }
        }
        for header in headers where !header.matches(request) { return false }
        if !queryParameters.isEmpty {
            let query = Self.query(of: path)
            for parameter in queryParameters where !parameter.matches(query: query) { return false }
        }
        return true
    }

    /// The path without its query and fragment.
    public static func pathOnly(_ path: Substring) -> Substring {
        path.utf8.firstIndex { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }.map { path[..<$0] } ?? path
    }

    /// The query: after the first `?`, up to a fragment.
    static func query(of path: Substring) -> Substring {
        guard let mark = path.utf8.firstIndex(of: UInt8(ascii: "?")) else { return "" }
        let query = path[path.index(after: mark)...]
        return query.utf8.firstIndex(of: UInt8(ascii: "#")).map { query[..<$0] } ?? query
    }
}
