import Configuration

/// Reads an AuthorizationPolicy's `spec` (and its `istio.io/dry-run` annotation), refusing what Istio's
/// validation refuses and what Capstan cannot generate, each refusal naming the field: `CUSTOM`
/// without a provider or in dry run, `targetRef`s (they are for gateways and waypoints, not sidecars), path
/// templates, unknown condition keys, bad CIDRs and ports, and empty sources, operations and values.
/// Unknown fields are refused too, not ignored with a warning as elsewhere: a condition left out would
/// let in what the policy keeps out.
enum AuthorizationPolicyReader {
    static let dryRunAnnotation = "istio.io/dry-run"

    static func read(_ spec: ConfigReader, metadata: ConfigReader, origin: ResourceOrigin, namespace: String, name: String,
                     warnings: inout [String]) throws(ConfigError) -> AuthorizationPolicy {
        try refusingUnknown(spec, ["selector", "action", "rules", "provider", "targetRef", "targetRefs"])
        for key in ["targetRef", "targetRefs"] {
            if let field = try spec.optional(key) {
                throw field.fail("not supported: it attaches a policy to a gateway or waypoint, and Capstan configures sidecars (use spec.selector)")
            }
        }
        var selector: [String: String]?
        if let reader = try spec.optional("selector") {
            try refusingUnknown(reader, ["matchLabels"])
            // An empty selector is none, as Istio reads it: the policy covers the namespace (or the mesh).
            if let labels = try reader.optional("matchLabels").map(MeshConfigReader.labels), !labels.isEmpty { selector = labels }
        }
        var action = AuthorizationPolicy.Action.allow
        if let field = try spec.optional("action") {
            let text = try field.string()
            guard let parsed = AuthorizationPolicy.Action(rawValue: text) else {
                throw field.fail("\"\(text)\" is not an action (ALLOW, DENY, AUDIT, CUSTOM)")
            }
            action = parsed
        }
        var providerName: String?
        if let field = try spec.optional("provider") {
            guard action == .custom else { throw field.fail("only allowed with action CUSTOM") }
            try refusingUnknown(field, ["name"])
            let name = try field.required("name").string()
            guard !name.isEmpty else { throw ConfigError(path: "\(field.path).name", message: "must not be empty") }
            providerName = name
        } else if action == .custom {
            throw ConfigError(path: "spec.provider", message: "is required with action CUSTOM: it names one of the mesh config's extensionProviders")
        }
        let dryRun = try dryRun(metadata)
        if dryRun && action == .custom {
            throw ConfigError(path: "metadata.annotations.\(dryRunAnnotation)", message: "is not supported with action CUSTOM: the external authorizer would be called and obeyed all the same")
        }
        var rules: [AuthorizationPolicy.Rule] = []
        for reader in try spec.optional("rules")?.list() ?? [] {
            rules.append(try rule(reader))
        }
        for (index, rule) in rules.enumerated() where rule.hasHTTPOnlyFields {
            let effect = switch action {
            case .allow: "the rule is left out there (it allows nothing on them)"
            case .deny: "its HTTP-only fields are dropped there, so it denies the whole port when the rest matches"
            case .audit: "its HTTP-only fields are dropped there, so it audits the whole port when the rest matches"
            case .custom: "its HTTP-only fields are dropped there, so the provider is asked about every connection to the port when the rest matches"
            }
            warnings.append("spec.rules[\(index)]: uses HTTP-only fields (hosts, methods, paths, requestPrincipals or request.* conditions); on TCP ports (ports not declared HTTP, and passthrough) \(effect), as istiod does")
        }
        return AuthorizationPolicy(origin: origin, namespace: namespace, name: name, selector: selector, action: action,
                                   dryRun: dryRun, rules: rules, providerName: providerName)
    }

    /// `metadata.annotations["istio.io/dry-run"]`, as Go's `strconv.ParseBool` reads it.
    static func dryRun(_ metadata: ConfigReader) throws(ConfigError) -> Bool {
        guard let annotations = try metadata.optional("annotations"), let field = try annotations.optional(dryRunAnnotation) else {
            return false
        }
        let text = try field.string()
        switch text {
        case "1", "t", "T", "true", "TRUE", "True": return true
        case "0", "f", "F", "false", "FALSE", "False": return false
        default: throw field.fail("\"\(text)\" is not true or false")
        }
    }

