import SwiftProtobuf

/// The resource types Capstan serves and consumes over xDS, in the order Envoy initializes them:
/// clusters, then their endpoints, then listeners that route to them. Secrets (certificates and trust
/// bundles) travel on their own SDS stream, from the agent.
public enum XDSResourceType: String, Sendable, CaseIterable, Comparable {
    case cluster = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    case endpoint = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    case listener = "type.googleapis.com/envoy.config.listener.v3.Listener"
    case secret = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

    public var typeURL: String { rawValue }

    /// `CDS`, `EDS`, `LDS`: what logs and metrics call them.
    public var service: String {
        switch self {
        case .cluster: "CDS"
        case .endpoint: "EDS"
        case .listener: "LDS"
        case .secret: "SDS"
        }
    }

    /// Whether an empty subscription means "all of them" (state of the world's wildcard).
    public var isWildcardByDefault: Bool { self != .endpoint && self != .secret }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

extension Google_Protobuf_Any {
    /// Packs a resource once, so that sending it to many streams copies bytes instead of encoding it
    /// again for each.
    public static func packed(_ message: some SwiftProtobuf.Message, as type: XDSResourceType) throws -> Google_Protobuf_Any {
        var any = Google_Protobuf_Any()
        any.typeURL = type.typeURL
        any.value = try message.serializedData()
        return any
    }
}
