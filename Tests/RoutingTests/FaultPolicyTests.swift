import Configuration
import HTTPTypes
import SwiftProtobuf
import Testing
import XDS
@testable import Routing

/// The fault filter's configuration as data: decoding with Envoy's defaults and refusals, the share of
/// requests a percentage hits, and the faults a client asks for in headers.
@Suite struct FaultPolicyTests {
    typealias HTTPFault = Envoy_Extensions_Filters_Http_Fault_V3_HTTPFault

    static func policy(_ json: String) throws -> FaultPolicy {
        var notActedOn: [FieldNotActedOn] = []
        return try FaultPolicy(try HTTPFault(jsonString: json), path: "fault", notActedOn: &notActedOn)
    }

    static func refusal(_ json: String) throws -> ConfigError? {
        var notActedOn: [FieldNotActedOn] = []
        let proto = try HTTPFault(jsonString: json)
        do { _ = try FaultPolicy(proto, path: "fault", notActedOn: &notActedOn) } catch { return error }
        return nil
    }

    @Test func decodesDelayAbortAndTheirConditions() throws {
        let policy = try Self.policy("""
            {"delay": {"fixed_delay": "0.3s", "percentage": {"numerator": 25, "denominator": "TEN_THOUSAND"}},
             "abort": {"http_status": 503, "percentage": {"numerator": 500000, "denominator": "MILLION"}},
             "upstream_cluster": "outbound|80||a", "downstream_nodes": ["node-a"], "max_active_faults": 3,
             "headers": [{"name": "x-user", "string_match": {"exact": "test"}}]}
            """)
        #expect(policy.delay?.source == .fixed(.milliseconds(300)))
        #expect(policy.delay?.percentage == FaultPercentage(numerator: 25, denominator: 10_000))
        #expect(policy.abort?.source == .http(503))
        #expect(policy.abort?.percentage == FaultPercentage(numerator: 500_000, denominator: 1_000_000))
        #expect(policy.upstreamCluster == "outbound|80||a" && policy.downstreamNodes == ["node-a"] && policy.maxActiveFaults == 3)

        let matching = request(headers: [("x-user", "test"), ("x-envoy-downstream-service-node", "node-a")])
        #expect(policy.isEligible(matching, cluster: "outbound|80||a"))
        #expect(!policy.isEligible(matching, cluster: "outbound|80||b"), "another cluster")
        #expect(!policy.isEligible(request(headers: [("x-envoy-downstream-service-node", "node-a")]), cluster: "outbound|80||a"), "headers")
        #expect(!policy.isEligible(request(headers: [("x-user", "test")]), cluster: "outbound|80||a"), "no downstream node")

        // gRPC, and a percentage not given: Envoy's default, 0 %.
        let grpc = try Self.policy(#"{"abort": {"grpc_status": 14}}"#)
        #expect(grpc.abort?.source == .grpc(14))
        #expect(grpc.abort?.percentage == FaultPercentage(numerator: 0, denominator: 100))
        #expect(grpc.abort(for: request(), randomValue: 0) == nil)
        // The empty configuration istiod puts on every listener: nothing to inject.
        let empty = try Self.policy("{}")
        #expect(empty.delay == nil && empty.abort == nil && empty.upstreamCluster == nil && empty.maxActiveFaults == nil)
    }

    @Test func refusesBadValuesNamingTheField() throws {
        #expect(try Self.refusal(#"{"abort": {"http_status": 600, "percentage": {"numerator": 1}}}"#)
            == ConfigError(path: "fault.abort.http_status", message: "600 is not an HTTP status from 200 to 599"))
        #expect(try Self.refusal(#"{"abort": {"http_status": 199}}"#)?.path == "fault.abort.http_status")
        #expect(try Self.refusal(#"{"abort": {"percentage": {"numerator": 1}}}"#)
            == ConfigError(path: "fault.abort", message: "needs http_status, grpc_status or header_abort"))
        #expect(try Self.refusal(#"{"delay": {"fixed_delay": "-1s"}}"#)?.path == "fault.delay.fixed_delay")
        #expect(try Self.refusal(#"{"delay": {"fixed_delay": "0s"}}"#)?.path == "fault.delay.fixed_delay")
        #expect(try Self.refusal(#"{"delay": {"percentage": {"numerator": 1}}}"#)?.path == "fault.delay")
        #expect(try Self.refusal(#"{"delay": {"fixed_delay": "1s", "percentage": {"numerator": 101}}}"#)
            == ConfigError(path: "fault.delay.percentage.numerator", message: "101 of 100 is more than 100 %"))
        #expect(try Self.refusal(#"{"abort": {"http_status": 503, "percentage": {"numerator": 10001, "denominator": "TEN_THOUSAND"}}}"#)?.path
            == "fault.abort.percentage.numerator")
        #expect(try Self.refusal(#"{"headers": [{"name": "x", "prefix_match": ""}], "abort": {"http_status": 503}}"#)?.path
            == "fault.headers[0].prefix_match")
    }

    @Test func listsWhatItDoesNotActOn() throws {
        // response_rate_limit (7) and a runtime key (8), outside the subset: listed, not silent.
        var known = HTTPFault()
        known.abort.httpStatus = 503
        let bytes: [UInt8] = try known.serializedBytes() + [0x3A, 0x00, 0x42, 0x01, 0x61]
        let proto = try HTTPFault(serializedBytes: bytes)
        var notActedOn: [FieldNotActedOn] = []
        _ = try FaultPolicy(proto, path: "fault", notActedOn: &notActedOn)
        #expect(notActedOn.map(\.path) == ["fault.#7", "fault.#8"])
        #expect(notActedOn.first?.reason.hasPrefix("response_rate_limit") == true)
    }

    @Test func aPercentageHitsItsShareOfRandomValues() {
        let half = FaultPercentage(numerator: 500_000, denominator: 1_000_000)
        #expect(half.hits(0) && half.hits(499_999) && !half.hits(500_000) && !half.hits(999_999) && half.hits(1_000_000))
        #expect(!FaultPercentage(numerator: 0, denominator: 100).hits(0))
        #expect(FaultPercentage(numerator: 100, denominator: 100).hits(UInt64.max))
        // Over many draws, close to its share.
        var generator = SystemRandomNumberGenerator()
        let quarter = FaultPercentage(numerator: 25, denominator: 100)
        let hits = (0..<100_000).filter { _ in quarter.hits(generator.next()) }.count
        #expect((24_000...26_000).contains(hits))
    }

    @Test func headersAskForFaultsWithinTheConfiguredShare() throws {
        let policy = try Self.policy("""
            {"delay": {"header_delay": {}, "percentage": {"numerator": 50}},
             "abort": {"header_abort": {}, "percentage": {"numerator": 100}}}
            """)
        // No header: no fault, whatever is drawn.
        #expect(policy.delay(for: request(), randomValue: 0) == nil)
        #expect(policy.abort(for: request(), randomValue: 0) == nil)
        let asked = request(headers: [("x-envoy-fault-delay-request", "200"), ("x-envoy-fault-abort-request", "418")])
        #expect(policy.delay(for: asked, randomValue: 49) == .milliseconds(200))
        #expect(policy.delay(for: asked, randomValue: 50) == nil, "beyond the configured 50 %")
        #expect(policy.abort(for: asked, randomValue: 99) == .http(418))
        // The percentage header lowers the share, never raises it.
        let lowered = request(headers: [("x-envoy-fault-abort-request", "418"), ("x-envoy-fault-abort-request-percentage", "10")])
        #expect(policy.abort(for: lowered, randomValue: 9) == .http(418))
        #expect(policy.abort(for: lowered, randomValue: 10) == nil)
        let raised = request(headers: [("x-envoy-fault-delay-request", "200"), ("x-envoy-fault-delay-request-percentage", "90")])
        #expect(policy.delay(for: raised, randomValue: 60) == nil)
        // Invalid values: no fault. The HTTP status wins over the gRPC one; only the first value counts.
        #expect(policy.abort(for: request(headers: [("x-envoy-fault-abort-request", "600")]), randomValue: 0) == nil)
        #expect(policy.delay(for: request(headers: [("x-envoy-fault-delay-request", "soon")]), randomValue: 0) == nil)
        #expect(policy.abort(for: request(headers: [("x-envoy-fault-abort-grpc-request", "14")]), randomValue: 0) == .grpc(14))
        #expect(policy.abort(for: request(headers: [("x-envoy-fault-abort-request", "503"), ("x-envoy-fault-abort-grpc-request", "14")]),
                             randomValue: 0) == .http(503))
        #expect(policy.abort(for: request(headers: [("x-envoy-fault-abort-request", "502"), ("x-envoy-fault-abort-request", "503")]),
                             randomValue: 0) == .http(502))
        // Fixed faults do not read the headers.
        let fixed = try Self.policy(#"{"abort": {"http_status": 503, "percentage": {"numerator": 10}}}"#)
        #expect(fixed.abort(for: request(headers: [("x-envoy-fault-abort-request", "418")]), randomValue: 5) == .http(503))
        #expect(fixed.abort(for: request(headers: [("x-envoy-fault-abort-request-percentage", "0")]), randomValue: 5) == .http(503))
    }

    @Test func theMostSpecificRouteLevelConfigurationApplies() throws {
        Google_Protobuf_Any.register(messageType: HTTPFault.self)
        let table = try routeTable(#"""
            {"name": "test", "typed_per_filter_config": {"envoy.filters.http.fault": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault", "abort": {"http_status": 500}}},
             "virtual_hosts": [{"name": "a", "domains": ["*"], "typed_per_filter_config": {"envoy.filters.http.fault": {
                 "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault", "abort": {"http_status": 501}}},
               "routes": [
                 {"match": {"prefix": "/route"}, "route": {"cluster": "c"}, "typed_per_filter_config": {"envoy.filters.http.fault": {
                   "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault", "abort": {"http_status": 502}}}},
                 {"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]}
            """#)
        #expect(table.route(request("a", "/route"), randomValue: 0)?.filterConfigs.faults["envoy.filters.http.fault"]?.abort?.source == .http(502))
        #expect(table.route(request("a", "/other"), randomValue: 0)?.filterConfigs.faults["envoy.filters.http.fault"]?.abort?.source == .http(501))
        #expect(table.fieldsNotActedOn.isEmpty)
        // Another filter's per-route configuration: listed, not silently dropped.
        Google_Protobuf_Any.register(messageType: Envoy_Extensions_Filters_Http_Router_V3_Router.self)
        let other = try routeTable(oneHost(routes: #"""
            {"match": {"prefix": "/"}, "route": {"cluster": "c"}, "typed_per_filter_config": {"envoy.filters.http.router": {
              "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}}
            """#))
        #expect(other.fieldsNotActedOn.map(\.path) == [#"route_config "test".virtual_hosts[0].routes[0].typed_per_filter_config["envoy.filters.http.router"]"#])
        // A bad per-route configuration is refused with its path.
        let bad = try RoutingTests.refusal(oneHost(routes: #"""
            {"match": {"prefix": "/"}, "route": {"cluster": "c"}, "typed_per_filter_config": {"envoy.filters.http.fault": {
              "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault", "abort": {"http_status": 700}}}}
            """#))
        #expect(bad?.path == #"route_config "test".virtual_hosts[0].routes[0].typed_per_filter_config["envoy.filters.http.fault"].abort.http_status"#)
    }
}
