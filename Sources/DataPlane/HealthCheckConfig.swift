import Configuration
import SwiftProtobuf
import XDS

/// A cluster's `health_checks` entry: how and how often its endpoints are checked, and how many
/// results in a row change an endpoint's health.
struct HealthCheckConfig: Sendable, Equatable {
    enum Check: Sendable, Equatable {
        /// GET `path` with `host` (the cluster's name when empty); healthy when the status is in `expected`.
        case http(host: String, path: String, expected: [Range<Int>])
        /// A connection; with `send`, those bytes are written and every `receive` payload must come back,
        /// in order (Envoy's fuzzy match).
        case tcp(send: [UInt8], receive: [[UInt8]])
        /// gRPC's `grpc.health.v1.Health/Check` for `service` over HTTP/2, with `authority`.
        case grpc(service: String, authority: String)
    }

    var check: Check
    var timeout: Duration
    var interval: Duration
    /// While an endpoint is unhealthy (`unhealthy_interval`, default `interval`).
    var unhealthyInterval: Duration
    /// Until the cluster has carried traffic (`no_traffic_interval`, Envoy's default 60 s).
    var noTrafficInterval: Duration
    var initialJitter: Duration
    var intervalJitter: Duration
    var intervalJitterPercent: Int
    var unhealthyThreshold: Int
    var healthyThreshold: Int
    /// `alt_port`: checks go to this port of the endpoint's address rather than its own.
    var alternatePort: Int?

    /// The one `health_checks` entry of a cluster (`path`: the cluster's); fields it does not act on go
    /// to `notActedOn`.
    static func decode(_ checks: [Envoy_Config_Core_V3_HealthCheck], path: String,
                       notActedOn: inout [FieldNotActedOn]) throws(ConfigError) -> HealthCheckConfig? {
        guard let proto = checks.first else { return nil }
        guard checks.count == 1 else {
            throw ConfigError(path: "\(path).health_checks", message: "has \(checks.count) entries: Capstan checks endpoints one way (one entry)")
        }
        let field = "\(path).health_checks[0]"
        func duration(_ given: Bool, _ value: Google_Protobuf_Duration, _ name: String, default fallback: Duration? = nil,
                      allowsZero: Bool = false) throws(ConfigError) -> Duration {
            guard given else {
                guard let fallback else { throw ConfigError(path: "\(field).\(name)", message: "is required") }
                return fallback
            }
            let duration = Duration(value)
            guard duration > .zero || (allowsZero && duration == .zero) else {
                throw ConfigError(path: "\(field).\(name)", message: "must be above 0")
            }
            return duration
        }
        let timeout = try duration(proto.hasTimeout, proto.timeout, "timeout")
        let interval = try duration(proto.hasInterval, proto.interval, "interval")
        guard proto.hasUnhealthyThreshold else { throw ConfigError(path: "\(field).unhealthy_threshold", message: "is required") }
        guard proto.hasHealthyThreshold else { throw ConfigError(path: "\(field).healthy_threshold", message: "is required") }
        guard proto.intervalJitterPercent <= 100 else {
            throw ConfigError(path: "\(field).interval_jitter_percent", message: "\(proto.intervalJitterPercent) is above 100")
        }
        if proto.hasAltPort, !(1...65535).contains(proto.altPort.value) {
            throw ConfigError(path: "\(field).alt_port", message: "\(proto.altPort.value) is not a port")
        }
        let check: Check
        switch proto.healthChecker {
        case .httpHealthCheck(let http)?:
            guard !http.path.isEmpty else { throw ConfigError(path: "\(field).http_health_check.path", message: "is required") }
            var expected: [Range<Int>] = []
            for (index, range) in http.expectedStatuses.enumerated() {
                guard (100...600).contains(range.start), (100...600).contains(range.end), range.start < range.end else {
                    throw ConfigError(path: "\(field).http_health_check.expected_statuses[\(index)]",
                                      message: "[\(range.start), \(range.end)) is not a range of HTTP statuses (100 to 600, start before end)")
                }
                expected.append(Int(range.start)..<Int(range.end))
            }
            check = .http(host: http.host, path: http.path, expected: expected.isEmpty ? [200..<201] : expected)
            if !http.requestHeadersToAdd.isEmpty || !http.requestHeadersToRemove.isEmpty {
                notActedOn.append(.init(path: "health_checks[0].http_health_check.request_headers_to_add",
                                        reason: "health check requests carry only Host and User-Agent"))
            }
        case .tcpHealthCheck(let tcp)?:
            check = .tcp(send: tcp.hasSend ? payload(tcp.send) : [], receive: tcp.receive.map(payload))
        case .grpcHealthCheck(let grpc)?:
            check = .grpc(service: grpc.serviceName, authority: grpc.authority)
        case nil:
            throw ConfigError(path: field, message: "needs http_health_check, tcp_health_check or grpc_health_check")
        }
        for (name, given, reason) in [
            ("healthy_edge_interval", proto.hasHealthyEdgeInterval, "an endpoint that turns healthy is checked again at the usual interval"),
            ("unhealthy_edge_interval", proto.hasUnhealthyEdgeInterval, "an endpoint that turns unhealthy is checked again at unhealthy_interval"),
            ("reuse_connection", proto.hasReuseConnection && !proto.reuseConnection.value, "HTTP and gRPC checks keep their connection between checks"),
        ] where given {
            notActedOn.append(.init(path: "health_checks[0].\(name)", reason: reason))
        }
        notActedOn += UnknownFields.paths(in: proto).map { FieldNotActedOn(path: "health_checks[0].\($0)", reason: UnknownFields.reason) }
        return HealthCheckConfig(
            check: check, timeout: timeout, interval: interval,
            unhealthyInterval: try duration(proto.hasUnhealthyInterval, proto.unhealthyInterval, "unhealthy_interval", default: interval),
            noTrafficInterval: try duration(proto.hasNoTrafficInterval, proto.noTrafficInterval, "no_traffic_interval", default: .seconds(60)),
            initialJitter: try duration(proto.hasInitialJitter, proto.initialJitter, "initial_jitter", default: .zero, allowsZero: true),
            intervalJitter: try duration(proto.hasIntervalJitter, proto.intervalJitter, "interval_jitter", default: .zero, allowsZero: true),
            intervalJitterPercent: Int(proto.intervalJitterPercent),
            unhealthyThreshold: max(1, Int(proto.unhealthyThreshold.value)), healthyThreshold: max(1, Int(proto.healthyThreshold.value)),
            alternatePort: proto.hasAltPort ? Int(proto.altPort.value) : nil)
    }

