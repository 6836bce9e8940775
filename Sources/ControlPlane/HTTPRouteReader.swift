import Configuration
import Routing

/// Reads a VirtualService's `http` routes: what Capstan acts on is read and checked (regexes compiled
/// with RE2, as the proxy will compile them; weights adding up to 100); Istio fields it does not act on
/// yet (`delegate`, `sourceLabels`, …) are warnings naming
/// the field, never silently dropped.
enum HTTPRouteReader {
    static func route(_ reader: ConfigReader, namespace: String, warnings: inout [String]) throws(ConfigError) -> VirtualService.HTTPRoute {
        try reader.ignoringUnknown(["name", "match", "route", "redirect", "directResponse", "rewrite", "timeout", "headers", "retries", "fault",
                                    "mirror", "mirrorPercentage", "mirrorPercent", "mirror_percent", "mirrors", "corsPolicy", "delegate"],
                                   warnings: &warnings)
        let name = try reader.optional("name")?.string()
        var matches: [VirtualService.HTTPMatch] = []
        for match in try reader.optional("match")?.list() ?? [] { matches.append(try self.match(match, namespace: namespace, warnings: &warnings)) }
        let destinations = try reader.optional("route")?.list() ?? []
        let redirect = try reader.optional("redirect")
        let direct = try reader.optional("directResponse")
        let delegate = try reader.optional("delegate")
        let given = [destinations.isEmpty ? nil : "route", redirect == nil ? nil : "redirect", direct == nil ? nil : "directResponse",
                     delegate == nil ? nil : "delegate"].compactMap { $0 }
        guard given.count == 1 else {
            throw reader.fail(given.isEmpty ? "needs one of route, redirect, directResponse or delegate"
                                            : "has \(given.joined(separator: " and ")): a route takes one of them")
        }
        let action: VirtualService.HTTPRoute.Action
        if let delegate {
            try delegate.ignoringUnknown(["name", "namespace"], warnings: &warnings)
            let name = try delegate.required("name").string()
            guard !name.isEmpty else { throw delegate.fail("name must not be empty") }
            action = .delegate(name: name, namespace: try delegate.optional("namespace")?.string() ?? namespace)
        } else if let redirect {
            action = .redirect(try self.redirect(redirect, warnings: &warnings))
        } else if let direct {
            try direct.ignoringUnknown(["status", "body"], warnings: &warnings)
            var body: String?
            if let reader = try direct.optional("body") {
                try reader.ignoringUnknown(["string"], warnings: &warnings)
                body = try reader.optional("string")?.string()
            }
            action = .directResponse(status: try direct.required("status").integer(in: 200...599), body: body)
        } else {
            action = .route(try self.destinations(destinations, path: "\(reader.path).route", namespace: namespace, warnings: &warnings))
        }
        var rewriteURI: String?
        var rewriteAuthority: String?
        var rewriteURIRegex: (match: String, rewrite: String)?
        if let rewrite = try reader.optional("rewrite") {
            try rewrite.ignoringUnknown(["uri", "authority", "uriRegexRewrite"], warnings: &warnings)
            switch action {
            case .route, .delegate: break
            case .redirect, .directResponse: throw rewrite.fail("applies to route destinations only, not to a redirect or a direct response")
            }
            rewriteURI = try rewrite.optional("uri")?.string()
            if let regex = try rewrite.optional("uriRegexRewrite") {
                guard rewriteURI == nil else { throw regex.fail("cannot be given with uri: a route rewrites its path one way") }
                try regex.ignoringUnknown(["match", "rewrite"], warnings: &warnings)
                let match = try regex.required("match")
                let pattern = try match.string()
                _ = try RegularExpression(pattern, path: match.path)
                rewriteURIRegex = (pattern, try regex.required("rewrite").string())
            }
            rewriteAuthority = try rewrite.optional("authority")?.string()
            if let rewriteURI, matches.contains(where: { if case .regex? = $0.uri { true } else { false } }) {
                warnings.append("\(rewrite.path).uri: after a regex uri match, \"\(rewriteURI)\" replaces the whole path")
            }
        }
        let mirrors = try self.mirrors(reader, namespace: namespace, warnings: &warnings)
        if case .redirect = action, !mirrors.isEmpty {
            throw reader.fail("mirrors copies of requests sent to route destinations: not with a redirect or a direct response")
        }
        if case .directResponse = action, !mirrors.isEmpty {
            throw reader.fail("mirrors copies of requests sent to route destinations: not with a redirect or a direct response")
        }
        var route = VirtualService.HTTPRoute(name: name, matches: matches, action: action,
                                        headers: try reader.optional("headers").map { reader throws(ConfigError) in try headers(reader, warnings: &warnings) },
                                        rewriteURI: rewriteURI, rewriteURIRegex: rewriteURIRegex, rewriteAuthority: rewriteAuthority,
                                        timeout: try reader.optional("timeout")?.goDuration(),
                                        retries: try reader.optional("retries").map { reader throws(ConfigError) in try retries(reader, warnings: &warnings) },
                                        fault: try reader.optional("fault").map { reader throws(ConfigError) in try fault(reader, warnings: &warnings) })
        route.mirrors = mirrors
        route.cors = try reader.optional("corsPolicy").map { reader throws(ConfigError) in try cors(reader, warnings: &warnings) }
        return route
    }

