import Authorization
import Configuration
import Foundation
import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTP2
import NIOHTTPTypes
import NIOHTTPTypesHTTP2
import SwiftProtobuf
import Testing
import XDS
@testable import HTTPProxy

/// The ext_authz filter in the connection manager, on `EmbeddedChannel`s. The authorization service is
/// an HTTP/2 server pipeline on an embedded channel of its own, whose bytes the test carries to and from
/// the proxy's connection to the `authz` cluster: allowed requests go upstream with the service's
/// headers, denied ones are answered with its status and body, failures follow `failure_mode_allow`,
/// and only requests the shadow RBAC filter marks are checked when `filter_enabled_metadata` says so.
@Suite struct ExtAuthzFilterTests {
    typealias Fixture = HTTPStreamHandlerTests.Fixture
    typealias TestCluster = HTTPStreamHandlerTests.TestCluster

    static let extAuthzType = "\"@type\": \"type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz\""
    static let rbacType = "\"@type\": \"type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC\""

    /// ext_authz (`extra` added to its configuration) after istiod's shadow RBAC filter when `shadow`,
    /// whose CUSTOM policy matches paths under `/checked`.
    static func config(extra: String = "", shadow: Bool = false) throws -> HTTPConnectionManagerConfig {
        let shadowFilter = """
            {"name": "envoy.filters.http.rbac", "typed_config": {\(rbacType), "shadow_rules": {"action": "DENY", "policies": {
              "istio-ext-authz-ns[shop]-policy[ext]-rule[0]": {"permissions": [{"url_path": {"path": {"prefix": "/checked"}}}],
                "principals": [{"any": true}]}}}, "shadow_rules_stat_prefix": "istio_ext_authz_"}},
            """
        let enabled = """
            "filter_enabled_metadata": {"filter": "envoy.filters.http.rbac", "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
              "value": {"string_match": {"prefix": "istio-ext-authz"}}},
            """
        let json = """
            {"stat_prefix": "test", "codec_type": "HTTP1", "server_name": "istio-envoy",
             "route_config": {"name": "test", "virtual_hosts": [{"name": "app", "domains": ["app.local"], "routes": [
               {"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]}]},
             "http_filters": [\(shadow ? shadowFilter : "")
               {"name": "envoy.filters.http.ext_authz", "typed_config": {\(extAuthzType), \(shadow ? enabled : "") \(extra)
                 "grpc_service": {"envoy_grpc": {"cluster_name": "authz", "authority": "authz.local"}, "timeout": "0.5s"},
                 "transport_api_version": "V3"}},
               {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
            """
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_Router_V3_Router.self)
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_Rbac_V3_RBAC.self)
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_ExtAuthz_V3_ExtAuthz.self)
        return try HTTPConnectionManagerConfig(try HTTPConnectionManagerConfig.Proto(jsonString: json), path: "hcm")
    }

    /// The filter's counters, bound as the proxy binds them.
    static func counters(_ config: HTTPConnectionManagerConfig) -> ExtAuthzCounters? {
        for filter in config.filters {
            if case .extAuthz(let extAuthz) = filter.behaviour {
                return extAuthz.counters.storeIfNilThenLoad(ExtAuthzCounters(names: extAuthz.statNames))
            }
        }
        return nil
    }

    /// The authorization service: allows a request with `x-allow: yes` (adding `x-ext-authz: checked`,
    /// removing `x-secret`), denies the rest with 401, `x-denied-by: test` and a body. What it was asked
    /// is kept.
    final class AuthorizationService: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPRequestPart
        typealias OutboundOut = HTTPResponsePart

        var requests: [(head: HTTPRequest, check: Envoy_Service_Auth_V3_CheckRequest)] = []
        var answers = true
        private var head: HTTPRequest?
        private var body = ByteBuffer()

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let request): head = request
            case .body(var bytes): body.writeBuffer(&bytes)
            case .end:
                guard let head, answers else { return }
                _ = body.readInteger(as: UInt8.self)
                let length = body.readInteger(as: UInt32.self) ?? 0
                let check = (try? Envoy_Service_Auth_V3_CheckRequest(serializedBytes: body.readBytes(length: Int(length)) ?? [])) ?? .init()
                requests.append((head, check))
                var response = Envoy_Service_Auth_V3_CheckResponse()
                if check.attributes.request.http.headers["x-allow"] == "yes" {
                    var added = Envoy_Config_Core_V3_HeaderValueOption()
                    added.header.key = "x-ext-authz"
                    added.header.value = "checked"
                    response.okResponse.headers = [added]
                    response.okResponse.headersToRemove = ["x-secret"]
                } else {
                    response.status.code = 7
                    response.deniedResponse.status.code = .unauthorized
                    response.deniedResponse.body = "denied by ext_authz"
                    var header = Envoy_Config_Core_V3_HeaderValueOption()
                    header.header.key = "x-denied-by"
                    header.header.value = "test"
                    response.deniedResponse.headers = [header]
                }
                let message: [UInt8] = (try? response.serializedBytes()) ?? []
                var frame = context.channel.allocator.buffer(capacity: 5 + message.count)
                frame.writeInteger(UInt8(0))
                frame.writeInteger(UInt32(message.count))
                frame.writeBytes(message)
                var fields = HTTPFields()
                fields[.contentType] = "application/grpc"
                context.write(wrapOutboundOut(.head(HTTPResponse(status: .ok, headerFields: fields))), promise: nil)
                context.write(wrapOutboundOut(.body(frame)), promise: nil)
                var trailers = HTTPFields()
                trailers[HTTPField.Name("grpc-status")!] = "0"
                context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
            }
        }
    }

    /// The proxy with an `authz` cluster, and the service's side of its connections.
    struct AuthzFixture {
        let proxy: Fixture
        let authz: TestCluster
        let service = AuthorizationService()
        let serverChannel: EmbeddedChannel

        init(config: HTTPConnectionManagerConfig, reachable: Bool = true) throws {
            let loop = EmbeddedEventLoop()
            authz = TestCluster(name: "authz", loop: loop, endpoints: [try SocketAddress(ipAddress: "192.0.2.50", port: 9000)])
            authz.refusesConnections = !reachable
            proxy = try Fixture(config: config, loop: loop, extraClusters: ["authz": authz])
            serverChannel = EmbeddedChannel(loop: loop)
            let service = self.service
            _ = try serverChannel.pipeline.syncOperations.configureHTTP2Pipeline(
                mode: .server, connectionConfiguration: .init(), streamConfiguration: .init()
            ) { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandlers(HTTP2FramePayloadToHTTPServerCodec(), service)
                }
            }
            try serverChannel.connect(to: try SocketAddress(ipAddress: "192.0.2.1", port: 50000)).wait()
        }

        /// Carries bytes between the proxy's connection to `authz` and the service until neither has more.
        func exchange() throws {
            proxy.loop.run()
            guard let client = authz.connections.first else { return }
            var moved = true
            while moved {
                moved = false
                proxy.loop.run()
                while let bytes = try client.readOutbound(as: ByteBuffer.self) { try serverChannel.writeInbound(bytes); moved = true }
                while let bytes = try serverChannel.readOutbound(as: ByteBuffer.self) { try client.writeInbound(bytes); moved = true }
            }
        }
    }

    @Test func anAllowedRequestGoesUpstreamWithTheServicesHeaderChanges() throws {
        let config = try Self.config()
        let counters = Self.counters(config)
        let fixture = try AuthzFixture(config: config)
        try fixture.proxy.send("GET /orders?id=1 HTTP/1.1\r\nHost: app.local\r\nx-allow: yes\r\nx-secret: s3\r\n\r\n")
        try fixture.exchange()
        let upstream = try #require(try fixture.proxy.backend.connections.first.map(Fixture.drain))
        #expect(upstream.hasPrefix("GET /orders?id=1 HTTP/1.1\r\n"))
        #expect(upstream.contains("x-ext-authz: checked\r\n"))
        #expect(!upstream.contains("x-secret"))
        // What the service was asked, and how.
        let (head, check) = try #require(fixture.service.requests.first)
        #expect(head.path == "/envoy.service.auth.v3.Authorization/Check")
        #expect(head.authority == "authz.local")
        #expect(head.headerFields[HTTPField.Name("grpc-timeout")!] == "500m")
        let http = check.attributes.request.http
        #expect(http.method == "GET" && http.path == "/orders?id=1" && http.host == "app.local" && http.protocol == "HTTP/1.1")
        #expect(http.headers["x-secret"] == "s3" && http.headers[":method"] == "GET")
        #expect(check.attributes.source.address.socketAddress.address == "192.0.2.1")
        #expect(check.attributes.destination.address.socketAddress.portValue == 80)
        try fixture.proxy.answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        #expect(try fixture.proxy.downstreamText().hasPrefix("HTTP/1.1 200 OK"))
        #expect(counters?.entries.first { $0.0 == "ext_authz.ok" }?.1 == 1)
        #expect(fixture.authz.activeRequests == 0)
    }

    @Test func aDeniedRequestIsAnsweredWithTheServicesStatusHeadersAndBody() throws {
        let config = try Self.config()
        let counters = Self.counters(config)
        let fixture = try AuthzFixture(config: config)
        try fixture.proxy.send("GET /orders HTTP/1.1\r\nHost: app.local\r\n\r\n")
        try fixture.exchange()
        let response = try fixture.proxy.downstreamText()
        #expect(response.hasPrefix("HTTP/1.1 401 Unauthorized\r\n"))
        #expect(response.contains("x-denied-by: test\r\n"))
        #expect(response.hasSuffix("\r\n\r\ndenied by ext_authz"))
        #expect(fixture.proxy.backend.connections.isEmpty)
        let record = try #require(fixture.proxy.records.ended.first)
        #expect(record.flags.description == "UAEX")
        #expect(record.responseCodeDetails == "ext_authz_denied")
        #expect(counters?.entries.first { $0.0 == "ext_authz.denied" }?.1 == 1)
    }

    /// A gRPC request is answered as gRPC: HTTP 200 and the status Envoy maps 401 to (UNAUTHENTICATED).
    @Test func aDeniedGRPCRequestIsAnsweredWithAGRPCStatus() throws {
        let fixture = try AuthzFixture(config: try Self.config())
        try fixture.proxy.send("POST /shop.Orders/List HTTP/1.1\r\nHost: app.local\r\ncontent-type: application/grpc\r\ncontent-length: 0\r\n\r\n")
        try fixture.exchange()
        let response = try fixture.proxy.downstreamText()
        #expect(response.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(response.contains("grpc-status: 16\r\n"))
        #expect(response.contains("grpc-message: denied by ext_authz\r\n"))
    }

    /// `with_request_body`: the check waits for the body and carries it; a longer one than allowed is 413.
    @Test func withRequestBodyTheCheckCarriesTheBody() throws {
        let fixture = try AuthzFixture(config: try Self.config(extra: #""with_request_body": {"max_request_bytes": 8},"#))
        try fixture.proxy.send("POST /orders HTTP/1.1\r\nHost: app.local\r\nx-allow: yes\r\ntransfer-encoding: chunked\r\n\r\n")
        try fixture.exchange()
        #expect(fixture.authz.connections.isEmpty, "no check before the body")
        try fixture.proxy.send("5\r\nhello\r\n0\r\n\r\n")
        try fixture.exchange()
        let check = try #require(fixture.service.requests.first?.check)
        #expect(check.attributes.request.http.body == "hello")
        #expect(check.attributes.request.http.headers["x-envoy-auth-partial-body"] == "false")
        // The connection manager made the request's id before the filters, as Envoy's does.
        #expect(check.attributes.request.http.id.utf8.count == 36 && check.attributes.request.http.headers["x-request-id"] == check.attributes.request.http.id)
        let upstream = try #require(try fixture.proxy.backend.connections.first.map(Fixture.drain))
        #expect(upstream.contains("x-ext-authz: checked\r\n") && upstream.contains("hello"), "the body follows upstream")

        let tooLong = try AuthzFixture(config: try Self.config(extra: #""with_request_body": {"max_request_bytes": 8},"#))
        try tooLong.proxy.send("POST /orders HTTP/1.1\r\nHost: app.local\r\ncontent-length: 9\r\n\r\n123456789")
        #expect(try tooLong.proxy.downstreamText().hasPrefix("HTTP/1.1 413 "))
        #expect(tooLong.authz.connections.isEmpty)

        let partial = try AuthzFixture(config: try Self.config(extra: #""with_request_body": {"max_request_bytes": 4, "allow_partial_message": true},"#))
        try partial.proxy.send("POST /orders HTTP/1.1\r\nHost: app.local\r\nx-allow: yes\r\ncontent-length: 9\r\n\r\n123456789")
        try partial.exchange()
        let cut = try #require(partial.service.requests.first?.check.attributes.request.http)
        #expect(cut.body == "1234" && cut.headers["x-envoy-auth-partial-body"] == "true")
    }

    @Test func anUnreachableServiceIs403UAEXUnlessFailureIsAllowed() throws {
        let fixture = try AuthzFixture(config: try Self.config(), reachable: false)
        try fixture.proxy.send("GET /orders HTTP/1.1\r\nHost: app.local\r\nx-allow: yes\r\n\r\n")
        #expect(try fixture.proxy.downstreamText().hasPrefix("HTTP/1.1 403 Forbidden\r\n"))
        #expect(fixture.proxy.records.ended.first?.responseCodeDetails == "ext_authz_error")
        #expect(fixture.proxy.records.ended.first?.flags == .unauthorizedExternalService)

        let allowing = try Self.config(extra: #""failure_mode_allow": true, "failure_mode_allow_header_add": true,"#)
        let counters = Self.counters(allowing)
        let open = try AuthzFixture(config: allowing, reachable: false)
        try open.proxy.send("GET /orders HTTP/1.1\r\nHost: app.local\r\n\r\n")
        #expect(try open.proxy.upstreamText().contains("x-envoy-auth-failure-mode-allowed: true\r\n"))
        #expect(counters?.entries.filter { $0.1 == 1 }.map(\.0).sorted() == ["ext_authz.error", "ext_authz.failure_mode_allowed"])
    }

    @Test func aServiceThatDoesNotAnswerInTimeIsAnError() throws {
        let fixture = try AuthzFixture(config: try Self.config(extra: #""status_on_error": {"code": 503},"#))
        fixture.service.answers = false
        try fixture.proxy.send("GET /orders HTTP/1.1\r\nHost: app.local\r\nx-allow: yes\r\n\r\n")
        try fixture.exchange()
        #expect(try fixture.proxy.downstreamText().isEmpty)
        fixture.proxy.loop.advanceTime(by: .milliseconds(501))
        #expect(try fixture.proxy.downstreamText().hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
        #expect(fixture.authz.activeRequests == 0)
    }

    @Test func aClientThatLeavesWhileHeldCancelsTheCheck() throws {
        let fixture = try AuthzFixture(config: try Self.config())
        fixture.service.answers = false
        try fixture.proxy.send("GET /orders HTTP/1.1\r\nHost: app.local\r\nx-allow: yes\r\n\r\n")
        try fixture.exchange()
        #expect(fixture.authz.activeRequests == 1)
        try fixture.proxy.downstream.close().wait()
        #expect(fixture.authz.activeRequests == 0)
        #expect(fixture.proxy.backend.connections.isEmpty)
    }

    @Test func onlyRequestsTheShadowRulesMarkAreChecked() throws {
        let fixture = try AuthzFixture(config: try Self.config(shadow: true))
        // Not under /checked: the shadow rules match no CUSTOM policy, the service is not asked.
        try fixture.proxy.send("GET /orders HTTP/1.1\r\nHost: app.local\r\n\r\n")
        #expect(try fixture.proxy.backend.connections.first.map(Fixture.drain)?.hasPrefix("GET /orders HTTP/1.1\r\n") == true)
        #expect(fixture.authz.connections.isEmpty)
        try fixture.proxy.answer("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        _ = try fixture.proxy.downstreamText()
        // Under /checked: asked, and denied.
        try fixture.proxy.send("GET /checked/1 HTTP/1.1\r\nHost: app.local\r\n\r\n")
        try fixture.exchange()
        #expect(try fixture.proxy.downstreamText().hasPrefix("HTTP/1.1 401 Unauthorized\r\n"))
        #expect(fixture.service.requests.count == 1)
    }

    @Test func shadowRulesLeaveEnvoysDynamicMetadata() throws {
        let config = try Self.config(shadow: true)
        guard case .rbac(let rbac) = config.filters[0].behaviour else { Issue.record("no RBAC filter"); return }
        let request = AuthorizationRequest(peerPrincipal: nil, localPrincipal: nil, sourceAddress: nil, destinationAddress: nil,
                                           destinationPort: nil, request: HTTPRequest(method: .get, scheme: "http", authority: "app.local", path: "/checked"),
                                           metadata: DynamicMetadata())
        let (_, shadow) = rbac.engine.checkWithShadow(request)
        var metadata = DynamicMetadata()
        RBACFilterConfig.record(try #require(shadow), keys: try #require(rbac.engine.shadowMetadataKeys), in: &metadata)
        #expect(metadata.value(filter: "envoy.filters.http.rbac", path: ["istio_ext_authz_shadow_effective_policy_id"])?.stringValue
                    == "istio-ext-authz-ns[shop]-policy[ext]-rule[0]")
        #expect(metadata.value(filter: "envoy.filters.http.rbac", path: ["istio_ext_authz_shadow_engine_result"])?.stringValue == "denied")
    }

    /// The service's headers on a request: `append` (true only adds to a header there, as Envoy), else
    /// `append_action`; never `host`.
    @Test func theServicesHeadersAreAppliedAsEnvoyAppliesThem() {
        func option(_ key: String, _ value: String, append: Bool? = nil,
                    action: Envoy_Config_Core_V3_HeaderValueOption.HeaderAppendAction = .appendIfExistsOrAdd) -> Envoy_Config_Core_V3_HeaderValueOption {
            var option = Envoy_Config_Core_V3_HeaderValueOption()
            option.header.key = key
            option.header.value = value
            if let append { option.append = Google_Protobuf_BoolValue(append) }
            option.appendAction = action
            return option
        }
        var fields = HTTPFields()
        fields[HTTPField.Name("x-a")!] = "1"
        for each in [option("x-a", "2", append: true), option("x-b", "1", append: true), option("x-c", "1", append: false),
                     option("x-a", "3"), option("x-d", "1", action: .addIfAbsent), option("x-d", "2", action: .addIfAbsent),
                     option("x-e", "1", action: .overwriteIfExists), option("x-c", "2", action: .overwriteIfExistsOrAdd),
                     option("host", "evil")] {
            ExtAuthzFilter.apply(each, to: &fields, onlyAppendsToPresent: true)
        }
        #expect(fields.map { "\($0.name)=\($0.value)" } == ["x-a=1", "x-a=2", "x-c=2", "x-a=3", "x-d=1"])
    }

    @Test func whatWouldLetRequestsThroughIsRefused() throws {
        #expect(throws: ConfigError.self) { try Self.config(extra: #""with_request_body": {"max_request_bytes": 0},"#) }
        var notActedOn: [FieldNotActedOn] = []
        var proto = Envoy_Extensions_Filters_Http_ExtAuthz_V3_ExtAuthz()
        proto.grpcService.googleGrpc.targetUri = "authz:9000"
        #expect(throws: ConfigError.self) {
            try ExtAuthzFilterConfig(unpacking: try Google_Protobuf_Any(message: proto), path: "f", field: "f", notActedOn: &notActedOn)
        }
        // http_service (field 3, outside the subset) beside a gRPC service.
        proto.grpcService.envoyGrpc.clusterName = "authz"
        var any = try Google_Protobuf_Any(message: proto)
        any.value += Data([0x1A, 0x00])
        let refusal = #expect(throws: ConfigError.self) {
            try ExtAuthzFilterConfig(unpacking: any, path: "f", field: "f", notActedOn: &notActedOn)
        }
        #expect(refusal?.path == "f.#3")
    }
}
