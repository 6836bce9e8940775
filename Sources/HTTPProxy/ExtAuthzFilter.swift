import Authorization
import FoundationEssentials
import HTTPTypes
import NIOCore
import NIOHTTPTypes
import Routing
import SwiftProtobuf
import XDS

/// Envoy's ext_authz filter for one request: the request is held while the authorization service
/// (`envoy.service.auth.v3.Authorization/Check`, over the configured cluster) decides. Allowed: the
/// service's header changes are made and the request goes on. Denied: answered with the service's
/// status (403 by default), headers and body, `UAEX`, details `ext_authz_denied`. No answer (error,
/// timeout, no cluster or endpoint): on with `failure_mode_allow`, else `status_on_error`, `UAEX`,
/// `ext_authz_error`. With `with_request_body`, the check waits for the body (up to
/// `max_request_bytes`) and carries it. Made by the registry for each request on a connection manager
/// that has it.
final class ExtAuthzFilter: HTTPFilter {
    static let failureModeAllowedHeader = HTTPField.Name("x-envoy-auth-failure-mode-allowed")!

    private let config: ExtAuthzFilterConfig
    /// The check in flight, while the request is held.
    private var call: GRPCUnaryCall?
    /// With `with_request_body`: the request whose body is being gathered for its check.
    private var awaitingBody: HTTPRequest?
    private var body: [UInt8] = []

    init(config: ExtAuthzFilterConfig) { self.config = config }

    func decodeHeaders(_ request: inout HTTPRequest, route: RouteDecision?, stream: any HTTPFilterCallbacks) -> HTTPFilterStatus {
        if let enabled = config.enabledMetadata, !enabled.matches(stream.metadata) { return .proceed }
        if let settings = config.requestBody {
            // Envoy answers 413 at once when the declared body is too long to be sent whole.
            if !settings.allowsPartial, let length = request.headerFields[.contentLength].flatMap({ Int($0) }), length > settings.maxBytes {
                stream.setResponseCodeDetails("request_payload_too_large")
                return .reply(HTTPLocalReply(status: .contentTooLarge, body: "Payload Too Large", flags: [], grpcStatus: nil))
            }
            awaitingBody = request
            return .hold
        }
        var changes: [(inout HTTPRequest) -> Void] = []
        let status = check(request, body: nil, changes: &changes, stream: stream)
        for change in changes { change(&request) }
        return status
    }

    func decodeHeldPart(_ part: HTTPRequestPart, stream: any HTTPFilterCallbacks) {
        guard let request = awaitingBody, let settings = config.requestBody else { return }
        var partial = false
        switch part {
        case .head: return
        case .body(let bytes):
            body += bytes.readableBytesView.prefix(settings.maxBytes + 1 - body.count)
            guard body.count > settings.maxBytes else { return }
            guard settings.allowsPartial else {
                awaitingBody = nil
                stream.setResponseCodeDetails("request_payload_too_large")
                return stream.reply(HTTPLocalReply(status: .contentTooLarge, body: "Payload Too Large", flags: [], grpcStatus: nil))
            }
            body.removeLast(body.count - settings.maxBytes)
            partial = true
        case .end:
            break
        }
        awaitingBody = nil
        var changes: [(inout HTTPRequest) -> Void] = []
        let status = check(request, body: (body, partial), changes: &changes, stream: stream)
        body = []
        Self.go(on: status, changes: changes, stream: stream)
    }

    func requestEnded() {
        call?.cancel()
        call = nil
        awaitingBody = nil
    }

    /// Asks the service about `request` (with `body`, when the filter waited for it): held until the
    /// answer comes, unless the call ended before it was made; then decided here.
    private func check(_ request: HTTPRequest, body: (bytes: [UInt8], partial: Bool)?, changes: inout [(inout HTTPRequest) -> Void],
                       stream: any HTTPFilterCallbacks) -> HTTPFilterStatus {
        guard case let (cluster, pools)? = stream.upstream(named: config.clusterName) else {
            return decision(.failure(.init(reason: "no cluster \(config.clusterName)")), changes: &changes, stream: stream)
        }
        guard case .success(let endpoint) = cluster.chooseEndpoint(for: stream.downstream, hash: nil) else {
            return decision(.failure(.init(reason: "no healthy endpoint in \(config.clusterName)")), changes: &changes, stream: stream)
        }
        let check = Self.checkRequest(for: request, body: body, packsAsBytes: config.requestBody?.packsAsBytes ?? false, stream: stream)
        // The call may end before it is made (no connection to be had): then the decision is made here.
        var deciding = true
        var early: Result<Envoy_Service_Auth_V3_CheckResponse, ExternalAuthorizationService.CheckFailure>?
        call = config.service.check(check, cluster: cluster, endpoint: endpoint, pools: pools) { [self] outcome in
            call = nil
            if deciding { early = outcome; return }
            var changes: [(inout HTTPRequest) -> Void] = []
            Self.go(on: decision(outcome, changes: &changes, stream: stream), changes: changes, stream: stream)
        }
        deciding = false
        if let early {
            call = nil
            return decision(early, changes: &changes, stream: stream)
        }
        return .hold
    }

    /// A held request goes on (with `changes`) or is answered, as decided.
    private static func go(on status: HTTPFilterStatus, changes: [(inout HTTPRequest) -> Void], stream: any HTTPFilterCallbacks) {
        switch status {
        case .proceed where changes.isEmpty: stream.resume()
        case .proceed: stream.resume { request in for change in changes { change(&request) } }
        case .reply(let reply): stream.reply(reply)
        case .hold: break
        }
    }

    // MARK: Deciding

