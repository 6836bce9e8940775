import Authorization
import Configuration
import HTTPProxy
import SwiftProtobuf
import XDS

/// `envoy.filters.network.ext_authz` as configured (istiod writes it for a CUSTOM AuthorizationPolicy
/// with a gRPC provider, on TCP chains): the service asked about a connection, before anything is
/// connected upstream, when the connection's metadata says so (the marking RBAC filter's shadow rules
/// matched it). The check carries the connection's peers, no HTTP attributes. Fields outside the
/// subset are refused; `stat_prefix` is listed, as Capstan keeps no `ext_authz.*` counters for it.
struct NetworkExternalAuthorization: Sendable {
    static let typeName = "envoy.extensions.filters.network.ext_authz.v3.ExtAuthz"

    var service: ExternalAuthorizationService
    /// A check that fails (unreachable, timed out, an error) lets the connection go on.
    var failureModeAllow: Bool
    /// Only connections whose metadata matches are checked; nil: every connection.
    var enabledMetadata: MetadataMatcher?

    init(unpacking any: Google_Protobuf_Any, path: String, field: String, notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        let proto: Envoy_Extensions_Filters_Network_ExtAuthz_V3_ExtAuthz
        do {
            proto = try Envoy_Extensions_Filters_Network_ExtAuthz_V3_ExtAuthz(unpackingAny: any)
        } catch {
            throw ConfigError(path: path, message: "is not an \(Self.typeName): \(error)")
        }
        // Outside the subset (bootstrap metadata labels, TLS session, metadata context, an alert on
        // denial): each could change what a check decides or how a denial looks.
        if let unknown = UnknownFields.paths(in: proto).first(where: { !$0.contains(".") }) {
            throw ConfigError(path: "\(path).\(unknown)", message: "field \(unknown) is not supported by Capstan's network ext_authz, and leaving it out could let through what the service would stop")
        }
        for nested in UnknownFields.paths(in: proto) where nested.hasPrefix("#2.") {
            notActedOn.append(.init(path: "\(field).grpc_service.\(nested.dropFirst(3))", reason: "outside Capstan's GrpcService (retry_policy, initial_metadata, …): the check is sent once, with no extra metadata"))
        }
        guard proto.hasGrpcService else { throw ConfigError(path: "\(path).grpc_service", message: "is required") }
        service = try ExternalAuthorizationService(proto.grpcService, apiVersion: proto.transportApiVersion, path: path)
        failureModeAllow = proto.failureModeAllow
        enabledMetadata = proto.hasFilterEnabledMetadata
            ? try MetadataMatcher(proto.filterEnabledMetadata, path: "\(path).filter_enabled_metadata") : nil
        if proto.includePeerCertificate {
            notActedOn.append(.init(path: "\(field).include_peer_certificate", reason: "Capstan sends the peer's principal with a check, not its certificate"))
        }
        if !proto.statPrefix.isEmpty {
            notActedOn.append(.init(path: "\(field).stat_prefix", reason: "Capstan keeps no ext_authz counters for network checks"))
        }
    }
}
