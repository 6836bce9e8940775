import Authorization
import Configuration
import HTTPProxy
import SwiftProtobuf
import XDS

/// A filter chain's `envoy.filters.network.rbac` filters, in order (istiod's DENY before its ALLOW): a
/// connection goes on to the terminal filter only when every one allows it, checked once its peer is
/// known (after TLS) and before anything is connected upstream. A denied connection is closed.
struct NetworkAuthorization: Sendable, Equatable {
    static let typeName = "envoy.extensions.filters.network.rbac.v3.RBAC"

    private(set) var engines: [RBACEngine] = []
    /// What they were decoded from: two chains authorize alike when these are equal.
    private var sources: [Envoy_Extensions_Filters_Network_Rbac_V3_RBAC] = []

    var isEmpty: Bool { engines.isEmpty }

    /// Adds the filter whose `typed_config` is `any`; `path` names it in refusals, `field` in the fields
    /// not acted on. Both enforcement types are acted on alike: the rules read nothing a connection's
    /// later bytes change.
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
        engines.append(try RBACEngine(rules: proto.hasRules ? proto.rules : nil, shadowRules: proto.hasShadowRules ? proto.shadowRules : nil,
                                      unknownFields: UnknownFields.paths(in: proto), statPrefix: proto.statPrefix,
                                      shadowRulesStatPrefix: proto.shadowRulesStatPrefix, path: path, field: field, notActedOn: &notActedOn))
        sources.append(proto)
    }

    /// Every filter's verdict, in order, until one denies; all of them count.
    func allows(_ request: AuthorizationRequest) -> Bool {
        engines.allSatisfy { $0.check(request).allowed }
    }

    static func == (lhs: Self, rhs: Self) -> Bool { lhs.sources == rhs.sources }
}