    static func rule(_ reader: ConfigReader) throws(ConfigError) -> AuthorizationPolicy.Rule {
        try refusingUnknown(reader, ["from", "to", "when"])
        var rule = AuthorizationPolicy.Rule()
        for from in try reader.optional("from")?.list() ?? [] {
            try refusingUnknown(from, ["source"])
            rule.from.append(try source(from.required("source")))
        }
        for to in try reader.optional("to")?.list() ?? [] {
            try refusingUnknown(to, ["operation"])
            rule.to.append(try operation(to.required("operation")))
        }
        for when in try reader.optional("when")?.list() ?? [] {
            rule.when.append(try condition(when))
        }
        return rule
    }

    static func source(_ reader: ConfigReader) throws(ConfigError) -> AuthorizationPolicy.Source {
        try refusingUnknown(reader, ["principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "serviceAccounts",
                                     "notServiceAccounts", "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks", "remoteIpBlocks",
                                     "notRemoteIpBlocks"])
        var source = AuthorizationPolicy.Source()
        source.principals = try match(reader, "principals", "notPrincipals")
        source.requestPrincipals = try match(reader, "requestPrincipals", "notRequestPrincipals")
        source.serviceAccounts = try match(reader, "serviceAccounts", "notServiceAccounts", check: serviceAccount)
        source.namespaces = try match(reader, "namespaces", "notNamespaces")
        source.ipBlocks = try match(reader, "ipBlocks", "notIpBlocks", check: cidr)
        source.remoteIPBlocks = try match(reader, "remoteIpBlocks", "notRemoteIpBlocks", check: cidr)
        if source == AuthorizationPolicy.Source() { throw reader.fail("must set at least one field (principals, namespaces, ipBlocks, …)") }
        return source
    }

    static func operation(_ reader: ConfigReader) throws(ConfigError) -> AuthorizationPolicy.Operation {
        try refusingUnknown(reader, ["hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths"])
        var operation = AuthorizationPolicy.Operation()
        operation.hosts = try match(reader, "hosts", "notHosts")
        operation.methods = try match(reader, "methods", "notMethods")
        operation.paths = try match(reader, "paths", "notPaths", check: path)
        operation.ports = try match(reader, "ports", "notPorts", check: port)
        if operation == AuthorizationPolicy.Operation() { throw reader.fail("must set at least one field (hosts, ports, methods, paths, …)") }
        return operation
    }

    static func condition(_ reader: ConfigReader) throws(ConfigError) -> AuthorizationPolicy.Condition {
        try refusingUnknown(reader, ["key", "values", "notValues"])
        let keyReader = try reader.required("key")
        let key = try keyReader.string()
        guard let attribute = attribute(key) else {
            throw keyReader.fail("\"\(key)\" is not a condition key Istio defines (request.headers[NAME], source.ip, remote.ip, source.namespace, source.serviceAccount, source.principal, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[NAME], destination.ip, destination.port, connection.sni, experimental.envoy.filters.NAME[KEY])")
        }
        let check: (String) -> String? = switch attribute {
        case .sourceIP, .remoteIP, .destinationIP: cidr
        case .destinationPort: port
        case .sourceServiceAccount: serviceAccount
        default: { _ in nil }
        }
        let match = try match(reader, "values", "notValues", check: check)
        if match.isEmpty { throw reader.fail("needs values or notValues") }
        return AuthorizationPolicy.Condition(key: key, attribute: attribute, match: match)
    }

