import Routing

/// RBAC policies compiled, once per configuration, into one flat list of match steps whose payloads are
/// plain values (indices, address ranges, ports). A check walks arrays of such values and retains
/// nothing per step. Walking the tree of ``Permission`` and ``Principal`` enums did: with 20 policies,
/// reference counting was two thirds of the RBAC filter's time.
///
/// A policy is two steps, its permissions' `either` and its principals' `either`, each followed by what
/// it holds. An operator step records where its operands end, so a check skips what it need not ask.
/// A policy matches when both sides do, so the side with the cheaper tests is asked first: a caller's
/// address or identity usually rules a policy out before its header and path tests need running.
struct CompiledPolicies: Sendable {
    enum Step: Sendable, BitwiseCopyable {
        /// The steps up to `end` (exclusive) are its operands, each with what follows it.
        case all(end: Int)
        case either(end: Int)
        /// One operand follows, ending at `end`.
        case not(end: Int)
        case always
        /// `headers[index]`.
        case header(Int)
        /// `strings[index]`, on the path without its query.
        case urlPath(Int)
        /// `strings[index]`, on the TLS server name (the empty string without one, as Envoy matches it).
        case requestedServerName(Int)
        /// A verified peer whose SPIFFE ID `strings[index]` accepts; nil: any verified peer.
        case authenticated(Int?)
        case filterState(Principal.FilterStateKey, Int)
        /// `metadata[index]`.
        case metadata(Int)
        case sourceIP(CIDRRange)
        case destinationIP(CIDRRange)
        case destinationPort(Int)
        case destinationPorts(lower: Int, upper: Int)
    }

    /// Where a policy's two sides (permissions and principals) start in `steps`, the cheaper to check first.
    struct Entry: Sendable, BitwiseCopyable {
        var first: Int
        var second: Int
    }

    private(set) var steps: [Step] = []
    private(set) var entries: [Entry] = []
    private var headers: [HeaderMatcher] = []
    private var strings: [StringMatcher] = []
    private var metadata: [MetadataMatcher] = []
    /// The same matchers unretained, for checks: `headers` and `strings` keep them alive, and a check
    /// then asks one without retaining and releasing it.
    private var headerMatchers: [Unmanaged<HeaderMatcher>] = []
    private var stringMatchers: [Unmanaged<StringMatcher>] = []

    init(_ policies: [(permissions: [Permission], principals: [Principal])]) {
        for policy in policies {
            let permissions = steps.count
            appendEither(policy.permissions, append: { $0.append($1) })
            let principals = steps.count
            appendEither(policy.principals, append: { $0.append($1) })
            let cheaperPrincipals = cost(principals..<steps.count) < cost(permissions..<principals)
            entries.append(cheaperPrincipals ? Entry(first: principals, second: permissions) : Entry(first: permissions, second: principals))
        }
        headerMatchers = headers.map(Unmanaged.passUnretained)
        stringMatchers = strings.map(Unmanaged.passUnretained)
    }

    /// The index of the first policy `request` matches.
    func firstMatch(_ request: AuthorizationRequest) -> Int? {
        for index in entries.indices {
            let entry = entries[index]
            if matches(at: entry.first, request), matches(at: entry.second, request) { return index }
        }
        return nil
    }

    // MARK: Checking

    private func matches(at index: Int, _ request: AuthorizationRequest) -> Bool {
        switch steps[index] {
        case .all(let end):
            var operand = index + 1
            while operand < end {
                guard matches(at: operand, request) else { return false }
                operand = self.end(of: operand)
            }
            return true
        case .either(let end):
            var operand = index + 1
            while operand < end {
                if matches(at: operand, request) { return true }
                operand = self.end(of: operand)
            }
            return false
        case .not: return !matches(at: index + 1, request)
        case .always: return true
        case .header(let matcher):
            return request.isHTTP && headerMatchers[matcher]._withUnsafeGuaranteedRef { $0.matches(request.headers) }
        case .urlPath(let matcher): return request.hasPath && matches(string: matcher, request.pathWithoutQuery)
        case .requestedServerName(let matcher): return matches(string: matcher, Substring(request.requestedServerName ?? ""))
        case .authenticated(let matcher):
            guard let principal = request.peerPrincipal else { return false }
            return matcher.map { matches(string: $0, Substring(principal)) } ?? true
        case .filterState(let key, let matcher):
            guard let value = key == .peerPrincipal ? request.peerPrincipal : request.localPrincipal else { return false }
            return matches(string: matcher, Substring(value))
        case .metadata(let matcher): return metadata[matcher].matches(request.metadata)
        case .sourceIP(let range): return request.sourceAddress.map(range.contains) ?? false
        case .destinationIP(let range): return request.destinationAddress.map(range.contains) ?? false
        case .destinationPort(let port): return request.destinationPort == port
        case .destinationPorts(let lower, let upper): return request.destinationPort.map { (lower...upper).contains($0) } ?? false
        }
    }

