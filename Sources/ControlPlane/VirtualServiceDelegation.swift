/// Istio's VirtualService delegation (1.8+): a route of a root VirtualService (one with hosts) that says
/// `delegate: {name, namespace}` is replaced by the `http` routes of that VirtualService (one without
/// hosts, usually owned by another team), each merged with the root route as istiod merges them:
///
/// - matches: each of the delegate route's matches must fall within one of the root route's (a prefix
///   within its prefix, an exact path under it, the same exact value; a regex on one side only if the
///   other says nothing there; headers, query parameters, gateways and callers no looser) and takes the root's
///   conditions it does not set; a delegate route with a match outside every root match is left out;
/// - the delegate route's name is prefixed with the root route's (`root-delegate`);
/// - `rewrite`, `timeout`, `retries`, `fault`, `mirror`, `corsPolicy` and `headers` are the delegate
///   route's, or the root route's when it has none; the action (route, redirect, direct response) is
///   always the delegate's.
///
/// Delegation is one level deep: a delegate's routes may not delegate again.
enum VirtualServiceDelegation {
    /// `delegate`'s routes in `root`'s place, and the indices of those left out for a conflict.
    static func merged(root: VirtualService.HTTPRoute, delegate: [VirtualService.HTTPRoute])
        -> (routes: [VirtualService.HTTPRoute], conflicting: [Int]) {
        var routes: [VirtualService.HTTPRoute] = []
        var conflicting: [Int] = []
        for (index, route) in delegate.enumerated() {
            if let merged = merged(root: root, route) { routes.append(merged) } else { conflicting.append(index) }
        }
        return (routes, conflicting)
    }

    /// One delegate route merged with the root route; nil when their matches conflict.
    static func merged(root: VirtualService.HTTPRoute, _ delegate: VirtualService.HTTPRoute) -> VirtualService.HTTPRoute? {
        guard let matches = mergedMatches(root: root.matches, delegate: delegate.matches) else { return nil }
        var route = delegate
        route.matches = matches
        route.name = joinedName(root.name, delegate.name)
        if delegate.rewriteURI == nil && delegate.rewriteURIRegex == nil && delegate.rewriteAuthority == nil {
            route.rewriteURI = root.rewriteURI
            route.rewriteURIRegex = root.rewriteURIRegex
            route.rewriteAuthority = root.rewriteAuthority
        }
        route.timeout = delegate.timeout ?? root.timeout
        route.retries = delegate.retries ?? root.retries
        route.fault = delegate.fault ?? root.fault
        if delegate.mirrors.isEmpty { route.mirrors = root.mirrors }
        route.cors = delegate.cors ?? root.cors
        route.headers = delegate.headers ?? root.headers
        return route
    }

    /// Every delegate match merged with each root match it does not conflict with; nil when one of them
    /// fits no root match. No matches on one side: the other side's.
    static func mergedMatches(root: [VirtualService.HTTPMatch], delegate: [VirtualService.HTTPMatch]) -> [VirtualService.HTTPMatch]? {
        if root.isEmpty { return delegate }
        if delegate.isEmpty { return root }
        var matches: [VirtualService.HTTPMatch] = []
        for leaf in delegate {
            let fitting = root.filter { !conflicts(root: $0, leaf: leaf) }
            guard !fitting.isEmpty else { return nil }
            matches += fitting.map { merged(root: $0, leaf: leaf) }
        }
        return matches
    }

    private static func merged(root: VirtualService.HTTPMatch, leaf: VirtualService.HTTPMatch) -> VirtualService.HTTPMatch {
        var match = leaf
        match.name = joinedName(root.name, leaf.name)
        match.uri = leaf.uri ?? root.uri
        match.scheme = leaf.scheme ?? root.scheme
        match.method = leaf.method ?? root.method
        match.authority = leaf.authority ?? root.authority
        match.headers = overlaid(root.headers, leaf.headers)
        match.withoutHeaders = overlaid(root.withoutHeaders, leaf.withoutHeaders)
        match.queryParams = overlaid(root.queryParams, leaf.queryParams)
        match.port = leaf.port ?? root.port
        match.gateways = leaf.gateways ?? root.gateways
        match.sourceLabels = root.sourceLabels.merging(leaf.sourceLabels) { _, leaf in leaf }
        match.sourceNamespace = leaf.sourceNamespace ?? root.sourceNamespace
        return match
    }

    /// The root's named matches with the leaf's over them, by name.
    private static func overlaid(_ root: [(name: String, match: VirtualService.StringMatch)],
                                 _ leaf: [(name: String, match: VirtualService.StringMatch)]) -> [(name: String, match: VirtualService.StringMatch)] {
        root.filter { entry in !leaf.contains { $0.name == entry.name } } + leaf
    }

    /// Whether `leaf` asks for something `root` cannot hold, as istiod's `hasConflict` decides.
    static func conflicts(root: VirtualService.HTTPMatch, leaf: VirtualService.HTTPMatch) -> Bool {
        let pairs = [(root.uri, leaf.uri), (root.scheme, leaf.scheme), (root.method, leaf.method), (root.authority, leaf.authority)]
        if pairs.contains(where: { conflicts(root: $0, leaf: $1) }) { return true }
        for (named, rootNamed) in [(leaf.headers, root.headers), (leaf.withoutHeaders, root.withoutHeaders), (leaf.queryParams, root.queryParams)] {
            for entry in named where conflicts(root: rootNamed.first { $0.name == entry.name }?.match, leaf: entry.match) { return true }
        }
        if root.ignoreURICase != leaf.ignoreURICase { return true }
        if let rootPort = root.port, let leafPort = leaf.port, rootPort != leafPort { return true }
        if let rootGateways = root.gateways, let leafGateways = leaf.gateways, !Set(leafGateways).isSubset(of: rootGateways) { return true }
        // The caller: the delegate names the root's namespace again, and no label against the root's.
        if let namespace = root.sourceNamespace, leaf.sourceNamespace != namespace { return true }
        if leaf.sourceLabels.contains(where: { key, value in root.sourceLabels[key].map { $0 != value } ?? false }) { return true }
        return false
    }

    /// A string condition of the delegate within the root's: either unset, or a prefix or exact value
    /// under the root's prefix, or the root's exact value; a regex only opposite nothing.
    private static func conflicts(root: VirtualService.StringMatch?, leaf: VirtualService.StringMatch?) -> Bool {
        guard let root, let leaf else { return false }
        switch (root, leaf) {
        case (.regex, _), (_, .regex): return true
        case (.exact(let value), .exact(let other)): return value != other
        case (.exact, .prefix): return true
        case (.prefix(let prefix), .prefix(let other)), (.prefix(let prefix), .exact(let other)): return !other.hasPrefix(prefix)
        }
    }

    private static func joinedName(_ root: String?, _ leaf: String?) -> String? {
        guard let leaf else { return root }
        guard let root else { return leaf }
        return root + "-" + leaf
    }
}
