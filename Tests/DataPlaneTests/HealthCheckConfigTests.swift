import Configuration
@testable import DataPlane
import SwiftProtobuf
import Testing
import XDS

/// A cluster's `health_checks`: what is read, Envoy's defaults, and what is refused.
@Suite struct HealthCheckConfigTests {
    func decode(_ json: String) throws -> (HealthCheckConfig?, [FieldNotActedOn]) {
        let check = try Envoy_Config_Core_V3_HealthCheck(jsonString: json)
        var notActedOn: [FieldNotActedOn] = []
        let config = try HealthCheckConfig.decode([check], path: "cluster \"c\"", notActedOn: &notActedOn)
        return (config, notActedOn)
    }

    @Test func httpChecksReadTheirPathStatusesAndIntervals() throws {
        let (config, notActedOn) = try decode("""
            {"timeout": "1s", "interval": "2s", "unhealthy_threshold": 3, "healthy_threshold": 2, "interval_jitter_percent": 10,
             "http_health_check": {"path": "/healthz", "expected_statuses": [{"start": 200, "end": 300}]}, "reuse_connection": false}
            """)
        let check = try #require(config)
        #expect(check.check == .http(host: "", path: "/healthz", expected: [200..<300]))
        #expect(check.timeout == .seconds(1) && check.interval == .seconds(2) && check.unhealthyInterval == .seconds(2))
        #expect(check.noTrafficInterval == .seconds(60), "Envoy's default")
        #expect(check.unhealthyThreshold == 3 && check.healthyThreshold == 2)
        #expect(notActedOn.map(\.path) == ["health_checks[0].reuse_connection"])
        // Jitter: the interval plus at most 10 % of it.
        let delays = (0..<100).map { check.nextDelay(unhealthy: false, hadTraffic: true, randomValue: UInt64($0) &* 0x9E37_79B9_7F4A_7C15) }
        #expect(delays.allSatisfy { $0 >= .seconds(2) && $0 < .milliseconds(2200) })
        #expect(check.nextDelay(unhealthy: false, hadTraffic: false, randomValue: 0) == .seconds(60))
    }

    @Test func tcpPayloadsAreHexAndGRPCNamesItsService() throws {
        let (tcp, _) = try decode("""
            {"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1,
             "tcp_health_check": {"send": {"text": "50494E47"}, "receive": [{"text": "504f4e47"}]}}
            """)
        #expect(tcp?.check == .tcp(send: Array("PING".utf8), receive: [Array("PONG".utf8)]))
        let (grpc, _) = try decode("""
            {"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1, "grpc_health_check": {"service_name": "echo"}}
            """)
        #expect(grpc?.check == .grpc(service: "echo", authority: ""))
    }

    @Test(arguments: [
        (#"{"interval": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1, "http_health_check": {"path": "/"}}"#, "timeout", "is required"),
        (#"{"timeout": "1s", "interval": "0s", "unhealthy_threshold": 1, "healthy_threshold": 1, "http_health_check": {"path": "/"}}"#,
         "interval", "must be above 0"),
        (#"{"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1, "http_health_check": {}}"#,
         "http_health_check.path", "is required"),
        (#"{"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1, "http_health_check": {"path": "/", "expected_statuses": [{"start": 300, "end": 200}]}}"#,
         "http_health_check.expected_statuses[0]", "[300, 200) is not a range of HTTP statuses (100 to 600, start before end)"),
        (#"{"timeout": "1s", "interval": "1s", "healthy_threshold": 1, "http_health_check": {"path": "/"}}"#,
         "unhealthy_threshold", "is required"),
        (#"{"timeout": "1s", "interval": "1s", "unhealthy_threshold": 1, "healthy_threshold": 1}"#,
         "", "needs http_health_check, tcp_health_check or grpc_health_check"),
    ])
    func refusalsNameTheField(json: String, field: String, message: String) throws {
        let path = field.isEmpty ? "cluster \"c\".health_checks[0]" : "cluster \"c\".health_checks[0].\(field)"
        #expect(throws: ConfigError(path: path, message: message)) { try decode(json) }
    }
}
