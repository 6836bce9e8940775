import Configuration
import HTTPTypes
import NIOCore
import SwiftProtobuf
import Testing
import XDS
@testable import HTTPProxy

/// Envoy's access log formats as values: compiled once, rendered from a record, and refused by the
/// field's path when invalid.
@Suite struct AccessLogFormatTests {
    typealias HCM = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager

    static let istioFormat = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% "
        + "%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" "
        + "%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" "
        + "\"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% "
        + "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"

    /// 2026-12-02T12:38:56.123456789Z.
    static let startSeconds = 1_796_215_136
    static let startNanoseconds = 123_456_789

    /// A request that went upstream and got a 200: every field the formats print is known.
    static func forwarded() throws -> AccessLogEntry {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var record = HTTPStreamRecord(start: start, requestProtocol: "HTTP/1.1")
        record.end = start + .milliseconds(12) + .microseconds(900)
        record.requestEnd = start + .milliseconds(1)
        record.upstreamResponseStart = start + .milliseconds(10)
        record.method = .get
        record.authority = "app.local"
        record.path = "/hello?x=1"
        var request = HTTPRequest(method: .get, scheme: "http", authority: "app.local", path: "/hello?x=1")
        request.headerFields[.userAgent] = "curl/8.5.0"
        request.headerFields[HTTPField.Name("x-request-id")!] = "4f1c0f1e-0000-4000-8000-000000000001"
        request.headerFields[HTTPField.Name("x-forwarded-for")!] = "192.0.2.1"
        record.request = request
        record.responseCode = 200
        record.respondedByUpstream = true
        var response = HTTPFields()
        response[.contentType] = "text/plain"
        response[HTTPField.Name("x-envoy-upstream-service-time")!] = "9"
        record.responseHeaders = response
        var trailers = HTTPFields()
        trailers[HTTPField.Name("grpc-message")!] = "fine"
        record.responseTrailers = trailers
        record.requestBodyBytes = 3
        record.responseBodyBytes = 5
        record.routeName = "default"
        record.cluster = "outbound|8080||app.local"
        record.upstream = NamedCluster(name: "outbound|8080||app.local")
        record.upstreamHost = try SocketAddress(ipAddress: "192.0.2.10", port: 8080)
        record.upstreamLocalAddress = try SocketAddress(ipAddress: "192.0.2.2", port: 51000)
        let connection = DownstreamConnectionInfo(remoteAddress: try SocketAddress(ipAddress: "192.0.2.1", port: 40000),
                                                  localAddress: try SocketAddress(ipAddress: "192.0.2.10", port: 8080),
                                                  isTLS: true, peerPrincipal: "spiffe://cluster.local/ns/a/sa/client",
                                                  localPrincipal: "spiffe://cluster.local/ns/b/sa/server",
                                                  requestedServerName: "outbound_.8080_._.app.local")
        return AccessLogEntry(record: record, connection: connection, startSeconds: startSeconds, startNanoseconds: startNanoseconds)
    }

    /// A request answered here with 404 NR: no upstream, no response from one.
    static func noRoute() -> AccessLogEntry {
        var record = HTTPStreamRecord(start: .uptimeNanoseconds(0), requestProtocol: "HTTP/2")
        record.end = .uptimeNanoseconds(2_000_000)
        record.method = .post
        record.authority = "elsewhere"
        record.path = "/"
        record.responseCode = 404
        record.flags = .noRoute
        return AccessLogEntry(record: record, connection: DownstreamConnectionInfo(remoteAddress: nil, localAddress: nil),
                              startSeconds: startSeconds, startNanoseconds: 0)
    }

    final class NamedCluster: UpstreamCluster {
        let name: String
        init(name: String) { self.name = name }
        var upstreamProtocol: UpstreamProtocol { .http1 }
        var upstreamIdleTimeout: TimeAmount? { nil }
        var maxRequestsPerConnection: Int? { nil }
        let circuitBreakers = CircuitBreakers()
        func chooseEndpoint(for downstream: DownstreamConnectionInfo, hash: UInt64?) -> Result<UpstreamEndpoint, UpstreamUnavailable> { .failure(.noHealthyUpstream) }
        func requestEnded(at endpoint: UpstreamEndpoint) {}
        func connect<Connection>(to endpoint: UpstreamEndpoint, version: UpstreamVersion, alpn: [String]?, on loop: any EventLoop,
                                 configure: @escaping (Channel) throws -> Connection) -> EventLoopFuture<Connection> {
            loop.makeFailedFuture(ChannelError.connectTimeout(.seconds(1)))
        }
    }

    static func text(_ format: String, _ entry: AccessLogEntry, omit: Bool = false) throws -> String {
        try AccessLogFormat(text: format, omitsEmptyValues: omit).render(entry)
    }

    // MARK: Text

