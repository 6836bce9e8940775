/// Envoy's response flags: why a request ended as it did, as `%RESPONSE_FLAGS%` and Istio's
/// `response_flags` label print them (`-` for none, several joined by commas).
public struct ResponseFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `UH`: no healthy upstream host.
    public static let noHealthyUpstream = Self(rawValue: 1 << 0)
    /// `UF`: the upstream connection failed.
    public static let upstreamConnectionFailure = Self(rawValue: 1 << 1)
    /// `UO`: the circuit breaker was open.
    public static let upstreamOverflow = Self(rawValue: 1 << 2)
    /// `NR`: no route.
    public static let noRoute = Self(rawValue: 1 << 3)
    /// `UT`: the upstream request timed out.
    public static let upstreamRequestTimeout = Self(rawValue: 1 << 4)
    /// `UC`: the upstream connection ended before the response did.
    public static let upstreamConnectionTermination = Self(rawValue: 1 << 5)
    /// `DC`: the downstream connection ended before the response did.
    public static let downstreamConnectionTermination = Self(rawValue: 1 << 6)
    /// `NC`: the route names a cluster the proxy does not have.
    public static let noClusterFound = Self(rawValue: 1 << 7)
    /// `DPE`: the downstream request broke HTTP's rules.
    public static let downstreamProtocolError = Self(rawValue: 1 << 8)
    /// `UPE`: the upstream response broke HTTP's rules.
    public static let upstreamProtocolError = Self(rawValue: 1 << 9)
    /// `SI`: the stream idle timeout fired.
    public static let streamIdleTimeout = Self(rawValue: 1 << 10)
    /// `URX`: the route's retries ran out (the last attempt's answer is the one sent).
    public static let upstreamRetryLimitExceeded = Self(rawValue: 1 << 11)
    /// `DI`: the fault filter delayed the request.
    public static let delayInjected = Self(rawValue: 1 << 12)
    /// `FI`: the fault filter aborted the request.
    public static let faultInjected = Self(rawValue: 1 << 13)
    /// `UAEX`: the external authorization service denied the request, or could not be asked.
    public static let unauthorizedExternalService = Self(rawValue: 1 << 14)

    /// In Envoy's order of printing.
    private static let names: [(Self, String)] = [
        (.noHealthyUpstream, "UH"), (.upstreamConnectionFailure, "UF"), (.upstreamOverflow, "UO"), (.noRoute, "NR"),
        (.delayInjected, "DI"), (.faultInjected, "FI"), (.unauthorizedExternalService, "UAEX"),
        (.upstreamRequestTimeout, "UT"), (.upstreamConnectionTermination, "UC"), (.downstreamConnectionTermination, "DC"),
        (.upstreamRetryLimitExceeded, "URX"),
        (.noClusterFound, "NC"), (.downstreamProtocolError, "DPE"), (.upstreamProtocolError, "UPE"), (.streamIdleTimeout, "SI"),
    ]

    public var description: String {
        guard !isEmpty else { return "-" }
        return Self.names.filter { contains($0.0) }.map(\.1).joined(separator: ",")
    }
}
