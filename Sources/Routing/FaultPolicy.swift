import Configuration
import HTTPTypes
import SwiftProtobuf
import XDS

/// Envoy's fault filter configuration (`envoy.extensions.filters.http.fault.v3.HTTPFault`), for a listener's
/// filter or one route (`typed_per_filter_config`): which requests are eligible (`upstream_cluster`,
/// `downstream_nodes`, `headers`), the delay and the abort each with its share of requests, and how many
/// faults may be active at once. Pure data and decisions; the proxy's ``FaultFilter`` acts on them.
public struct FaultPolicy: Sendable {
    public enum DelaySource: Sendable, Equatable {
        /// `fixed_delay`.
        case fixed(Duration)
        /// `header_delay`: milliseconds from `x-envoy-fault-delay-request`.
        case header
    }

    public struct Delay: Sendable {
        public let source: DelaySource
        public let percentage: FaultPercentage
    }

    public enum AbortSource: Sendable, Equatable {
        /// `http_status` (200-599).
        case http(Int)
        /// `grpc_status`: an HTTP 200 whose `grpc-status` is this.
        case grpc(Int)
        /// `header_abort`: `x-envoy-fault-abort-request`, else `x-envoy-fault-abort-grpc-request`.
        case header
    }

    public struct Abort: Sendable {
        public let source: AbortSource
        public let percentage: FaultPercentage
    }

    /// The status an abort answers with.
    public enum AbortStatus: Sendable, Equatable {
        case http(Int)
        case grpc(Int)
    }

    public let delay: Delay?
    public let abort: Abort?
    /// `upstream_cluster`: only requests routed to this cluster; nil: any.
    public let upstreamCluster: String?
    /// `downstream_nodes`: only requests whose `x-envoy-downstream-service-node` is one of these; empty: any.
    public let downstreamNodes: Set<String>
    let headers: [HeaderMatcher]
    /// `max_active_faults`; nil: no limit.
    public let maxActiveFaults: Int?

    static let typeName = Envoy_Extensions_Filters_Http_Fault_V3_HTTPFault.protoMessageName

    /// Decodes `proto`; `path` names it in refusals. Refused: a delay or abort without its kind, a
    /// `fixed_delay` not above zero, an `http_status` outside 200-599, a percentage above 100 % (Envoy
    /// caps it; Capstan takes it for a mistake) or with an unknown denominator. Fields outside Capstan's
    /// subset (`response_rate_limit`, the runtime keys, `disable_downstream_cluster_stats`) are listed in
    /// `notActedOn` under `path`.
    public init(_ proto: Envoy_Extensions_Filters_Http_Fault_V3_HTTPFault, path: String,
                notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        notActedOn += UnknownFields.paths(in: proto).map { field in
            let reason = switch field.split(separator: ".").first {
            case "#7": "response_rate_limit: responses are not slowed down (no fault.response_rl_injected)"
            case "#8", "#9", "#10", "#11", "#12", "#13", "#14": "a runtime key: Capstan has no runtime, the configured values apply"
            case "#15": "disable_downstream_cluster_stats: Capstan keeps no per-downstream-cluster fault statistics"
            default: UnknownFields.reason
            }
            return FieldNotActedOn(path: "\(path).\(field)", reason: reason)
        }
        if proto.hasDelay {
            let delayPath = "\(path).delay"
            let source: DelaySource
            switch proto.delay.faultDelaySecifier {
            case .fixedDelay(let given)?:
                let duration = Duration(given)
                guard duration > .zero else {
                    throw ConfigError(path: "\(delayPath).fixed_delay", message: "must be above 0 (\(given.seconds)s \(given.nanos)ns)")
                }
                source = .fixed(duration)
            case .headerDelay?: source = .header
            case nil: throw ConfigError(path: delayPath, message: "needs fixed_delay or header_delay")
            }
            delay = Delay(source: source, percentage: try FaultPercentage(proto.delay.hasPercentage ? proto.delay.percentage : nil,
                                                                           path: "\(delayPath).percentage"))
        } else {
            delay = nil
        }
        if proto.hasAbort {
            let abortPath = "\(path).abort"
            let source: AbortSource
            switch proto.abort.errorType {
            case .httpStatus(let status)?:
                guard (200..<600).contains(status) else {
                    throw ConfigError(path: "\(abortPath).http_status", message: "\(status) is not an HTTP status from 200 to 599")
                }
                source = .http(Int(status))
            case .grpcStatus(let status)?:
                guard status <= UInt32(Int32.max) else {
                    throw ConfigError(path: "\(abortPath).grpc_status", message: "\(status) is not a gRPC status")
                }
                source = .grpc(Int(status))
            case .headerAbort?: source = .header
            case nil: throw ConfigError(path: abortPath, message: "needs http_status, grpc_status or header_abort")
            }
            abort = Abort(source: source, percentage: try FaultPercentage(proto.abort.hasPercentage ? proto.abort.percentage : nil,
                                                                           path: "\(abortPath).percentage"))
        } else {
            abort = nil
        }
        upstreamCluster = proto.upstreamCluster.isEmpty ? nil : proto.upstreamCluster
        downstreamNodes = Set(proto.downstreamNodes)
        var headers: [HeaderMatcher] = []
        for (index, header) in proto.headers.enumerated() {
            headers.append(try HeaderMatcher(header, path: "\(path).headers[\(index)]"))
        }
        self.headers = headers
        maxActiveFaults = proto.hasMaxActiveFaults ? Int(proto.maxActiveFaults.value) : nil
    }