    /// Istio's attribute table; nil for a key it does not define (or a bracketed name left empty).
    static func attribute(_ key: String) -> AuthorizationPolicy.Attribute? {
        switch key {
        case "source.ip": return .sourceIP
        case "remote.ip": return .remoteIP
        case "source.namespace": return .sourceNamespace
        case "source.serviceAccount": return .sourceServiceAccount
        case "source.principal": return .sourcePrincipal
        case "request.auth.principal": return .requestPrincipal
        case "request.auth.audiences": return .requestAudiences
        case "request.auth.presenter": return .requestPresenter
        case "destination.ip": return .destinationIP
        case "destination.port": return .destinationPort
        case "connection.sni": return .connectionSNI
        default: break
        }
        if key.hasPrefix("request.headers["), let names = bracketed(key.dropFirst("request.headers".count)), names.count == 1 {
            return .requestHeader(names[0])
        }
        if key.hasPrefix("request.auth.claims["), let names = bracketed(key.dropFirst("request.auth.claims".count)) {
            return .requestClaim(names)
        }
        if key.hasPrefix("experimental.envoy.filters."), let open = key.firstIndex(of: "["),
           let names = bracketed(key[open...]), names.count == 1 {
            let filter = String(key[key.index(key.startIndex, offsetBy: "experimental.".count)..<open])
            guard filter.count > "envoy.filters.".count else { return nil }
            return .envoyFilter(filter: filter, key: names[0])
        }
        return nil
    }

    /// `[a][b]` as `["a", "b"]`; nil unless the text is one or more non-empty bracketed names.
    static func bracketed(_ text: Substring) -> [String]? {
        var names: [String] = []
        var rest = text
        while !rest.isEmpty {
            guard rest.first == "[", let close = rest.firstIndex(of: "]") else { return nil }
            let name = rest[rest.index(after: rest.startIndex)..<close]
            guard !name.isEmpty, !name.contains("[") else { return nil }
            names.append(String(name))
            rest = rest[rest.index(after: close)...]
        }
        return names.isEmpty ? nil : names
    }

    /// Refuses a field the reader does not know, naming it.
    static func refusingUnknown(_ reader: ConfigReader, _ known: Set<String>) throws(ConfigError) {
        for key in try reader.fields().keys.sorted() where !known.contains(key) {
            let path = reader.path.isEmpty ? key : "\(reader.path).\(key)"
            throw ConfigError(path: path, message: "not a field Capstan knows here: refused, since leaving an authorization field out would change whom the policy lets in")
        }
    }

    // MARK: Values

    /// A field and its negation, each a list of non-empty strings `check` accepts (it returns why not).
    static func match(_ reader: ConfigReader, _ key: String, _ notKey: String,
                      check: (String) -> String? = { _ in nil }) throws(ConfigError) -> AuthorizationPolicy.Match {
        func values(_ key: String) throws(ConfigError) -> [String] {
            guard let list = try reader.optional(key) else { return [] }
            var values: [String] = []
            for item in try list.list() {
                let text: String
                // Ports come as numbers as often as strings.
                if case .number = item.value { text = String(try item.integer(in: 0...65535)) } else { text = try item.string() }
                if text.isEmpty { throw item.fail("must not be empty") }
                if let problem = check(text) { throw item.fail(problem) }
                values.append(text)
            }
            if values.isEmpty { throw list.fail("must not be an empty list (leave the field out)") }
            return values
        }
        return AuthorizationPolicy.Match(values: try values(key), notValues: try values(notKey))
    }

    /// `ACCOUNT` or `NAMESPACE/ACCOUNT`, Kubernetes names, no wildcards (they become a regex on the SPIFFE ID).
    static func serviceAccount(_ text: String) -> String? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        let valid = parts.count <= 2 && parts.allSatisfy { part in
            !part.isEmpty && part.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" || $0 == "." }
        }
        return valid ? nil : "\"\(text)\" is not a service account (ACCOUNT or NAMESPACE/ACCOUNT, no wildcards)"
    }

    static func cidr(_ text: String) -> String? {
        IPNetwork(text) == nil ? "\"\(text)\" is not an IP address or CIDR" : nil
    }

    static func port(_ text: String) -> String? {
        guard let number = Int(text), (0...65535).contains(number) else { return "\"\(text)\" is not a port number 0-65535" }
        return nil
    }

    /// Istio's `{*}` and `{**}` path templates need Envoy's URI template matcher, which Capstan does not generate.
    static func path(_ text: String) -> String? {
        text.contains("{") ? "\"\(text)\" is a path template ({*}, {**}), not supported yet" : nil
    }
}
