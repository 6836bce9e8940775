import Authorization
import HTTPTypes
import NIOCore
import Routing
import SwiftProtobuf
import XDS

/// Envoy's ext_authz filter for one request: the request is held while the authorization service
/// (`envoy.service.auth.v3.Authorization/Check`, over the configured cluster) decides. Allowed: the
/// service's header changes are made and the request goes on. Denied: answered with the service's
/// status (403 by default), headers and body, `UAEX`, details `ext_authz_denied`. No answer (error,
/// timeout, no cluster or endpoint): on with `failure_mode_allow`, else `status_on_error`, `UAEX`,
/// `ext_authz_error`. Made by the registry for each request on a connection manager that has it.
final class ExtAuthzFilter: HTTPFilter {
    static let checkPath = "/envoy.service.auth.v3.Authorization/Check"
    static let failureModeAllowedHeader = HTTPField.Name("x-envoy-auth-failure-mode-allowed")!

    private let config: ExtAuthzFilterConfig
    /// The check in flight, while the request is held.
    private var call: GRPCUnaryCall?

    init(config: ExtAuthzFilterConfig) { self.config = config }

    func decodeHeaders(_ request: inout HTTPRequest, route: RouteDecision?, stream: any HTTPFilterCallbacks) -> HTTPFilterStatus {
        if let enabled = config.enabledMetadata, !enabled.matches(stream.metadata) { return .proceed }
        guard case let (cluster, pools)? = stream.upstream(named: config.clusterName) else {
            return decision(.failed("no cluster \(config.clusterName)"), request: &request, stream: stream)
        }
        guard case .success(let endpoint) = cluster.chooseEndpoint(for: stream.downstream, hash: nil) else {
            return decision(.failed("no healthy endpoint in \(config.clusterName)"), request: &request, stream: stream)
        }
        let message: [UInt8]
        do {
            message = try Self.checkRequest(for: request, stream: stream).serializedBytes()
        } catch {
            cluster.requestEnded(at: endpoint)
            return decision(.failed("CheckRequest not serialized: \(error)"), request: &request, stream: stream)
        }
        // The call may end before it is made (no connection to be had): then the decision is made here.
        var deciding = true
        var early: GRPCUnaryCall.Outcome?
        call = GRPCUnaryCall(path: Self.checkPath, authority: config.authority, message: message, timeout: config.timeout,
                             to: endpoint, of: cluster, pools: pools) { [self] outcome in
            call = nil
            if deciding { early = outcome; return }
            var changes: [(inout HTTPRequest) -> Void] = []
            switch decision(outcome, changes: &changes, stream: stream) {
            case .proceed where changes.isEmpty: stream.resume()
            case .proceed: stream.resume { request in for change in changes { change(&request) } }
            case .reply(let reply): stream.reply(reply)
            case .hold: break
            }
        }
        deciding = false
        if let early {
            call = nil
            return decision(early, request: &request, stream: stream)
        }
        return .hold
    }

    func requestEnded() {
        call?.cancel()
        call = nil
    }

    // MARK: Deciding

    private func decision(_ outcome: GRPCUnaryCall.Outcome, request: inout HTTPRequest, stream: any HTTPFilterCallbacks) -> HTTPFilterStatus {
        var changes: [(inout HTTPRequest) -> Void] = []
        let status = decision(outcome, changes: &changes, stream: stream)
        for change in changes { change(&request) }
        return status
    }

    /// What the service's answer means for the request; the changes to make to its headers if it goes on.
    private func decision(_ outcome: GRPCUnaryCall.Outcome, changes: inout [(inout HTTPRequest) -> Void],
                          stream: any HTTPFilterCallbacks) -> HTTPFilterStatus {
        let counters = config.counters.load()
        guard case .ok(let bytes) = outcome,
              let response = try? Envoy_Service_Auth_V3_CheckResponse(serializedBytes: bytes) else {
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
                for option in allowed.headers { Self.apply(option, to: &request.headerFields) }
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
    /// those there) or, without it, its `append_action` says. Pseudo-headers, `host` and invalid names
    /// are left alone, as Envoy leaves them.
    static func apply(_ option: Envoy_Config_Core_V3_HeaderValueOption, to fields: inout HTTPFields) {
        guard let name = HTTPField.Name(option.header.key), name.canonicalName != "host" else { return }
        let value = option.header.value
        let field = HTTPField(name: name, value: value)
        if option.hasAppend {
            if option.append.value { fields.append(field) } else { fields[values: name] = [value] }
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
    /// repeated ones joined by commas, as Envoy sends them).
    static func checkRequest(for request: HTTPRequest, stream: any HTTPFilterCallbacks) -> Envoy_Service_Auth_V3_CheckRequest {
        let connection = stream.downstream
        var check = Envoy_Service_Auth_V3_CheckRequest()
        check.attributes.source = peer(connection.remoteAddress, principal: connection.peerPrincipal)
        check.attributes.destination = peer(connection.localAddress, principal: connection.localPrincipal)
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
        http.headers = headers
        check.attributes.request.http = http
        return check
    }

    private static func peer(_ address: SocketAddress?, principal: String?) -> Envoy_Service_Auth_V3_AttributeContext.Peer {
        var peer = Envoy_Service_Auth_V3_AttributeContext.Peer()
        if let address, let ip = address.ipAddress {
            peer.address.socketAddress.address = ip
            peer.address.socketAddress.portValue = UInt32(address.port ?? 0)
        }
        peer.principal = principal ?? ""
        return peer
    }
}