    /// The methods Istio's validation lets a `corsPolicy` allow.
    static let corsMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "*"]

    /// `corsPolicy`, checked as Istio's validation does: origins as string matches (regexes compiled),
    /// methods among HTTP's (or `*`), header names as tokens (or `*`), `maxAge` a duration of at least 1 ms.
    static func cors(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> VirtualService.HTTPRoute.CORSPolicy {
        try reader.ignoringUnknown(["allowOrigins", "allowOrigin", "allowMethods", "allowHeaders", "exposeHeaders", "maxAge",
                                    "allowCredentials", "unmatchedPreflights"], warnings: &warnings)
        var policy = VirtualService.HTTPRoute.CORSPolicy()
        if let origins = try reader.optional("allowOrigins") {
            for item in try origins.list() { policy.allowOrigins.append(try stringMatch(item)) }
        } else if let origins = try reader.optional("allowOrigin") {
            warnings.append("\(origins.path): deprecated, as in Istio: allowOrigins is read the same way (exact matches)")
            for item in try origins.list() { policy.allowOrigins.append(.exact(try item.string())) }
        }
        if let methods = try reader.optional("allowMethods") {
            for item in try methods.list() {
                let method = try item.string()
                guard corsMethods.contains(method) else {
                    throw item.fail("\"\(method)\" is not an HTTP method (\(corsMethods.sorted().joined(separator: ", ")))")
                }
                policy.allowMethods.append(method)
            }
        }
        for (field, keyPath) in [("allowHeaders", \VirtualService.HTTPRoute.CORSPolicy.allowHeaders), ("exposeHeaders", \.exposeHeaders)] {
            for item in try reader.optional(field)?.list() ?? [] {
                let name = try item.string()
                guard name == "*" || (!name.isEmpty && name.utf8.allSatisfy(Self.isTokenByte)) else {
                    throw item.fail("\"\(name)\" is not a header name")
                }
                policy[keyPath: keyPath].append(name)
            }
        }
        if let maxAge = try reader.optional("maxAge") {
            let value = try maxAge.goDuration()
            guard value >= .milliseconds(1) else { throw maxAge.fail("must be at least 1ms") }
            policy.maxAge = value
        }
        policy.allowCredentials = try reader.optional("allowCredentials")?.bool()
        if let unmatched = try reader.optional("unmatchedPreflights") {
            switch try unmatched.string() {
            case "UNSPECIFIED", "FORWARD": policy.ignoresUnmatchedPreflights = false
            case "IGNORE": policy.ignoresUnmatchedPreflights = true
            case let other: throw unmatched.fail("\"\(other)\" is not UNSPECIFIED, FORWARD or IGNORE")
            }
        }
        return policy
    }

    /// A byte of an HTTP token (RFC 9110): header names are made of these.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        default: "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }

    /// `mirror` with `mirrorPercentage` (or the deprecated `mirrorPercent`), or `mirrors`, each with its
    /// `percentage`, as Istio validates them: not both forms, a percentage only with `mirror`. A share of
    /// 0 mirrors nothing: istiod then sends no mirror policy, and neither does Capstan (the entry is dropped).
    static func mirrors(_ reader: ConfigReader, namespace: String, warnings: inout [String]) throws(ConfigError) -> [VirtualService.HTTPRoute.Mirror] {
        typealias Mirror = VirtualService.HTTPRoute.Mirror
        let single = try reader.optional("mirror")
        let list = try reader.optional("mirrors")
        let percentage = try reader.optional("mirrorPercentage")
        var percent = try reader.optional("mirrorPercent")
        if percent == nil { percent = try reader.optional("mirror_percent") }
        if let list, single != nil { throw list.fail("cannot be given with mirror: a route mirrors one way") }
        if single == nil, let given = percentage ?? percent { throw given.fail("needs mirror") }
        func share(_ percentage: ConfigReader?, percent: ConfigReader? = nil) throws(ConfigError) -> Mirror.Share? {
            if let percentage {
                let value = try self.percent(percentage, warnings: &warnings)
                return value > 0 ? .percentage(value) : nil
            }
            if let percent {
                let value = try percent.integer(in: 0...100)
                return value > 0 ? .percent(value) : nil
            }
            return .all
        }
        if let single {
            guard let share = try share(percentage, percent: percent) else { return [] }
            return [Mirror(destination: try destination(single, namespace: namespace, warnings: &warnings), share: share)]
        }
        var mirrors: [Mirror] = []
        for (index, entry) in try (list?.list() ?? []).enumerated() {
            try entry.ignoringUnknown(["destination", "percentage"], warnings: &warnings)
            let destination = try self.destination(entry.required("destination"), namespace: namespace, warnings: &warnings)
            guard let share = try share(entry.optional("percentage")) else { continue }
            mirrors.append(Mirror(destination: destination, share: share, field: "mirrors[\(index)].destination"))
        }
        return mirrors
    }

    /// Istio's `Destination`: `host` (short names qualified in `namespace`), `subset`, `port.number`.
    private static func destination(_ reader: ConfigReader, namespace: String, warnings: inout [String]) throws(ConfigError) -> VirtualService.Destination {
        try reader.ignoringUnknown(["host", "subset", "port"], warnings: &warnings)
        let port = try reader.optional("port").map { reader throws(ConfigError) in
            try reader.ignoringUnknown(["number"], warnings: &warnings)
            return try reader.required("number").integer(in: 1...65535)
        }
        return .init(host: MeshConfig.qualified(try reader.required("host").string(), namespace: namespace),
                     subset: try reader.optional("subset")?.string(), port: port, weight: 100)
    }

    /// `fault`: `delay` (`fixedDelay` above 0, `percentage.value` or the deprecated `percent`) and
    /// `abort` (`httpStatus` 200-599 or a gRPC code name as `grpcStatus`, `percentage.value`), as Istio's
    /// validation takes them; at least one of the two. `exponentialDelay` and `http2Error` are refused,
    /// as Istio refuses them.
    static func fault(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> VirtualService.HTTPRoute.Fault {
        try reader.ignoringUnknown(["delay", "abort"], warnings: &warnings)
        var fault = VirtualService.HTTPRoute.Fault()
        if let delay = try reader.optional("delay") {
            try delay.ignoringUnknown(["fixedDelay", "exponentialDelay", "percentage", "percent"], warnings: &warnings)
            if let exponential = try delay.optional("exponentialDelay") { throw exponential.fail("is not supported (neither by istiod): use fixedDelay") }
            let fixed = try delay.required("fixedDelay")
            let duration = try fixed.goDuration()
            guard duration >= .milliseconds(1) else { throw fixed.fail("must be at least 1ms") }
            let share: VirtualService.HTTPRoute.Fault.Share
            if let percentage = try delay.optional("percentage") {
                share = .percentage(try percent(percentage, warnings: &warnings))
            } else {
                share = .percent(try delay.optional("percent")?.integer(in: 0...100) ?? 0)
            }
            fault.delay = (duration, share)
        }
        if let abort = try reader.optional("abort") {
            try abort.ignoringUnknown(["httpStatus", "grpcStatus", "http2Error", "percentage"], warnings: &warnings)
            if let http2 = try abort.optional("http2Error") { throw http2.fail("is not supported (neither by istiod): use httpStatus or grpcStatus") }
            let http = try abort.optional("httpStatus")
            let grpc = try abort.optional("grpcStatus")
            let status: VirtualService.HTTPRoute.Fault.AbortStatus
            switch (http, grpc) {
            case (let http?, nil): status = .http(try http.integer(in: 200...599))
            case (nil, let grpc?):
                let name = try grpc.string()
                guard let code = Self.grpcCodes.firstIndex(of: name) else {
                    throw grpc.fail("\"\(name)\" is not a gRPC status code name (\(Self.grpcCodes.joined(separator: ", ")))")
                }
                status = .grpc(name: name, code: code)
            case (nil, nil): throw abort.fail("needs httpStatus or grpcStatus")
            case (_?, _?): throw abort.fail("has httpStatus and grpcStatus: an abort takes one of them")
            }
            fault.abort = (status, try abort.optional("percentage").map { reader throws(ConfigError) in try percent(reader, warnings: &warnings) })
        }
        guard fault.delay != nil || fault.abort != nil else { throw reader.fail("needs delay or abort") }
        return fault
    }

    /// Istio's `Percent`: `value`, 0 to 100 with fractions.
    private static func percent(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> Double {
        try reader.ignoringUnknown(["value"], warnings: &warnings)
        guard let given = try reader.optional("value") else { return 0 }
        guard case .number(let value) = given.value else { throw given.fail("expected a number, found \(given.value.kind)") }
        guard (0...100).contains(value) else { throw given.fail("\(value) is out of range 0-100") }
        return value
    }

    /// gRPC's status codes by name, in the order of their numbers (0-16).
    static let grpcCodes = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                            "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                            "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"]

    /// `retries`: `attempts`, `perTryTimeout`, `retryOn` (Envoy's condition names, or HTTP status codes) and
    /// `retryRemoteLocalities`.
    static func retries(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> VirtualService.HTTPRoute.Retries {
        try reader.ignoringUnknown(["attempts", "perTryTimeout", "retryOn", "retryRemoteLocalities"], warnings: &warnings)
        var conditions: [String] = []
        if let retryOn = try reader.optional("retryOn") {
            for token in try retryOn.string().split(separator: ",").map({ String($0.filter { $0 != " " && $0 != "\t" }) }) where !token.isEmpty {
                guard Int(token).map({ (100...599).contains($0) }) ?? Self.retryConditions.contains(token) else {
                    throw retryOn.fail("\"\(token)\" is neither a retry condition Envoy knows nor an HTTP status code")
                }
                conditions.append(token)
            }
        }
        return .init(attempts: try reader.optional("attempts")?.integer(in: 0...Int(Int32.max)) ?? 2,
                     perTryTimeout: try reader.optional("perTryTimeout")?.goDuration(), retryOn: conditions,
                     retryRemoteLocalities: try reader.optional("retryRemoteLocalities")?.bool() ?? false)
    }

    /// Envoy's `retry_on` conditions, HTTP's and gRPC's.
    static let retryConditions: Set<String> = [
        "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited", "retriable-4xx",
        "refused-stream", "retriable-status-codes", "retriable-headers", "http3-post-connect-failure",
        "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
    ]

    static func match(_ reader: ConfigReader, namespace: String, warnings: inout [String]) throws(ConfigError) -> VirtualService.HTTPMatch {
        try reader.ignoringUnknown(["name", "uri", "scheme", "method", "authority", "headers", "withoutHeaders", "queryParams",
                                    "ignoreUriCase", "port", "gateways", "sourceLabels", "sourceNamespace"], warnings: &warnings)
        var match = VirtualService.HTTPMatch()
        // The gateways (`mesh` for sidecars) this match applies to, resolved as the VirtualService's own.
        if let gateways = try reader.optional("gateways") {
            let names = try gateways.list().enumerated().map { index, item throws(ConfigError) in
                try MeshConfigReader.gatewayReference(try item.string(), namespace: namespace, path: "\(gateways.path)[\(index)]")
            }
            if !names.isEmpty { match.gateways = names }
        }
        match.name = try reader.optional("name")?.string()
        match.uri = try reader.optional("uri").map(stringMatch)
        match.scheme = try reader.optional("scheme").map(stringMatch)
        match.method = try reader.optional("method").map(stringMatch)
        match.authority = try reader.optional("authority").map(stringMatch)
        match.headers = try namedMatches(reader.optional("headers"))
        match.withoutHeaders = try namedMatches(reader.optional("withoutHeaders"))
        match.queryParams = try namedMatches(reader.optional("queryParams"))
        for param in match.queryParams {
            if case .prefix = param.match {
                throw ConfigError(path: "\(reader.path).queryParams.\(param.name)", message: "prefix is not supported for query parameters (exact, regex), as in Istio")
            }
        }
        match.ignoreURICase = try reader.optional("ignoreUriCase")?.bool() ?? false
        match.port = try reader.optional("port")?.integer(in: 1...65535)
        match.sourceLabels = try reader.optional("sourceLabels").map(MeshConfigReader.labels) ?? [:]
        match.sourceNamespace = try reader.optional("sourceNamespace")?.string()
        return match
    }

    /// `{exact: …}`, `{prefix: …}` or `{regex: …}`; a regex is compiled here so that a bad one is refused
    /// with its field, not by the proxy.
    static func stringMatch(_ reader: ConfigReader) throws(ConfigError) -> VirtualService.StringMatch {
        let fields = try reader.fields()
        guard fields.count == 1, let key = fields.keys.first else {
            throw reader.fail("needs exactly one of exact, prefix, regex")
        }
        let value = try reader.required(key)
        switch key {
        case "exact": return .exact(try value.string())
        case "prefix": return .prefix(try value.string())
        case "regex":
            let pattern = try value.string()
            _ = try RegularExpression(pattern, path: value.path)
            return .regex(pattern)
        default: throw reader.fail("\"\(key)\" is not a string match (exact, prefix, regex)")
        }
    }

    /// `headers` / `withoutHeaders` / `queryParams`: a map of names to string matches. Header names are
    /// lower-cased, as HTTP/2 and Envoy see them. An empty match (`{}`) asks only that the header be
    /// there (Istio's presence match), as a regex any value matches.
    static func namedMatches(_ reader: ConfigReader?) throws(ConfigError) -> [(name: String, match: VirtualService.StringMatch)] {
        guard let reader else { return [] }
        var result: [(name: String, match: VirtualService.StringMatch)] = []
        for key in try reader.fields().keys.sorted() {
            let value = try reader.required(key)
            result.append((key.lowercased(), try value.fields().isEmpty ? .regex(".*") : stringMatch(value)))
        }
        return result
    }

    /// A route's weighted destinations (`http`, with their `headers`; `tcp`, without): each needs a
    /// weight when there are several, and the weights add up to 100.
    static func destinations(_ entries: [ConfigReader], path: String, namespace: String, withHeaders: Bool = true,
                             warnings: inout [String]) throws(ConfigError) -> [VirtualService.Destination] {
        var parsed: [VirtualService.Destination] = []
        for entry in entries {
            try entry.ignoringUnknown(withHeaders ? ["destination", "weight", "headers"] : ["destination", "weight"], warnings: &warnings)
            let destination = try entry.required("destination")
            try destination.ignoringUnknown(["host", "subset", "port"], warnings: &warnings)
            let port = try destination.optional("port").map { reader throws(ConfigError) in
                try reader.ignoringUnknown(["number"], warnings: &warnings)
                return try reader.required("number").integer(in: 1...65535)
            }
            let weightReader = try entry.optional("weight")
            if entries.count > 1 && weightReader == nil {
                throw entry.fail("needs a weight: a route with several destinations splits \(withHeaders ? "requests" : "traffic") by weight")
            }
            parsed.append(.init(host: MeshConfig.qualified(try destination.required("host").string(), namespace: namespace),
                                subset: try destination.optional("subset")?.string(), port: port,
                                weight: try weightReader?.integer(in: 0...100) ?? 100,
                                headers: withHeaders ? try entry.optional("headers").map { reader throws(ConfigError) in try headers(reader, warnings: &warnings) } : nil))
        }
        let total = parsed.reduce(0) { $0 + $1.weight }
        if parsed.count > 1 && total != 100 {
            throw ConfigError(path: path, message: "weights add up to \(total), not 100")
        }
        return parsed
    }

    static func redirect(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> VirtualService.Redirect {
        try reader.ignoringUnknown(["uri", "authority", "port", "scheme", "redirectCode"], warnings: &warnings)
        var redirect = VirtualService.Redirect()
        redirect.uri = try reader.optional("uri")?.string()
        redirect.authority = try reader.optional("authority")?.string()
        redirect.port = try reader.optional("port")?.integer(in: 1...65535)
        redirect.scheme = try reader.optional("scheme")?.string()
        if let code = try reader.optional("redirectCode") {
            redirect.code = try code.integer(in: 300...399)
            guard [301, 302, 303, 307, 308].contains(redirect.code) else {
                throw code.fail("\(redirect.code) is not a redirect code Envoy sends (301, 302, 303, 307, 308)")
            }
        }
        return redirect
    }

    static func headers(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> HeaderOperations {
        try reader.ignoringUnknown(["request", "response"], warnings: &warnings)
        var operations = HeaderOperations()
        for (side, keyPath) in [("request", \HeaderOperations.request), ("response", \HeaderOperations.response)] {
            guard let changes = try reader.optional(side) else { continue }
            try changes.ignoringUnknown(["set", "add", "remove"], warnings: &warnings)
            var result = HeaderOperations.Changes()
            result.overwrite = try pairs(changes.optional("set"))
            result.append = try pairs(changes.optional("add"))
            result.remove = try changes.optional("remove").map { reader throws(ConfigError) in
                try reader.list().map { item throws(ConfigError) in try item.string().lowercased() }
            } ?? []
            operations[keyPath: keyPath] = result
        }
        return operations
    }

    private static func pairs(_ reader: ConfigReader?) throws(ConfigError) -> [(name: String, value: String)] {
        guard let reader else { return [] }
        var result: [(name: String, value: String)] = []
        for key in try reader.fields().keys.sorted() {
            result.append((key.lowercased(), try reader.required(key).string()))
        }
        return result
    }
}