    private func matches(string matcher: Int, _ text: Substring) -> Bool {
        stringMatchers[matcher]._withUnsafeGuaranteedRef { $0.matches(text) }
    }

    /// The index after the step at `index` and its operands.
    private func end(of index: Int) -> Int {
        switch steps[index] {
        case .all(let end), .either(let end), .not(let end): end
        default: index + 1
        }
    }

    // MARK: Compiling

    /// A rough cost of checking `range` of `steps`: addresses and ports are compared as numbers, names
    /// and paths byte by byte, headers found among the request's first, metadata looked up by path.
    private func cost(_ range: Range<Int>) -> Int {
        steps[range].reduce(0) { total, step in
            total + {
                switch step {
                case .all, .either, .not, .always, .sourceIP, .destinationIP, .destinationPort, .destinationPorts: 1
                case .urlPath, .requestedServerName, .authenticated, .filterState: 4
                case .header: 8
                case .metadata: 16
                }
            }()
        }
    }

    /// `either` over `operands`, or the one operand itself.
    private mutating func appendEither<Rule>(_ operands: [Rule], append: (inout Self, Rule) -> Void) {
        guard operands.count != 1 else { return append(&self, operands[0]) }
        appendOperator(operands, make: { .either(end: $0) }, append: append)
    }

    /// An operator step over `operands`, its end filled in once they are appended.
    private mutating func appendOperator<Rule>(_ operands: [Rule], make: (Int) -> Step, append: (inout Self, Rule) -> Void) {
        let index = steps.count
        steps.append(.always)
        for operand in operands { append(&self, operand) }
        steps[index] = make(steps.count)
    }

    private mutating func append(_ permission: Permission) {
        let step: Step
        switch permission {
        case .all(let rules): return appendOperator(rules, make: { .all(end: $0) }, append: { $0.append($1) })
        case .either(let rules): return appendOperator(rules, make: { .either(end: $0) }, append: { $0.append($1) })
        case .not(let rule): return appendOperator([rule], make: { .not(end: $0) }, append: { $0.append($1) })
        case .anything: step = .always
        case .header(let matcher): step = .header(Self.add(matcher, to: &headers))
        case .urlPath(let matcher): step = .urlPath(Self.add(matcher, to: &strings))
        case .requestedServerName(let matcher): step = .requestedServerName(Self.add(matcher, to: &strings))
        case .destinationIP(let range): step = .destinationIP(range)
        case .destinationPort(let port): step = .destinationPort(port)
        case .destinationPorts(let ports): step = .destinationPorts(lower: ports.lowerBound, upper: ports.upperBound)
        case .metadata(let matcher): step = .metadata(Self.add(matcher, to: &metadata))
        }
        steps.append(step)
    }

    private mutating func append(_ principal: Principal) {
        let step: Step
        switch principal {
        case .all(let ids): return appendOperator(ids, make: { .all(end: $0) }, append: { $0.append($1) })
        case .either(let ids): return appendOperator(ids, make: { .either(end: $0) }, append: { $0.append($1) })
        case .not(let id): return appendOperator([id], make: { .not(end: $0) }, append: { $0.append($1) })
        case .anyone: step = .always
        case .authenticated(let matcher): step = .authenticated(matcher.map { Self.add($0, to: &strings) })
        case .sourceIP(let range): step = .sourceIP(range)
        case .header(let matcher): step = .header(Self.add(matcher, to: &headers))
        case .urlPath(let matcher): step = .urlPath(Self.add(matcher, to: &strings))
        case .metadata(let matcher): step = .metadata(Self.add(matcher, to: &metadata))
        case .filterState(let key, let matcher): step = .filterState(key, Self.add(matcher, to: &strings))
        }
        steps.append(step)
    }

    private static func add<Matcher>(_ matcher: Matcher, to list: inout [Matcher]) -> Int {
        list.append(matcher)
        return list.count - 1
    }
}
