import Configuration
import XDS

/// What a request must present (Envoy's `JwtRequirement`): one provider's valid token, any or all of
/// several requirements, or nothing. Istio's RequestAuthentication is
/// `requires_any: [{provider_name: X}, …, {allow_missing: {}}]`: a request without a token passes (an
/// AuthorizationPolicy may still refuse it), one with a bad token does not.
indirect enum JWTRequirement: Sendable {
    /// `provider_name`, or `provider_and_audiences` (audiences in place of the provider's).
    case provider(JWTProvider, audiences: [String]?)
    case any([JWTRequirement])
    case all([JWTRequirement])
    /// Passes when no provider finds a token; a token found must verify.
    case allowMissing
    /// Passes always; tokens that verify still leave their claims.
    case allowMissingOrFailed

    /// `providers` by name; `path` names the requirement in refusals.
    init(_ proto: Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtRequirement, providers: [String: JWTProvider],
         path: String) throws(ConfigError) {
        switch proto.requiresType {
        case .providerName(let name)?:
            guard let provider = providers[name] else {
                throw ConfigError(path: "\(path).provider_name", message: "\"\(name)\" is not among the providers")
            }
            self = .provider(provider, audiences: nil)
        case .providerAndAudiences(let entry)?:
            guard let provider = providers[entry.providerName] else {
                throw ConfigError(path: "\(path).provider_and_audiences.provider_name", message: "\"\(entry.providerName)\" is not among the providers")
            }
            self = .provider(provider, audiences: entry.audiences)
        case .requiresAny(let list)?:
            self = .any(try Self.list(list.requirements, providers: providers, path: "\(path).requires_any.requirements"))
        case .requiresAll(let list)?:
            self = .all(try Self.list(list.requirements, providers: providers, path: "\(path).requires_all.requirements"))
        case .allowMissing?:
            self = .allowMissing
        case .allowMissingOrFailed?:
            self = .allowMissingOrFailed
        case nil:
            // Envoy: an empty requirement verifies nothing.
            self = .allowMissingOrFailed
        }
    }

    private static func list(_ requirements: [Envoy_Extensions_Filters_Http_JwtAuthn_V3_JwtRequirement],
                             providers: [String: JWTProvider], path: String) throws(ConfigError) -> [JWTRequirement] {
        guard requirements.count >= 2 else {
            throw ConfigError(path: path, message: "needs at least 2 requirements (Envoy's validation)")
        }
        var decoded: [JWTRequirement] = []
        for (index, requirement) in requirements.enumerated() {
            decoded.append(try JWTRequirement(requirement, providers: providers, path: "\(path)[\(index)]"))
        }
        return decoded
    }

    /// nil when `verification`'s request meets this requirement, else why not.
    func check(_ verification: inout JWTVerification) -> JWTFailure? {
        switch self {
        case .provider(let provider, let audiences):
            return verification.verify(provider, audiences: audiences)
        case .all(let requirements):
            for requirement in requirements {
                if let failure = requirement.check(&verification) { return failure }
            }
            return nil
        case .any(let requirements):
            var failures: [JWTFailure] = []
            var allowsMissing = false
            for requirement in requirements {
                if case .allowMissing = requirement { allowsMissing = true; continue }
                guard let failure = requirement.check(&verification) else { return nil }
                failures.append(failure)
            }
            if failures.isEmpty { return JWTRequirement.allowMissing.check(&verification) }
            if allowsMissing, failures.allSatisfy({ $0 == .missing }) { return nil }
            // The failure to report: the first that is about a token found, else "missing".
            return failures.first { $0 != .missing } ?? .missing
        case .allowMissing:
            // Every provider's token, if any: one verifying is enough, none found passes too.
            var failure: JWTFailure?
            for provider in verification.providers {
                guard let found = verification.verify(provider, audiences: nil) else { return nil }
                if found != .missing, failure == nil { failure = found }
            }
            return failure
        case .allowMissingOrFailed:
            for provider in verification.providers { _ = verification.verify(provider, audiences: nil) }
            return nil
        }
    }
}