    /// What the service's answer means for the request; the changes to make to its headers if it goes on.
    private func decision(_ outcome: Result<Envoy_Service_Auth_V3_CheckResponse, ExternalAuthorizationService.CheckFailure>,
                          changes: inout [(inout HTTPRequest) -> Void], stream: any HTTPFilterCallbacks) -> HTTPFilterStatus {
        let counters = config.counters.load()
        guard case .success(let response) = outcome else {
            counters?.count(.error)
            if config.failureModeAllow {
                counters?.count(.failureModeAllowed)
                if config.failureModeAllowHeaderAdd {
                    changes.append { $0.headerFields[Self.failureModeAllowedHeader] = "true" }
                }
                return .proceed
            }
            stream.addFlags(.unauthorizedExternalService)
            stream.setResponseCodeDetails("ext_authz_error")
            return .reply(HTTPLocalReply(status: config.statusOnError, body: "", flags: .unauthorizedExternalService,
                                         grpcStatus: Self.grpcStatus(for: config.statusOnError)))
        }
        guard response.status.code == 0 else {
            counters?.count(.denied)
            let denied = response.deniedResponse
            var status = HTTPResponse.Status.forbidden
            if denied.hasStatus, denied.status.code.rawValue >= 100 { status = HTTPResponse.Status(code: denied.status.code.rawValue) }
            var headers = HTTPFields()
            for option in denied.headers { Self.apply(option, to: &headers) }
            stream.addFlags(.unauthorizedExternalService)
            stream.setResponseCodeDetails("ext_authz_denied")
            return .reply(HTTPLocalReply(status: status, body: denied.body, flags: .unauthorizedExternalService,
                                         grpcStatus: Self.grpcStatus(for: status), headers: headers))
        }
        counters?.count(.ok)
        let allowed = response.okResponse
        if !allowed.headers.isEmpty || !allowed.headersToRemove.isEmpty {
            changes.append { request in
                for option in allowed.headers { Self.apply(option, to: &request.headerFields, onlyAppendsToPresent: true) }
                for text in allowed.headersToRemove {
                    // Envoy keeps pseudo-headers and host whatever the service says.
                    guard let name = HTTPField.Name(text), name.canonicalName != "host" else { continue }
                    request.headerFields[values: name] = []
                }
            }
        }
        return .proceed
    }

    /// One of the service's headers, added as its `append` (true: another value; false: in place of
    /// those there) or, without it, its `append_action` says. As in Envoy, `append: true` on a request
    /// header (`onlyAppendsToPresent`) adds a value only to a header the request has. Pseudo-headers,
    /// `host` and invalid names are left alone, as Envoy leaves them.
    static func apply(_ option: Envoy_Config_Core_V3_HeaderValueOption, to fields: inout HTTPFields, onlyAppendsToPresent: Bool = false) {
        guard let name = HTTPField.Name(option.header.key), name.canonicalName != "host" else { return }
        let value = option.header.value
        let field = HTTPField(name: name, value: value)
        if option.hasAppend {
            if !option.append.value {
                fields[values: name] = [value]
            } else if !onlyAppendsToPresent || fields.contains(name) {
                fields.append(field)
            }
            return
        }
        switch option.appendAction {
        case .addIfAbsent: if !fields.contains(name) { fields.append(field) }
        case .overwriteIfExistsOrAdd: fields[values: name] = [value]
        case .overwriteIfExists: if fields.contains(name) { fields[values: name] = [value] }
        case .appendIfExistsOrAdd, .UNRECOGNIZED: fields.append(field)
        }
    }

    /// A gRPC request answered locally gets the gRPC status Envoy maps the HTTP status to.
    static func grpcStatus(for status: HTTPResponse.Status) -> Int {
        switch status.code {
        case 400: 13
        case 401: 16
        case 403: 7
        case 404: 12
        case 429, 502, 503, 504: 14
        default: 2
        }
    }

    // MARK: The check

    /// What the service is told: the connection's peers (addresses, principals) and the request's
    /// method, path, host, scheme, protocol, id and headers (pseudo-headers included, lower-case names,
    /// repeated ones joined by commas, as Envoy sends them), and its body when the filter waited for it.
    static func checkRequest(for request: HTTPRequest, body: (bytes: [UInt8], partial: Bool)? = nil, packsAsBytes: Bool = false,
                             stream: any HTTPFilterCallbacks) -> Envoy_Service_Auth_V3_CheckRequest {
        let connection = stream.downstream
        var check = ExternalAuthorizationService.checkRequest(for: connection)
        var http = Envoy_Service_Auth_V3_AttributeContext.HttpRequest()
        http.method = request.method.rawValue
        http.path = request.path ?? ""
        http.host = request.authority ?? ""
        http.scheme = request.scheme ?? (connection.isTLS ? "https" : "http")
        http.protocol = stream.protocolName
        http.id = request.headerFields[ForwardedHeaders.requestID] ?? ""
        var headers: [String: String] = [":method": http.method, ":path": http.path, ":authority": http.host, ":scheme": http.scheme]
        for field in request.headerFields {
            let name = field.name.canonicalName
            if let earlier = headers[name] { headers[name] = "\(earlier),\(field.value)" } else { headers[name] = field.value }
        }
        if let length = request.headerFields[.contentLength], let size = Int64(length) { http.size = size }
        if let body {
            // Envoy tells the service whether the body was cut at max_request_bytes.
            headers["x-envoy-auth-partial-body"] = body.partial ? "true" : "false"
            if packsAsBytes { http.rawBody = Data(body.bytes) } else { http.body = String(decoding: body.bytes, as: UTF8.self) }
        }
        http.headers = headers
        check.attributes.request.http = http
        return check
    }
}
