import SwiftProtobuf

/// The resource types Capstan serves and consumes over xDS, in the order Envoy initializes them:
/// clusters, then their endpoints, then listeners that route to them, then the route configurations
/// the listeners' HTTP connection managers name. Secrets (certificates and trust bundles) travel on
/// their own SDS stream, from the agent.
public enum XDSResourceType: String, Sendable, CaseIterable, Comparable {
    case cluster = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    case endpoint = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    case listener = "type.googleapis.com/envoy.config.listener.v3.Listener"
    case route = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    /// Istio's NDS: the name table the agent's DNS proxy answers from (the agent consumes it; the proxy never asks).
    case nameTable = "type.googleapis.com/istio.networking.nds.v1.NameTable"
    case secret = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

    public var typeURL: String { rawValue }

    /// `CDS`, `EDS`, `LDS`, `RDS`: what logs and metrics call them.
    public var service: String {
        switch self {
        case .cluster: "CDS"
        case .endpoint: "EDS"
        case .listener: "LDS"
        case .route: "RDS"
        case .nameTable: "NDS"
        case .secret: "SDS"
        }
    }

    /// Whether an empty subscription means "all of them" (state of the world's wildcard): for LDS and
    /// CDS, and NDS's one table; endpoints, routes and secrets are asked for by name.
    public var isWildcardByDefault: Bool { self == .cluster || self == .listener || self == .nameTable }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

extension Google_Protobuf_Any {
    /// Packs a resource once, so that sending it to many streams copies bytes instead of encoding it
    /// again for each. Map entries (a cluster's metadata `Struct`s) in key order: equal resources pack
    /// to equal bytes, which content-based versions compare.
    public static func packed(_ message: some SwiftProtobuf.Message, as type: XDSResourceType) throws -> Google_Protobuf_Any {
        var any = Google_Protobuf_Any()
        any.typeURL = type.typeURL
        var options = BinaryEncodingOptions()
        options.useDeterministicOrdering = true
        any.value = try message.serializedData(options: options)
        return any
    }
}
