import Atomics
import HTTPTypes
import NIOConcurrencyHelpers
import NIOCore

/// A provider's `remote_jwks`: the key set fetched with a GET of `http_uri.uri` through the proxy's own
/// cluster `http_uri.cluster`, kept for `cache_duration` (default 10 minutes) and fetched again by the
/// first request after that, while the last good set stays in use; a failed fetch keeps it too. Until
/// one fetch has succeeded there are no keys, and tokens fail (`Jwks remote fetch is failed`), never
/// pass. One fetch at a time, whichever event loop asks; shared by the listener's requests.
final class RemoteJWKS: Sendable {
    let request: HTTPRequest
    let cluster: String
    let timeout: TimeAmount
    /// Seconds a fetched set is used before it is fetched again.
    let cacheDuration: Int64

    /// The set fetched last (nil: none yet) and when to fetch it again (seconds since the epoch),
    /// replaced whole, so that a request reads it without a lock.
    private final class Fetched: AtomicReference, Sendable {
        let keys: JSONWebKeySet?
        let refreshAt: Int64

        init(keys: JSONWebKeySet?, refreshAt: Int64) {
            self.keys = keys
            self.refreshAt = refreshAt
        }
    }
    private let fetched = ManagedAtomic(Fetched(keys: nil, refreshAt: 0))
    /// The fetch under way, if any: taken only when the set is due.
    private let inFlight = NIOLockedValueBox<EventLoopFuture<Void>?>(nil)

    init(request: HTTPRequest, cluster: String, timeout: TimeAmount, cacheDuration: Int64) {
        self.request = request
        self.cluster = cluster
        self.timeout = timeout
        self.cacheDuration = cacheDuration
    }

    /// The last set fetched, if any.
    var keys: JSONWebKeySet? { fetched.load(ordering: .acquiring).keys }

    /// Fetches the set through `stream`'s cluster if it is due and no fetch is under way; the fetch under
    /// way (this one or another's), whose future completes when it is over, however it went; nil when
    /// the keys are fresh (the common case, without a lock).
    func refresh(through stream: any HTTPFilterCallbacks, now: Int64) -> EventLoopFuture<Void>? {
        let current = fetched.load(ordering: .acquiring)
        if current.keys != nil, now < current.refreshAt { return nil }
        let loop = stream.eventLoop
        let (future, promise): (EventLoopFuture<Void>, EventLoopPromise<Void>?) = inFlight.withLockedValue { inFlight in
            if let inFlight { return (inFlight, nil) }
            let promise = loop.makePromise(of: Void.self)
            inFlight = promise.futureResult
            return (promise.futureResult, promise)
        }
        guard let promise else { return future }
        let cacheDuration = cacheDuration
        fetch(through: stream).whenComplete { [fetched, inFlight] result in
            var set: JSONWebKeySet?
            if case .success(let answer?) = result, answer.status == 200,
               let parsed = try? JSONWebKeySet(json: String(buffer: answer.body)), !parsed.keys.isEmpty {
                set = parsed
            }
            // A failed fetch keeps the last good set; the next is tried a second from now.
            let next = set.map { Fetched(keys: $0, refreshAt: now + cacheDuration) }
                ?? Fetched(keys: fetched.load(ordering: .acquiring).keys, refreshAt: now + 1)
            fetched.store(next, ordering: .releasing)
            inFlight.withLockedValue { $0 = nil }
            promise.succeed(())
        }
        return future
    }

    /// One GET of the set through the cluster's connections on `stream`'s event loop, answered whole:
    /// nil when the cluster is unknown, has no endpoint, or did not answer within `timeout`.
    private func fetch(through stream: any HTTPFilterCallbacks) -> EventLoopFuture<(status: Int, body: ByteBuffer)?> {
        guard let (cluster, pools) = stream.upstream(named: self.cluster),
              case .success(let endpoint) = cluster.chooseEndpoint(for: stream.downstream, hash: nil) else {
            return stream.eventLoop.makeSucceededFuture(nil)
        }
        return HealthProbe.exchange(request, body: nil, version: .http1, to: endpoint, of: cluster, pools: pools, timeout: timeout)
            .assumeIsolated().map { answer -> (status: Int, body: ByteBuffer)? in
                cluster.requestEnded(at: endpoint)
                return answer.status.map { ($0, answer.body) }
            }.nonisolated()
    }
}