    private static func payload(_ payload: Envoy_Config_Core_V3_HealthCheck.Payload) -> [UInt8] {
        switch payload.payload {
        case .text(let hex)?: hexBytes(hex)
        case .binary(let bytes)?: Array(bytes)
        case nil: []
        }
    }

    /// Envoy's `text` payload is hex.
    private static func hexBytes(_ text: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var high: UInt8?
        for character in text.utf8 {
            let nibble: UInt8
            switch character {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = character - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = character - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): nibble = character - UInt8(ascii: "A") + 10
            default: continue
            }
            if let first = high {
                bytes.append(first << 4 | nibble)
                high = nil
            } else {
                high = nibble
            }
        }
        return bytes
    }

    /// The time until the next check: the interval for the endpoint's state (and the cluster's traffic),
    /// plus `interval_jitter` and `interval_jitter_percent` of it at random.
    func nextDelay(unhealthy: Bool, hadTraffic: Bool, randomValue: UInt64) -> Duration {
        let base = !hadTraffic ? noTrafficInterval : (unhealthy ? unhealthyInterval : interval)
        var jitter = Duration.zero
        let fixed = intervalJitter.components
        let fixedNanoseconds = fixed.seconds * 1_000_000_000 + fixed.attoseconds / 1_000_000_000
        if fixedNanoseconds > 0 { jitter += .nanoseconds(Int64(randomValue % UInt64(fixedNanoseconds))) }
        if intervalJitterPercent > 0 {
            let span = base.components
            let spanNanoseconds = (span.seconds * 1_000_000_000 + span.attoseconds / 1_000_000_000) * Int64(intervalJitterPercent) / 100
            if spanNanoseconds > 0 { jitter += .nanoseconds(Int64((randomValue >> 17) % UInt64(spanNanoseconds))) }
        }
        return base + jitter
    }
}
