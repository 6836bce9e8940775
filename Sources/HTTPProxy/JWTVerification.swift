import HTTPTypes

/// One request's verification against a requirement: each provider's token is found and checked at
/// most once (a requirement may name a provider twice), and the tokens that verified are kept for what
/// they leave on the request.
struct JWTVerification {
    /// A token that verified, with its provider and where it was.
    struct Verified {
        var provider: JWTProvider
        var found: JWTProvider.FoundToken
        var token: JSONWebToken
    }

    let request: HTTPRequest
    /// Every provider of the filter, by name: what `allow_missing` and `allow_missing_or_failed` try.
    let providers: [JWTProvider]
    /// Seconds since the epoch.
    let now: Int64
    private(set) var verified: [Verified] = []
    private var outcomes: [String: JWTFailure?] = [:]

    init(request: HTTPRequest, providers: [JWTProvider], now: Int64) {
        self.request = request
        self.providers = providers
        self.now = now
    }

    /// nil when `provider` finds tokens in the request and every one verifies (for `audiences`, when given).
    mutating func verify(_ provider: JWTProvider, audiences: [String]?) -> JWTFailure? {
        let key = audiences.map { "\(provider.name)\u{0}\($0.joined(separator: "\u{0}"))" } ?? provider.name
        if let outcome = outcomes[key] { return outcome }
        let found = provider.findTokens(in: request)
        var outcome: JWTFailure? = found.isEmpty ? .missing : nil
        var tokens: [Verified] = []
        for candidate in found {
            do {
                tokens.append(Verified(provider: provider, found: candidate, token: try provider.verify(candidate, audiences: audiences, now: now)))
            } catch {
                outcome = error
                break
            }
        }
        if outcome == nil, !verified.contains(where: { $0.provider.name == provider.name }) { verified += tokens }
        outcomes[key] = outcome
        return outcome
    }
}
