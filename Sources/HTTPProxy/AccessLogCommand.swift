#if canImport(Glibc)
import Glibc
#endif
import HTTPTypes

/// One of Envoy's command operators in an access log format (`%REQ(:METHOD)%`, `%DURATION%`), parsed once
/// when the configuration is decoded, with its optional maximum length (`%REQ(USER-AGENT):10%`).
public struct AccessLogCommand: Sendable, Equatable {
    /// A header a `REQ`, `RESP` or `TRAILER` operator reads: a pseudo-header of the request, or a field.
    public enum Header: Sendable, Equatable {
        case method
        case path
        case authority
        case scheme
        case field(HTTPField.Name)
    }

    /// What the operator prints.
    public enum Operator: Sendable, Equatable {
        case startTime(StartTimeFormat)
        /// `REQ(X?Y)`: the request header `X`, else `Y`.
        case requestHeader(Header, alternative: Header?)
        case responseHeader(Header, alternative: Header?)
        case responseTrailer(Header, alternative: Header?)
        case `protocol`
        case responseCode
        case responseFlags
        case responseCodeDetails
        case bytesReceived
        case bytesSent
        case duration
        case requestDuration
        case responseDuration
        case responseTransmitDuration
        case upstreamHost
        case upstreamCluster
        case upstreamLocalAddress
        case downstreamLocalAddress
        case downstreamLocalAddressWithoutPort
        case downstreamLocalPort
        case downstreamRemoteAddress
        case downstreamRemoteAddressWithoutPort
        case downstreamRemotePort
        case routeName
        case downstreamPeerURISAN
        /// The TLS server name (SNI) the client asked for.
        case requestedServerName
        case downstreamLocalURISAN
        case grpcStatusNumber
        case hostname(String)
        /// An operator Envoy has whose data Capstan does not record (yet): it prints `-`, as Envoy does
        /// for a value it does not know, and is listed as not acted on.
        case withoutData(String)
    }

    public var op: Operator
    /// `:N` after the operator: the value is cut to at most this many bytes.
    public var maxLength: Int?

    public init(_ op: Operator, maxLength: Int? = nil) {
        self.op = op
        self.maxLength = maxLength
    }

    /// Whether the operator's value is a number, which a JSON format keeps as a number.
    var isNumeric: Bool {
        switch op {
        case .responseCode, .bytesReceived, .bytesSent, .duration, .requestDuration, .responseDuration,
             .responseTransmitDuration, .downstreamLocalPort, .downstreamRemotePort, .grpcStatusNumber:
            return true
        default:
            return false
        }
    }

    /// Operators without an argument, by name.
    static let simple: [String: Operator] = [
        "PROTOCOL": .protocol, "RESPONSE_CODE": .responseCode, "RESPONSE_FLAGS": .responseFlags,
        "RESPONSE_CODE_DETAILS": .responseCodeDetails, "BYTES_RECEIVED": .bytesReceived, "BYTES_SENT": .bytesSent,
        "DURATION": .duration, "REQUEST_DURATION": .requestDuration, "RESPONSE_DURATION": .responseDuration,
        "RESPONSE_TX_DURATION": .responseTransmitDuration, "UPSTREAM_HOST": .upstreamHost,
        "UPSTREAM_CLUSTER": .upstreamCluster, "UPSTREAM_CLUSTER_RAW": .upstreamCluster,
        "UPSTREAM_LOCAL_ADDRESS": .upstreamLocalAddress, "DOWNSTREAM_LOCAL_ADDRESS": .downstreamLocalAddress,
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT": .downstreamLocalAddressWithoutPort, "DOWNSTREAM_LOCAL_PORT": .downstreamLocalPort,
        "DOWNSTREAM_REMOTE_ADDRESS": .downstreamRemoteAddress,
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": .downstreamRemoteAddressWithoutPort,
        "DOWNSTREAM_REMOTE_PORT": .downstreamRemotePort,
        // No proxy protocol or trusted X-Forwarded-For hops: the direct peer is the remote address.
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS": .downstreamRemoteAddress,
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": .downstreamRemoteAddressWithoutPort,
        "ROUTE_NAME": .routeName, "DOWNSTREAM_PEER_URI_SAN": .downstreamPeerURISAN, "REQUESTED_SERVER_NAME": .requestedServerName,
        "DOWNSTREAM_LOCAL_URI_SAN": .downstreamLocalURISAN, "GRPC_STATUS_NUMBER": .grpcStatusNumber,
    ]