    /// Decodes an `Any` holding an `HTTPFault`, directly or in a `udpa.type.v1.TypedStruct` /
    /// `xds.type.v3.TypedStruct` (whose value is its JSON). `path` names the `Any`.
    public init(unpacking any: Google_Protobuf_Any, path: String, notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        let proto: Envoy_Extensions_Filters_Http_Fault_V3_HTTPFault
        do {
            switch any.typeURL.split(separator: "/").last.map(String.init) {
            case Self.typeName?:
                proto = try .init(serializedBytes: [UInt8](any.value))
            case Udpa_Type_V1_TypedStruct.protoMessageName?:
                proto = try .init(jsonString: try Udpa_Type_V1_TypedStruct(serializedBytes: [UInt8](any.value)).value.jsonString())
            case Xds_Type_V3_TypedStruct.protoMessageName?:
                proto = try .init(jsonString: try Xds_Type_V3_TypedStruct(serializedBytes: [UInt8](any.value)).value.jsonString())
            default:
                throw ConfigError(path: path, message: "is \(any.typeURL), not \(Self.typeName)")
            }
        } catch let error as ConfigError {
            throw error
        } catch {
            throw ConfigError(path: path, message: "is not an \(Self.typeName): \(error)")
        }
        try self.init(proto, path: path, notActedOn: &notActedOn)
    }

    /// Whether `request`, routed to `cluster`, may get a fault at all: its cluster, downstream node and
    /// headers are those the policy names.
    public func isEligible(_ request: HTTPRequest, cluster: String?) -> Bool {
        if let upstreamCluster, upstreamCluster != cluster { return false }
        if !downstreamNodes.isEmpty {
            guard let node = Self.firstValue(of: FaultHeaders.downstreamServiceNode, in: request), downstreamNodes.contains(node) else {
                return false
            }
        }
        for header in headers where !header.matches(request) { return false }
        return true
    }

    /// The delay for `request` (drawn with `randomValue`), nil when none: not drawn, or from a header
    /// that is absent, not a number or 0.
    public func delay(for request: HTTPRequest, randomValue: UInt64) -> Duration? {
        guard let delay else { return nil }
        switch delay.source {
        case .fixed(let duration):
            return delay.percentage.hits(randomValue) ? duration : nil
        case .header:
            let share = delay.percentage.limited(by: Self.firstValue(of: FaultHeaders.delayPercentage, in: request))
            guard share.hits(randomValue), let value = Self.firstValue(of: FaultHeaders.delay, in: request),
                  let milliseconds = UInt64(value), milliseconds > 0, milliseconds <= UInt64(Int64.max) else { return nil }
            return .milliseconds(Int64(milliseconds))
        }
    }

