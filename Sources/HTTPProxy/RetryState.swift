import HTTPTypes
import NIOHTTPTypes
import Routing

/// One request's retries under its route's ``RetryPolicy``: how many attempts were made, which hosts they
/// went to, and the request body kept to send again. The body is kept up to a limit (Envoy's
/// per-connection buffer, 1 MiB by default); a request whose body outgrows it is not retried.
struct RetryState {
    let policy: RetryPolicy
    /// GET, HEAD, PUT, DELETE, OPTIONS and TRACE (RFC 9110): anything else is retried only when it never
    /// reached the upstream.
    let idempotent: Bool
    /// Attempts started, the first included.
    private(set) var attempts = 1
    /// The hosts attempts went to, for `previous_hosts`.
    private(set) var triedHosts: [UpstreamEndpoint] = []
    /// Under `previous_priorities`: the priorities tried, and the load retries use.
    var priorities: PreviousPriorities?
    /// The request's parts after its head, as the downstream sent them; nil once they outgrew the limit.
    private(set) var keptParts: [HTTPRequestPart]? = []
    private var keptBytes = 0
    private let limit: Int

    static let defaultBufferLimit = 1 << 20

    init(policy: RetryPolicy, method: HTTPRequest.Method, limit: Int = Self.defaultBufferLimit) {
        self.policy = policy
        idempotent = [.get, .head, .put, .delete, .options, .trace].contains(method)
        self.limit = limit
        priorities = policy.previousPrioritiesUpdateFrequency.map(PreviousPriorities.init(updateFrequency:))
    }

    /// Keeps a body part or the end, to send again on the next attempt.
    mutating func keep(_ part: HTTPRequestPart) {
        guard keptParts != nil else { return }
        if case .body(let body) = part {
            keptBytes += body.readableBytes
            if keptBytes > limit {
                keptParts = nil
                return
            }
        }
        keptParts?.append(part)
    }

    enum Verdict {
        case retry
        /// Retriable, but the attempts ran out: Envoy's `URX`.
        case limitReached
        case no
    }

    /// Whether another attempt follows `failure` of the current one.
    func verdict(after failure: RetryPolicy.Failure) -> Verdict {
        guard policy.retries(failure, idempotent: idempotent), keptParts != nil else { return .no }
        return attempts <= policy.retries ? .retry : .limitReached
    }

    mutating func attemptFailed(at host: UpstreamEndpoint) {
        triedHosts.append(host.pooled)
        priorities?.attempted(priority: host.priority)
        attempts += 1
    }

    /// Whether a retry should look for another host than `host`.
    func avoids(_ host: UpstreamEndpoint) -> Bool {
        policy.avoidsPreviousHosts && triedHosts.contains(host.pooled)
    }
}
