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

    private struct State {
        var keys: JSONWebKeySet?
        /// When `keys` are to be fetched again (seconds since the epoch).
        var refreshAt: Int64 = 0
        var inFlight: EventLoopFuture<Void>?
    }
    private let state = NIOLockedValueBox(State())

    init(request: HTTPRequest, cluster: String, timeout: TimeAmount, cacheDuration: Int64) {
        self.request = request
        self.cluster = cluster
        self.timeout = timeout
        self.cacheDuration = cacheDuration
    }

    /// The last set fetched, if any.
    var keys: JSONWebKeySet? { state.withLockedValue { $0.keys } }

    /// Fetches the set through `stream` if it is due and no fetch is under way; the fetch under way (this
    /// one or another's), whose future completes when it is over, however it went; nil when the keys
    /// are fresh.
    func refresh(through stream: any HTTPFilterCallbacks, now: Int64) -> EventLoopFuture<Void>? {
        let loop = stream.eventLoop
        let (future, promise): (EventLoopFuture<Void>?, EventLoopPromise<Void>?) = state.withLockedValue { state in
            if let inFlight = state.inFlight { return (inFlight, nil) }
            guard state.keys == nil || now >= state.refreshAt else { return (nil, nil) }
            let promise = loop.makePromise(of: Void.self)
            state.inFlight = promise.futureResult
            return (promise.futureResult, promise)
        }
        guard let promise else { return future }
        let cacheDuration = cacheDuration
        stream.fetch(request, cluster: cluster, timeout: timeout).whenComplete { [state] result in
            var fetched: JSONWebKeySet?
            if case .success(let answer?) = result, answer.status == 200,
               let set = try? JSONWebKeySet(json: String(buffer: answer.body)), !set.keys.isEmpty {
                fetched = set
            }
            state.withLockedValue { state in
                state.inFlight = nil
                if let fetched {
                    state.keys = fetched
                    state.refreshAt = now + cacheDuration
                } else {
                    // The last good set stays; the next fetch is tried a second from now.
                    state.refreshAt = now + 1
                }
            }
            promise.succeed(())
        }
        return promise.futureResult
    }
}