    @Test func istiosDefaultFormatPrintsEveryField() throws {
        let line = try Self.text(Self.istioFormat, try Self.forwarded())
        #expect(line == "[2026-12-02T12:38:56.123Z] \"GET /hello?x=1 HTTP/1.1\" 200 - via_upstream - \"-\" 3 5 12 9 \"192.0.2.1\" "
            + "\"curl/8.5.0\" \"4f1c0f1e-0000-4000-8000-000000000001\" \"app.local\" \"192.0.2.10:8080\" outbound|8080||app.local "
            + "192.0.2.2:51000 192.0.2.10:8080 192.0.2.1:40000 outbound_.8080_._.app.local default\n")
    }

    @Test func istiosFormatForALocalReply() throws {
        let line = try Self.text(Self.istioFormat, Self.noRoute())
        #expect(line == "[2026-12-02T12:38:56.000Z] \"POST / HTTP/2\" 404 NR route_not_found - \"-\" 0 0 2 - \"-\" \"-\" \"-\" "
            + "\"elsewhere\" \"-\" - - - - - -\n")
    }

    @Test func envoysDefaultFormat() throws {
        let line = AccessLogFormat.envoyDefault.render(try Self.forwarded())
        #expect(line == "[2026-12-02T12:38:56.123Z] \"GET /hello?x=1 HTTP/1.1\" 200 - 3 5 12 9 \"192.0.2.1\" \"curl/8.5.0\" "
            + "\"4f1c0f1e-0000-4000-8000-000000000001\" \"app.local\" \"192.0.2.10:8080\"\n")
    }

    @Test func headersWithAlternativesAndMaximumLengths() throws {
        let entry = try Self.forwarded()
        #expect(try Self.text("%REQ(X-MISSING?USER-AGENT)%", entry) == "curl/8.5.0")
        #expect(try Self.text("%REQ(USER-AGENT?X-MISSING)%", entry) == "curl/8.5.0")
        #expect(try Self.text("%REQ(USER-AGENT):4%", entry) == "curl")
        #expect(try Self.text("%REQ(X-MISSING?X-ALSO-MISSING)%", entry) == "-")
        #expect(try Self.text("%REQ(:SCHEME)% %REQ(HOST)% %REQ(:method)%", entry) == "http app.local GET")
        #expect(try Self.text("%RESP(CONTENT-TYPE)% %RESP(X-NONE)% %TRAILER(GRPC-MESSAGE)%", entry) == "text/plain - fine")
        #expect(try Self.text("%START_TIME:4%", entry) == "2026")
    }

    @Test func otherOperators() throws {
        let entry = try Self.forwarded()
        #expect(try Self.text("%REQUEST_DURATION% %RESPONSE_DURATION% %RESPONSE_TX_DURATION%", entry) == "1 10 2")
        #expect(try Self.text("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_REMOTE_PORT% %DOWNSTREAM_LOCAL_PORT%", entry)
            == "192.0.2.1 40000 8080")
        #expect(try Self.text("%DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_LOCAL_URI_SAN%", entry)
            == "spiffe://cluster.local/ns/a/sa/client spiffe://cluster.local/ns/b/sa/server")
        #expect(try Self.text("%REQUESTED_SERVER_NAME%", entry) == "outbound_.8080_._.app.local")
        #expect(try Self.text("%UPSTREAM_CLUSTER_RAW% %GRPC_STATUS_NUMBER% %DYNAMIC_METADATA(istio.mixer:status)%", entry)
            == "outbound|8080||app.local - -")
        #expect(try Self.text("100%% %PROTOCOL%", entry) == "100% HTTP/1.1")
        #expect(try Self.text("no operators at all", entry) == "no operators at all")
    }

    @Test func responseFlagsAreEnvoysShortNamesJoinedByCommas() throws {
        var entry = Self.noRoute()
        entry.record.flags = [.upstreamConnectionFailure, .noHealthyUpstream]
        #expect(try Self.text("%RESPONSE_FLAGS%", entry) == "UH,UF")
        entry.record.flags = []
        #expect(try Self.text("%RESPONSE_FLAGS%", entry) == "-")
    }

    @Test func responseCodeDetailsByEnvoysNames() {
        var entry = Self.noRoute()
        let cases: [(ResponseFlags, Bool, String)] = [
            (.upstreamConnectionFailure, false, "upstream_reset_before_response_started{connection_failure}"),
            (.noClusterFound, false, "cluster_not_found"), (.noHealthyUpstream, false, "no_healthy_upstream"),
            (.upstreamRequestTimeout, false, "upstream_response_timeout"),
            (.upstreamConnectionTermination, true, "upstream_reset_after_response_started{connection_termination}"),
            ([], true, "via_upstream"),
        ]
        for (flags, upstream, details) in cases {
            entry.record.flags = flags
            entry.record.respondedByUpstream = upstream
            #expect(entry.record.responseCodeDetails == details)
        }
    }

    @Test func omitEmptyValuesPrintsNothingForAnUnknownValue() throws {
        #expect(try Self.text("\"%REQ(USER-AGENT)%\" %UPSTREAM_HOST%", Self.noRoute(), omit: true) == "\"\" ")
    }

    @Test func startTimeFormats() throws {
        let entry = try Self.forwarded()
        #expect(try Self.text("%START_TIME(%Y/%m/%d %H:%M:%S)%", entry) == "2026/12/02 12:38:56")
        #expect(try Self.text("%START_TIME(%s.%3f|%6f|%f)%", entry) == "1796215136.123|123456|123456789")
        #expect(try Self.text("%START_TIME(%FT%T%z %Z %E2S %j %a %b %y %%)%", entry) == "2026-12-02T12:38:56+0000 UTC 56.12 336 Wed Dec 26 %")
    }

    // MARK: JSON

    static func json(_ json: String, omit: Bool = false) throws -> AccessLogFormat {
        try AccessLogFormat(json: try Google_Protobuf_Struct(jsonString: json), omitsEmptyValues: omit)
    }

    @Test func jsonKeepsTypesOfSingleOperators() throws {
        let format = try Self.json("""
            {"code": "%RESPONSE_CODE%", "bytes": "%BYTES_SENT%", "method": "%REQ(:METHOD)%", "host": "%UPSTREAM_HOST%",
             "line": "%REQ(:METHOD)% %REQ(X-NONE)%", "fixed": 7, "on": true, "nothing": null,
             "nested": {"flags": "%RESPONSE_FLAGS%", "list": ["%PROTOCOL%", 1.5]}, "say \\"hi\\"": "a\\tb",
             "start": "%START_TIME%", "server_name": "%REQUESTED_SERVER_NAME%"}
            """)
        #expect(format.render(Self.noRoute()) == #"{"bytes":0,"code":404,"fixed":7,"host":null,"line":"POST -","method":"POST","#
            + #""nested":{"flags":"NR","list":["HTTP/2",1.5]},"nothing":null,"on":true,"say \"hi\"":"a\tb","server_name":null,"#
            + #""start":"2026-12-02T12:38:56.000Z"}"# + "\n")
    }

    @Test func jsonOmitsEmptyValuesWhenAsked() throws {
        let format = try Self.json(#"{"code": "%RESPONSE_CODE%", "host": "%UPSTREAM_HOST%", "agent": "%REQ(USER-AGENT)%"}"#, omit: true)
        #expect(format.render(Self.noRoute()) == #"{"code":404}"# + "\n")
    }

    @Test func jsonEscapesHeaderValues() throws {
        var entry = try Self.forwarded()
        entry.record.request?.headerFields[.userAgent] = "quote\" back\\slash"
        let format = try Self.json(#"{"agent": "%REQ(USER-AGENT)%"}"#)
        #expect(format.render(entry) == #"{"agent":"quote\" back\\slash"}"# + "\n")
    }

    // MARK: Refusals

    @Test(arguments: [
        ("%NOT_AN_OPERATOR%", "position 0: %NOT_AN_OPERATOR% is not a command operator Capstan knows"),
        ("abc %PROTOCOL", "position 4: %PROTOCOL is not closed by %"),
        ("50% off", "position 2: % starts no command operator (a literal % is written %%)"),
        ("%", "position 0: % starts no command operator (a literal % is written %%)"),
        ("%REQ(USER-AGENT%", "position 0: %REQ( has no closing )"),
        ("%REQ()%", "position 0: %REQ(...)% needs a header name"),
        ("%REQ%", "position 0: %REQ(...)% needs a header name"),
        ("%REQ(A?B?C)%", "position 0: %REQ(A?B?C)% names more than one alternative header"),
        ("%REQ(BAD HEADER)%", "position 0: \"BAD HEADER\" is not a header name"),
        ("%REQ(X?)%", "position 0: \"\" is not a header name"),
        ("%REQ(USER-AGENT):%", "position 0: %REQ's : is not followed by a length"),
        ("%REQ(USER-AGENT):x%", "position 0: %REQ's : is not followed by a length"),
        ("%PROTOCOL(x)%", "position 0: %PROTOCOL% takes no argument"),
        ("%START_TIME(%Q)%", "position 0: START_TIME(%Q): %Q is not a supported specifier (Capstan has %Y %y %m %d %j %H %M %S %f %Nf %ENS %s %b %a %z %Z %F %T %%)"),
        ("%START_TIME(%Y%)%", "position 0: START_TIME(%Y%) ends in a lone %"),
        ("%START_TIME(%3Y)%", "position 0: START_TIME(%3Y): a digit count goes only before f (%3f)"),
    ])
    func invalidFormatsAreRefused(format: String, message: String) {
        #expect(throws: AccessLogFormat.Error(message)) { try AccessLogFormat(text: format) }
    }

    @Test func anInvalidJSONValueIsRefusedByItsKey() throws {
        #expect(throws: AccessLogFormat.Error("outer.inner: position 0: %NOPE% is not a command operator Capstan knows")) {
            try Self.json(#"{"outer": {"inner": "%NOPE%"}}"#)
        }
    }
}
