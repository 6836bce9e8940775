import HTTPTypes

/// What RBAC is asked about: a connection, and on an HTTP connection manager, one request on it. Made
/// per check from what the proxy already holds; the request is shared, not copied.
public struct AuthorizationRequest: Sendable {
    /// The verified peer certificate's SPIFFE ID, when the connection is mutual TLS.
    public var peerPrincipal: String?
    /// This proxy's own SPIFFE ID on the connection.
    public var localPrincipal: String?
    /// The connection's source (`source_ip`, `direct_remote_ip`; and `remote_ip`, since Capstan trusts no
    /// `x-forwarded-for` hops).
    public var sourceAddress: IPAddress?
    /// Where the connection was going: its original destination.
    public var destinationAddress: IPAddress?
    public var destinationPort: Int?
    /// The TLS server name (SNI) the client asked for; nil without TLS or without one (Envoy then
    /// matches `requested_server_name` against the empty string).
    public var requestedServerName: String?
    /// nil on a TCP connection (the network filter): header, path and HTTP metadata rules match nothing.
    public var request: HTTPRequest? {
        didSet { readRequest() }
    }
    public var metadata: DynamicMetadata

    public init(peerPrincipal: String? = nil, localPrincipal: String? = nil, sourceAddress: IPAddress? = nil,
                destinationAddress: IPAddress? = nil, destinationPort: Int? = nil, requestedServerName: String? = nil,
                request: HTTPRequest? = nil, metadata: DynamicMetadata = DynamicMetadata()) {
        self.requestedServerName = requestedServerName
        self.peerPrincipal = peerPrincipal
        self.localPrincipal = localPrincipal
        self.sourceAddress = sourceAddress
        self.destinationAddress = destinationAddress
        self.destinationPort = destinationPort
        self.request = request
        self.metadata = metadata
        readRequest()
    }

    // What every policy reads of the request, found once per check rather than once per policy; the
    // request itself is kept unwrapped (an empty one on a TCP connection), so that a header rule borrows
    // it instead of copying it (and retaining its storage) out of an optional.
    /// The request's path without its query string, as `url_path` tests it (`hasPath`: it has one).
    private(set) var pathWithoutQuery: Substring = ""
    private(set) var hasPath = false
    private(set) var isHTTP = false
    private(set) var headers = Self.noRequest

    private static let noRequest = HTTPRequest(method: .get, scheme: nil, authority: nil, path: nil)

    private mutating func readRequest() {
        isHTTP = request != nil
        headers = request ?? Self.noRequest
        hasPath = request?.path != nil
        pathWithoutQuery = request?.path.map { path in
            path.utf8.firstIndex(of: UInt8(ascii: "?")).map { path[..<$0] } ?? Substring(path)
        } ?? ""
    }
}
