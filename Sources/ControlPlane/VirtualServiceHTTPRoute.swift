extension VirtualService {
    /// One of a VirtualService's `http` routes, in the subset Capstan acts on: which requests (`match`:
    /// ORed, each one's conditions ANDed; none matches every request) and what happens to them, a
    /// weighted `route`, a `redirect` or a `directResponse`.
    public struct HTTPRoute: Sendable, Equatable {
        public enum Action: Sendable, Equatable {
            case route([Destination])
            case redirect(Redirect)
            case directResponse(status: Int, body: String?)
            /// `delegate`: the routes of another VirtualService (one without hosts), merged into this one's
            /// place as Istio merges them (``VirtualServiceDelegation``); none is left once the mesh is read.
            case delegate(name: String, namespace: String)
        }

        public var name: String?
        public var matches: [HTTPMatch]
        public var action: Action
        /// `headers`: request and response changes on every request the route takes.
        public var headers: HeaderOperations?
        /// `rewrite.uri`: replaces the part of the path the match's `uri` matched (the whole path for
        /// an exact or regex match, the prefix for a prefix match), as Envoy's `prefix_rewrite` does.
        public var rewriteURI: String?
        /// `rewrite.uriRegexRewrite`: RE2 `match` replaced by `rewrite` (`\\1` for groups) in the path.
        public var rewriteURIRegex: (match: String, rewrite: String)?
        /// `rewrite.authority`.
        public var rewriteAuthority: String?
        /// `timeout`; nil: none (istiod's `0s`).
        public var timeout: Duration?
        /// `retries`; nil: Istio's default policy.
        public var retries: Retries?
        /// `fault`: delays and aborts injected by the caller's proxy.
        public var fault: Fault?
        /// `mirror` (with `mirrorPercentage`) and `mirrors`: where copies of the requests go, in order.
        public var mirrors: [Mirror] = []
        /// `corsPolicy`: which origins browsers may call the route from.
        public var cors: CORSPolicy?

        /// `corsPolicy` of a route, as Istio defines it.
        public struct CORSPolicy: Sendable, Equatable {
            /// `allowOrigins` (or the deprecated `allowOrigin`, exact matches).
            public var allowOrigins: [StringMatch] = []
            public var allowMethods: [String] = []
            public var allowHeaders: [String] = []
            public var exposeHeaders: [String] = []
            /// `maxAge`, sent in whole seconds.
            public var maxAge: Duration?
            public var allowCredentials: Bool?
            /// `unmatchedPreflights: IGNORE`: a preflight from another origin is answered by the proxy
            /// rather than sent upstream (`FORWARD`, the default).
            public var ignoresUnmatchedPreflights = false
        }

        /// A destination requests are copied to (shadowed), and on which share of them.
        public struct Mirror: Sendable, Equatable {
            public enum Share: Sendable, Equatable {
                /// Neither percentage given: every request.
                case all
                /// `mirrorPercentage.value` / `mirrors[].percentage.value`, above 0 and up to 100, with fractions.
                case percentage(Double)
                /// The deprecated `mirrorPercent`, a whole number above 0 and up to 100.
                case percent(Int)
            }

            public var destination: Destination
            public var share: Share
            /// The field it was read from, within the route (`mirror`, `mirrors[1].destination`), for messages.
            public var field: String = "mirror"
        }

        /// `fault` of a route: a delay, an abort, or both, each on a share of requests.
        public struct Fault: Sendable, Equatable {
            /// `delay.fixedDelay`, on `percentage.value` % of requests (else the deprecated integer `percent`).
            public var delay: (fixed: Duration, share: Share)?
            /// `abort.httpStatus` or `abort.grpcStatus`, on `percentage.value` % of requests.
            public var abort: (status: AbortStatus, percentage: Double?)?

            public enum Share: Sendable, Equatable {
                /// `percentage.value`, 0-100 with fractions.
                case percentage(Double)
                /// The deprecated `percent`, a whole number 0-100 (0 when neither is given, as istiod sends it).
                case percent(Int)
            }

            public enum AbortStatus: Sendable, Equatable {
                case http(Int)
                /// gRPC's code name (`UNAVAILABLE`) and number.
                case grpc(name: String, code: Int)
            }

            public static func == (lhs: Self, rhs: Self) -> Bool {
                lhs.delay?.fixed == rhs.delay?.fixed && lhs.delay?.share == rhs.delay?.share
                    && lhs.abort?.status == rhs.abort?.status && lhs.abort?.percentage == rhs.abort?.percentage
            }
        }

        /// `retries` of a route, as istiod turns them into Envoy's retry policy.
        public struct Retries: Sendable, Equatable {
            /// 0 turns retries off.
            public var attempts: Int
            public var perTryTimeout: Duration?
            /// `retryOn`: Envoy's conditions, and HTTP status codes (retried as `retriable-status-codes`).
            public var retryOn: [String]
            /// `retryRemoteLocalities`: retries leave out the priorities (localities) tried, as Envoy's
            /// `previous_priorities`.
            public var retryRemoteLocalities = false
        }

        public static func == (lhs: Self, rhs: Self) -> Bool {
            lhs.name == rhs.name && lhs.matches == rhs.matches && lhs.action == rhs.action && lhs.headers == rhs.headers
                && lhs.rewriteURI == rhs.rewriteURI && lhs.rewriteURIRegex?.match == rhs.rewriteURIRegex?.match
                && lhs.rewriteURIRegex?.rewrite == rhs.rewriteURIRegex?.rewrite && lhs.rewriteAuthority == rhs.rewriteAuthority
                && lhs.timeout == rhs.timeout && lhs.retries == rhs.retries && lhs.fault == rhs.fault && lhs.mirrors == rhs.mirrors
                && lhs.cors == rhs.cors
        }
    }

    /// `match` of an `http` route: all its conditions hold.
    public struct HTTPMatch: Sendable, Equatable {
        public var name: String?
        public var uri: StringMatch?
        public var scheme: StringMatch?
        public var method: StringMatch?
        public var authority: StringMatch?
        /// Header name (lower case) to the match its value must satisfy.
        public var headers: [(name: String, match: StringMatch)] = []
        /// Headers whose value must not satisfy the match (or be absent).
        public var withoutHeaders: [(name: String, match: StringMatch)] = []
        public var queryParams: [(name: String, match: StringMatch)] = []
        public var ignoreURICase = false
        /// Only requests to this service port; nil: any.
        public var port: Int?
        /// Only on these gateways (`mesh`: sidecars; else `namespace/name`); nil: every one the VirtualService is bound to.
        public var gateways: [String]?
        /// `sourceLabels`: only for callers (sidecars) whose workload has these labels.
        public var sourceLabels: [String: String] = [:]
        /// `sourceNamespace`: only for callers in this namespace.
        public var sourceNamespace: String?

        /// Whether the match may apply to requests from `workload`'s sidecar, as istiod's `sourceMatchHTTP`
        /// decides when it builds that proxy's routes: with `gateways` named, those alone decide (later);
        /// else the caller must carry `sourceLabels` and be in `sourceNamespace`.
        func applies(to workload: ProxyWorkload) -> Bool {
            if gateways != nil { return true }
            return sourceLabels.allSatisfy { workload.labels[$0.key] == $0.value } && (sourceNamespace.map { $0 == workload.namespace } ?? true)
        }

        /// Whether the match depends on who calls.
        var namesSource: Bool { !sourceLabels.isEmpty || sourceNamespace != nil }

        public static func == (lhs: Self, rhs: Self) -> Bool {
            func same(_ a: [(name: String, match: StringMatch)], _ b: [(name: String, match: StringMatch)]) -> Bool {
                a.count == b.count && zip(a, b).allSatisfy { $0.name == $1.name && $0.match == $1.match }
            }
            return lhs.name == rhs.name && lhs.uri == rhs.uri && lhs.scheme == rhs.scheme && lhs.method == rhs.method
                && lhs.authority == rhs.authority && same(lhs.headers, rhs.headers) && same(lhs.withoutHeaders, rhs.withoutHeaders)
                && same(lhs.queryParams, rhs.queryParams) && lhs.ignoreURICase == rhs.ignoreURICase && lhs.port == rhs.port
                && lhs.gateways == rhs.gateways && lhs.sourceLabels == rhs.sourceLabels && lhs.sourceNamespace == rhs.sourceNamespace
        }
    }

    /// Istio's `StringMatch`: one of `exact`, `prefix`, `regex` (RE2, matching the whole value).
    public enum StringMatch: Sendable, Equatable {
        case exact(String)
        case prefix(String)
        case regex(String)
    }

    /// `redirect`: the parts of the request's URL to replace; nil keeps the request's.
    public struct Redirect: Sendable, Equatable {
        public var uri: String?
        public var authority: String?
        public var port: Int?
        public var scheme: String?
        /// 301 unless given.
        public var code: Int = 301
    }
}

/// Istio's `Headers`: `request` and `response`, each with `set` (replace), `add` (append) and `remove`.
public struct HeaderOperations: Sendable, Equatable {
    public struct Changes: Sendable, Equatable {
        /// `set`: replaces the header's values.
        public var overwrite: [(name: String, value: String)] = []
        /// `add`: appends a value.
        public var append: [(name: String, value: String)] = []
        public var remove: [String] = []

        public var isEmpty: Bool { overwrite.isEmpty && append.isEmpty && remove.isEmpty }

        public static func == (lhs: Self, rhs: Self) -> Bool {
            func same(_ a: [(name: String, value: String)], _ b: [(name: String, value: String)]) -> Bool {
                a.count == b.count && zip(a, b).allSatisfy { $0 == $1 }
            }
            return same(lhs.overwrite, rhs.overwrite) && same(lhs.append, rhs.append) && lhs.remove == rhs.remove
        }
    }

    public var request = Changes()
    public var response = Changes()
}
