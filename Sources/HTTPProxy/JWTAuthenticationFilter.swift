import Authorization
import HTTPTypes
import NIOCore
import Routing
import SwiftProtobuf

/// Envoy's `envoy.filters.http.jwt_authn`: the requirement its rules pick for the request is checked
/// against the tokens the request carries, with the keys of each provider's local JWKS. A request
/// that does not meet it is answered here, as Envoy answers: 401 (403 for a token of other audiences)
/// with jwt_verify_lib's status as the body, `www-authenticate: Bearer realm="<request URI>"` (with
/// `error="invalid_token"` unless the token was missing) and response code details
/// `jwt_authn_access_denied{…}`. A request that meets it goes on with what verified tokens leave:
/// the token's header removed (unless `forward`), `forward_payload_header`, `claim_to_headers`, the
/// payload (and header) in dynamic metadata under `envoy.filters.http.jwt_authn`, and Istio's
/// `istio_authn` view of the claims (``IstioAuthnMetadata``). The request is held only while a remote
/// JWKS is fetched for the first time (``RemoteJWKS``); otherwise the keys are in memory.
final class JWTAuthenticationFilter: HTTPFilter {
    private let config: JWTAuthenticationConfig
    /// The request ended while held for a JWKS fetch.
    private var ended = false

    init(config: JWTAuthenticationConfig) {
        self.config = config
    }

    func decodeHeaders(_ request: inout HTTPRequest, route: RouteDecision?, stream: any HTTPFilterCallbacks) -> HTTPFilterStatus {
        if config.bypassesCORSPreflight, Self.isCORSPreflight(request) { return .proceed }
        guard let requirement = config.requirement(for: request) else { return .proceed }
        let now = config.now()
        // Remote key sets due are fetched again; the request waits only for sets never fetched yet.
        var waits: [EventLoopFuture<Void>] = []
        for remote in config.remoteKeySets {
            if let refreshing = remote.refresh(through: stream, now: now), remote.keys == nil { waits.append(refreshing) }
        }
        guard !waits.isEmpty else { return verify(&request, requirement, now: now, stream: stream) }
        let held = request
        EventLoopFuture.andAllComplete(waits, on: stream.eventLoop).assumeIsolated().whenComplete { [self] _ in
            guard !ended else { return }
            var request = held
            switch verify(&request, requirement, now: config.now(), stream: stream) {
            case .proceed: stream.resume { $0 = request }
            case .reply(let reply): stream.reply(reply)
            case .hold: break
            }
        }
        return .hold
    }

    func requestEnded() { ended = true }

    /// Checks `requirement` now: on, with what verified tokens leave, or the failure's reply.
    private func verify(_ request: inout HTTPRequest, _ requirement: JWTRequirement, now: Int64, stream: any HTTPFilterCallbacks) -> HTTPFilterStatus {
        var verification = JWTVerification(request: request, providers: config.providers, now: now)
        if let failure = requirement.check(&verification) {
            stream.setResponseCodeDetails(failure.responseCodeDetails)
            return .reply(reply(for: failure, request: request))
        }
        apply(verification.verified, to: &request, metadata: &stream.metadata)
        return .proceed
    }

    /// What the verified tokens leave on the request and in its metadata.
    private func apply(_ verified: [JWTVerification.Verified], to request: inout HTTPRequest, metadata: inout DynamicMetadata) {
        var envoyMetadata = metadata[JWTAuthenticationConfig.metadataNamespace] ?? Google_Protobuf_Struct()
        for entry in verified {
            let provider = entry.provider
            if !provider.forwards, case .header(let name, _) = entry.found.location {
                request.headerFields[name] = nil
            }
            if let header = provider.forwardPayloadHeader {
                var payload = String(entry.token.encodedPayload)
                if provider.padsForwardPayloadHeader {
                    payload += String(repeating: "=", count: (4 - payload.utf8.count % 4) % 4)
                }
                request.headerFields[header] = payload
            }
            for claimHeader in provider.claimHeaders {
                if let value = Self.headerValue(entry.token.payload.fields[claimHeader.claim]) {
                    request.headerFields[claimHeader.header] = value
                }
            }
            if let key = provider.payloadInMetadata {
                envoyMetadata.fields[key] = Google_Protobuf_Value(structValue: provider.metadataPayload(entry.token))
            }
            if let key = provider.headerInMetadata {
                envoyMetadata.fields[key] = Google_Protobuf_Value(structValue: entry.token.header)
            }
        }
        if !envoyMetadata.fields.isEmpty { metadata[JWTAuthenticationConfig.metadataNamespace] = envoyMetadata }
        if let first = verified.first {
            metadata[IstioAuthnMetadata.filterName] = IstioAuthnMetadata.of(first.token)
        }
    }

    /// The local reply for `failure`.
    private func reply(for failure: JWTFailure, request: HTTPRequest) -> HTTPLocalReply {
        var challenge = "Bearer realm=\"\(Self.originalURI(request))\""
        if failure != .missing { challenge += ", error=\"invalid_token\"" }
        var headers = HTTPFields()
        headers[.wwwAuthenticate] = challenge
        return HTTPLocalReply(status: .init(code: failure.status), body: config.stripsFailureResponse ? "" : failure.message,
                              flags: [], grpcStatus: nil, headers: headers)
    }

    /// Envoy's original URI for the realm: `x-forwarded-proto` (else the request's scheme), host, path.
    static func originalURI(_ request: HTTPRequest) -> String {
        let scheme = request.headerFields[HTTPField.Name("x-forwarded-proto")!] ?? request.scheme ?? "http"
        return "\(scheme)://\(request.authority ?? "")\(request.path ?? "")"
    }

    /// A claim as a header value: strings as they are, numbers and booleans written out, a list of
    /// those joined with commas; objects are not copied.
    static func headerValue(_ value: Google_Protobuf_Value?) -> String? {
        switch value?.kind {
        case .stringValue(let text)?: return text
        case .boolValue(let flag)?: return flag ? "true" : "false"
        case .numberValue(let number)?:
            if number.rounded(.towardZero) == number, abs(number) < 9.2e18 { return String(Int64(number)) }
            return String(number)
        case .listValue(let list)?:
            let parts = list.values.compactMap { element -> String? in
                if case .listValue = element.kind { return nil }
                return headerValue(element)
            }
            return parts.isEmpty ? nil : parts.joined(separator: ",")
        default: return nil
        }
    }

    /// An `OPTIONS` request with `origin` and `access-control-request-method`.
    static func isCORSPreflight(_ request: HTTPRequest) -> Bool {
        request.method == .options && request.headerFields[.origin] != nil
            && request.headerFields[HTTPField.Name("access-control-request-method")!] != nil
    }
}
