import Authorization
import Configuration
import HTTPProxy
import SwiftProtobuf
import XDS

/// A filter chain's authorization filters, in order: `envoy.filters.network.rbac` (istiod's CUSTOM
/// marking, DENY, ALLOW) and `envoy.filters.network.ext_authz` (istiod's CUSTOM with a gRPC provider). A
/// connection goes on to the terminal filter only when every one allows it, checked once its peer is
/// known (after TLS) and before anything is connected upstream. A denied connection is closed.
struct NetworkAuthorization: Sendable, Equatable {
    static let typeName = "envoy.extensions.filters.network.rbac.v3.RBAC"
    /// The name network RBAC leaves its shadow rules' outcome under, in the connection's metadata.
    static let rbacMetadataNamespace = "envoy.filters.network.rbac"

    enum Step: Sendable {
        case rbac(RBACEngine)
        case externalAuthorization(NetworkExternalAuthorization)
    }

    private(set) var steps: [Step] = []
    /// What they were decoded from: two chains authorize alike when these are equal.
    private var sources: [Google_Protobuf_Any] = []

    var isEmpty: Bool { steps.isEmpty }

    /// The RBAC filters' engines, whose counters the proxy binds.
    var engines: [RBACEngine] {
        steps.compactMap { if case .rbac(let engine) = $0 { engine } else { nil } }
    }

    /// Adds the RBAC filter whose `typed_config` is `any`; `path` names it in refusals, `field` in the
    /// fields not acted on. Both enforcement types are acted on alike: the rules read nothing a
    /// connection's later bytes change.
    mutating func add(_ any: Google_Protobuf_Any, path: String, field: String, notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        let proto: Envoy_Extensions_Filters_Network_Rbac_V3_RBAC
        do {
            proto = try Envoy_Extensions_Filters_Network_Rbac_V3_RBAC(unpackingAny: any)
        } catch {
            throw ConfigError(path: path, message: "is not an \(Self.typeName): \(error)")
        }
        if case .UNRECOGNIZED(let number) = proto.enforcementType {
            throw ConfigError(path: "\(path).enforcement_type", message: "\(number) is not ONE_TIME_ON_FIRST_BYTE or CONTINUOUS")
        }
        if proto.hasDelayDeny {
            notActedOn.append(.init(path: "\(field).delay_deny", reason: "a denied connection is closed at once"))
        }
        steps.append(.rbac(try RBACEngine(rules: proto.hasRules ? proto.rules : nil, shadowRules: proto.hasShadowRules ? proto.shadowRules : nil,
                                          unknownFields: UnknownFields.paths(in: proto), statPrefix: proto.statPrefix,
                                          shadowRulesStatPrefix: proto.shadowRulesStatPrefix, path: path, field: field, notActedOn: &notActedOn)))
        sources.append(any)
    }

    /// Adds the ext_authz filter whose `typed_config` is `any`.
    mutating func addExternalAuthorization(_ any: Google_Protobuf_Any, path: String, field: String,
                                           notActedOn: inout [FieldNotActedOn]) throws(ConfigError) {
        steps.append(.externalAuthorization(try NetworkExternalAuthorization(unpacking: any, path: path, field: field, notActedOn: &notActedOn)))
        sources.append(any)
    }

    static func == (lhs: Self, rhs: Self) -> Bool { lhs.sources == rhs.sources }
}