    /// Envoy's operators whose data Capstan does not have: they print `-`. Those that take an argument
    /// are marked.
    static let withoutData: [String: Bool] = [
        "UPSTREAM_TRANSPORT_FAILURE_REASON": false, "CONNECTION_TERMINATION_DETAILS": false,
        "CONNECTION_ID": false, "DOWNSTREAM_TLS_VERSION": false, "DOWNSTREAM_TLS_CIPHER": false,
        "DOWNSTREAM_TLS_SESSION_ID": false, "DOWNSTREAM_PEER_SUBJECT": false, "DOWNSTREAM_PEER_ISSUER": false,
        "DOWNSTREAM_PEER_DNS_SAN": false, "DOWNSTREAM_LOCAL_DNS_SAN": false, "DOWNSTREAM_LOCAL_SUBJECT": false,
        "DOWNSTREAM_PEER_FINGERPRINT_256": false, "DOWNSTREAM_PEER_SERIAL": false, "DOWNSTREAM_PEER_CERT": false,
        "UPSTREAM_TLS_VERSION": false, "UPSTREAM_PEER_URI_SAN": false, "UPSTREAM_LOCAL_URI_SAN": false,
        "VIRTUAL_CLUSTER_NAME": false, "UPSTREAM_REQUEST_ATTEMPT_COUNT": false, "RESPONSE_FLAGS_LONG": false,
        "DYNAMIC_METADATA": true, "CLUSTER_METADATA": true, "UPSTREAM_METADATA": true, "ROUTE_METADATA": true,
        "FILTER_STATE": true, "UPSTREAM_FILTER_STATE": true, "GRPC_STATUS": true, "ENVIRONMENT": true,
    ]

    /// The operator `name` with its argument (between the parentheses) and maximum length; `where` names
    /// it in refusals (`%FOO% at position 3`).
    static func parse(name: String, argument: String?, maxLength: Int?, where location: String) throws(AccessLogFormat.Error) -> Self {
        func noArgument(_ op: Operator) throws(AccessLogFormat.Error) -> Self {
            if argument != nil { throw .init("\(location): %\(name)% takes no argument") }
            return Self(op, maxLength: maxLength)
        }
        switch name {
        case "START_TIME":
            return Self(.startTime(try StartTimeFormat(argument, where: location)), maxLength: maxLength)
        case "REQ", "RESP", "TRAILER":
            guard let argument, !argument.isEmpty else {
                throw .init("\(location): %\(name)(...)% needs a header name")
            }
            let names = argument.split(separator: "?", omittingEmptySubsequences: false)
            guard names.count <= 2 else {
                throw .init("\(location): %\(name)(\(argument))% names more than one alternative header")
            }
            let main = try header(String(names[0]), where: location)
            let alternative = try names.count == 2 ? header(String(names[1]), where: location) : nil
            switch name {
            case "REQ": return Self(.requestHeader(main, alternative: alternative), maxLength: maxLength)
            case "RESP": return Self(.responseHeader(main, alternative: alternative), maxLength: maxLength)
            default: return Self(.responseTrailer(main, alternative: alternative), maxLength: maxLength)
            }
        case "HOSTNAME":
            return try noArgument(.hostname(hostname()))
        default:
            if let op = simple[name] { return try noArgument(op) }
            if let takesArgument = withoutData[name] {
                if !takesArgument { return try noArgument(.withoutData(name)) }
                return Self(.withoutData(argument.map { "\(name)(\($0))" } ?? name), maxLength: maxLength)
            }
            throw .init("\(location): %\(name)% is not a command operator Capstan knows")
        }
    }

    /// The machine's host name, read once per format (`%HOSTNAME%`).
    private static func hostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "-" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func header(_ name: String, where location: String) throws(AccessLogFormat.Error) -> Header {
        let lowered = name.lowercased()
        switch lowered {
        case ":method": return .method
        case ":path": return .path
        case ":authority", "host": return .authority
        case ":scheme": return .scheme
        default:
            guard !lowered.isEmpty, let field = HTTPField.Name(lowered) else {
                throw .init("\(location): \"\(name)\" is not a header name")
            }
            return .field(field)
        }
    }
}
