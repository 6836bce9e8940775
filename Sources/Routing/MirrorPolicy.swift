import Configuration
import XDS

/// One of a route's `request_mirror_policies` (Envoy's shadowing): a copy of the request goes to
/// ``cluster`` for the ``fraction`` of requests drawn, and its response is dropped.
public struct MirrorPolicy: Sendable {
    public let cluster: String
    /// `runtime_fraction.default_value`; every request when the policy gives none, as in Envoy.
    public let fraction: FaultPercentage
    /// `disable_shadow_host_suffix_append`: the copy keeps the request's authority as it is, rather
    /// than with `-shadow` added to its host.
    public let keepsHost: Bool

    public init(cluster: String, fraction: FaultPercentage = .all, keepsHost: Bool = false) {
        self.cluster = cluster
        self.fraction = fraction
        self.keepsHost = keepsHost
    }

    init(_ proto: Envoy_Config_Route_V3_RouteAction.RequestMirrorPolicy, path: String,
         notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        guard !proto.cluster.isEmpty else {
            throw ConfigError(path: "\(path).cluster", message: "must not be empty (cluster_header is not supported)")
        }
        var fraction = FaultPercentage.all
        if proto.hasRuntimeFraction {
            fraction = try FaultPercentage(proto.runtimeFraction.hasDefaultValue ? proto.runtimeFraction.defaultValue : nil,
                                           path: "\(path).runtime_fraction.default_value")
            if !proto.runtimeFraction.runtimeKey.isEmpty {
                notActedOn.append(.init(path: "\(path).runtime_fraction.runtime_key",
                                        reason: "Capstan has no runtime: default_value applies"))
            }
        }
        if proto.hasTraceSampled {
            notActedOn.append(.init(path: "\(path).trace_sampled", reason: "Capstan does not trace, so no span is sampled"))
        }
        self.init(cluster: proto.cluster, fraction: fraction, keepsHost: proto.disableShadowHostSuffixAppend)
    }

    /// Whether this request is mirrored, for a fresh random value.
    public func mirrors(_ randomValue: UInt64) -> Bool { fraction.hits(randomValue) }

    /// The copy's authority: `-shadow` added to the host, before any port (`foo:8080` → `foo-shadow:8080`,
    /// `[::1]:80` → `[::1]-shadow:80`), unless ``keepsHost``.
    public func shadowAuthority(_ authority: String) -> String {
        if keepsHost { return authority }
        let (host, port) = VirtualHostDomains.splitPort(Substring(authority))
        return "\(host)-shadow" + (port.map { ":\($0)" } ?? "")
    }
}

extension FaultPercentage {
    /// 100 of 100: every request.
    public static let all = FaultPercentage(numerator: 100, denominator: 100)
}