    /// The abort for `request` (drawn with `randomValue`), nil when none: not drawn, or from headers that
    /// are absent or invalid (an HTTP status outside 200-599, a gRPC status that is not a number).
    public func abort(for request: HTTPRequest, randomValue: UInt64) -> AbortStatus? {
        guard let abort else { return nil }
        switch abort.source {
        case .http(let status): return abort.percentage.hits(randomValue) ? .http(status) : nil
        case .grpc(let status): return abort.percentage.hits(randomValue) ? .grpc(status) : nil
        case .header:
            let share = abort.percentage.limited(by: Self.firstValue(of: FaultHeaders.abortPercentage, in: request))
            guard share.hits(randomValue) else { return nil }
            if let value = Self.firstValue(of: FaultHeaders.abort, in: request), let status = Int(value), (200..<600).contains(status) {
                return .http(status)
            }
            if let value = Self.firstValue(of: FaultHeaders.abortGRPC, in: request), let status = UInt32(value), status <= UInt32(Int32.max) {
                return .grpc(Int(status))
            }
            return nil
        }
    }

    /// The first value of a header (these headers come from the client, so only the first counts, as in Envoy).
    static func firstValue(of name: HTTPField.Name, in request: HTTPRequest) -> String? {
        for field in request.headerFields where field.name == name { return field.value }
        return nil
    }
}

/// The headers through which a client asks for faults (`header_delay`, `header_abort`), and the one
/// `downstream_nodes` compares.
public enum FaultHeaders {
    public static let delay = HTTPField.Name("x-envoy-fault-delay-request")!
    public static let delayPercentage = HTTPField.Name("x-envoy-fault-delay-request-percentage")!
    public static let abort = HTTPField.Name("x-envoy-fault-abort-request")!
    public static let abortGRPC = HTTPField.Name("x-envoy-fault-abort-grpc-request")!
    public static let abortPercentage = HTTPField.Name("x-envoy-fault-abort-request-percentage")!
    public static let downstreamServiceNode = HTTPField.Name("x-envoy-downstream-service-node")!
}

/// Envoy's `FractionalPercent`: `numerator` out of 100, 10,000 or 1,000,000. A request is hit when a
/// random value modulo the denominator is below the numerator, as Envoy draws it.
public struct FaultPercentage: Sendable, Equatable {
    public let numerator: UInt32
    public let denominator: UInt32

    public init(numerator: UInt32, denominator: UInt32) {
        self.numerator = numerator
        self.denominator = denominator
    }

    /// `proto`, or Envoy's default when absent: 0 of 100 (no request).
    init(_ proto: Envoy_Type_V3_FractionalPercent?, path: String) throws(ConfigError) {
        guard let proto else {
            self.init(numerator: 0, denominator: 100)
            return
        }
        let denominator: UInt32 = switch proto.denominator {
        case .hundred: 100
        case .tenThousand: 10_000
        case .million: 1_000_000
        case .UNRECOGNIZED(let number):
            throw ConfigError(path: "\(path).denominator", message: "\(number) is not HUNDRED, TEN_THOUSAND or MILLION")
        }
        guard proto.numerator <= denominator else {
            throw ConfigError(path: "\(path).numerator", message: "\(proto.numerator) of \(denominator) is more than 100 %")
        }
        self.init(numerator: proto.numerator, denominator: denominator)
    }

    public func hits(_ randomValue: UInt64) -> Bool {
        numerator > 0 && randomValue % UInt64(denominator) < UInt64(numerator)
    }

    /// The share a `…-percentage` header asks for: its numerator over the same denominator, at most
    /// this one; this one when the header is absent or not a number.
    func limited(by header: String?) -> FaultPercentage {
        guard let header, let asked = UInt32(header) else { return self }
        return FaultPercentage(numerator: min(asked, numerator), denominator: denominator)
    }
}
