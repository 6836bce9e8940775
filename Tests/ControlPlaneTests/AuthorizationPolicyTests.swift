@testable import ControlPlane
import Configuration
import Foundation
import SwiftProtobuf
import Testing
import XDS

/// AuthorizationPolicies in the generated xDS: which workloads they reach, the RBAC filters istiod
/// would put on their inbound chains (HTTP and TCP), and the refusals of what Capstan cannot enforce.
@Suite struct AuthorizationPolicyTests {
    typealias HTTPFilter = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter
    static let payments = "198.51.100.10"
    static let billing = "198.51.100.20"
    static let rbacDump = "/work/shared/istio-config/sidecar-listeners-rbac-extauthz.istioctl-authz-testdata.yaml"

    /// payments (HTTP 8080, TCP 9000) with two workloads in `shop`: payments and billing.
    static let mesh = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: payments, namespace: shop}
        spec:
          hosts: [payments]
          ports: [{number: 8080, name: http-api, protocol: HTTP}, {number: 9000, name: tcp-db, protocol: TCP}]
          resolution: STATIC
          workloadSelector: {labels: {tier: backend}}
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: payments, namespace: shop}
        spec: {address: \(payments), labels: {app: payments, tier: backend}, serviceAccount: payments}
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: billing, namespace: shop}
        spec: {address: \(billing), labels: {app: billing, tier: backend}, serviceAccount: billing}
        """

    /// An AuthorizationPolicy; `spec` is the YAML under `spec:`, indented two spaces.
    static func policy(_ name: String, namespace: String = "shop", dryRun: Bool = false, _ spec: String) -> String {
        """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata:
          name: \(name)
          namespace: \(namespace)
        \(dryRun ? "  annotations: {istio.io/dry-run: \"true\"}\n" : "")spec:
        \(spec)
        """
    }

    static let seed = policy("payments", """
          selector: {matchLabels: {app: payments}}
          rules: [{from: [{source: {principals: ["billing.myapp.com"]}}]}]
        """)

    func reading(_ documents: [String]) -> MeshConfigReading {
        MeshConfigReader.read([("mesh.yaml", ([Self.mesh] + documents).joined(separator: "\n---\n"))])
    }

    func listener(_ documents: [String], ip: String = payments, namespace: String = "shop",
                  trustDomain: String = "cluster.local") throws -> Envoy_Config_Listener_V3_Listener {
        let reading = reading(documents)
        let config = try #require(reading.config, "\(reading.problems)")
        let resources = try ProxyConfigGenerator(trustDomain: trustDomain).resources(for: config)
        let listener = try ProxyConfigGenerator.inboundListener(resources.inbound(ip: ip, namespace: namespace), transparent: false)
        return try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](listener.resource.value))
    }

    /// The chain for `port` in plaintext (nil: the passthrough chain).
    func chain(_ listener: Envoy_Config_Listener_V3_Listener, port: Int?) throws -> Envoy_Config_Listener_V3_FilterChain {
        try #require(listener.filterChains.first { chain in
            chain.filterChainMatch.transportProtocol == "raw_buffer"
                && (port.map { chain.filterChainMatch.destinationPort.value == UInt32($0) } ?? !chain.filterChainMatch.hasDestinationPort)
        })
    }

    func httpFilters(_ listener: Envoy_Config_Listener_V3_Listener, port: Int = 8080) throws -> [HTTPFilter] {
        let chain = try chain(listener, port: port)
        #expect(chain.filters.count == 1)
        return try Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager(unpackingAny: chain.filters[0].typedConfig).httpFilters
    }

    /// The HTTP RBAC configs, in filter order.
    func httpRBAC(_ listener: Envoy_Config_Listener_V3_Listener, port: Int = 8080) throws -> [Envoy_Extensions_Filters_Http_Rbac_V3_RBAC] {
        try httpFilters(listener, port: port).filter { $0.name == "envoy.filters.http.rbac" }.map { filter in
            try Envoy_Extensions_Filters_Http_Rbac_V3_RBAC(unpackingAny: filter.typedConfig)
        }
    }

    /// The network RBAC configs of a TCP chain, checking they come before `tcp_proxy`, which is last.
    func networkRBAC(_ listener: Envoy_Config_Listener_V3_Listener, port: Int? = 9000) throws -> [Envoy_Extensions_Filters_Network_Rbac_V3_RBAC] {
        let chain = try chain(listener, port: port)
        #expect(chain.filters.last?.name == "envoy.filters.network.tcp_proxy")
        #expect(chain.filters.dropLast().allSatisfy { $0.name == "envoy.filters.network.rbac" })
        return try chain.filters.dropLast().map { try Envoy_Extensions_Filters_Network_Rbac_V3_RBAC(unpackingAny: $0.typedConfig) }
    }

    static func peer(_ matcher: (inout Envoy_Type_Matcher_V3_StringMatcher) -> Void) -> Envoy_Config_Rbac_V3_Principal {
        var principal = Envoy_Config_Rbac_V3_Principal()
        principal.filterState.key = "io.istio.peer_principal"
        matcher(&principal.filterState.stringMatch)
        return principal
    }

    static func and(_ ids: [Envoy_Config_Rbac_V3_Principal]) -> Envoy_Config_Rbac_V3_Principal {
        var principal = Envoy_Config_Rbac_V3_Principal()
        principal.andIds.ids = ids
        return principal
    }

    static func or(_ ids: [Envoy_Config_Rbac_V3_Principal]) -> Envoy_Config_Rbac_V3_Principal {
        var principal = Envoy_Config_Rbac_V3_Principal()
        principal.orIds.ids = ids
        return principal
    }

    static var anyPermission: Envoy_Config_Rbac_V3_Permission {
        var any = Envoy_Config_Rbac_V3_Permission()
        any.any = true
        var and = Envoy_Config_Rbac_V3_Permission()
        and.andRules.rules = [any]
        return and
    }

    // MARK: Scope and filters

    @Test func seedPolicyAllowsOnlyTheBillingPrincipalIntoPayments() throws {
        let listener = try listener([Self.seed])
        let filters = try httpFilters(listener)
        #expect(filters.map(\.name) == ["envoy.filters.http.rbac", "envoy.filters.http.fault", "envoy.filters.http.router"])
        let rbac = try httpRBAC(listener)
        #expect(rbac.count == 1)
        #expect(rbac[0].rules.action == .allow)
        #expect(!rbac[0].hasShadowRules)
        #expect(rbac[0].shadowRulesStatPrefix == "istio_dry_run_allow_")
        // Istio prefixes the principal, as written, with spiffe://: no trust domain or ns/sa form is added.
        let expected = Self.and([Self.or([Self.peer { $0.exact = "spiffe://billing.myapp.com" }])])
        let policy = try #require(rbac[0].rules.policies["ns[shop]-policy[payments]-rule[0]"])
        #expect(rbac[0].rules.policies.count == 1)
        #expect(policy.principals == [expected])
        #expect(policy.permissions == [Self.anyPermission])
        // The same policy guards the TCP port and the passthrough (principals are not HTTP-only).
        for port in [9000, nil] {
            let network = try networkRBAC(listener, port: port)
            #expect(network.count == 1)
            #expect(network.first?.statPrefix == "tcp.")
            #expect(network.first?.rules.policies == rbac[0].rules.policies)
        }
        // Another workload of the namespace is not selected.
        let other = try self.listener([Self.seed], ip: Self.billing)
        #expect(try httpRBAC(other).isEmpty)
        #expect(try networkRBAC(other).isEmpty)
    }

    /// istiod's trust domain handling: `cluster.local` in a principal means the mesh's own trust domain,
    /// and a principal in the trust domain or one of `trustDomainAliases` matches callers of each.
    @Test func peerPrincipalsFollowTheTrustDomainAndItsAliases() throws {
        let meshConfig = MeshSettingsTests.configMap("trustDomainAliases: [old-td]")
        let policy = Self.policy("payments", """
              selector: {matchLabels: {app: payments}}
              rules:
              - from: [{source: {principals: ["cluster.local/ns/shop/sa/billing", "*/ns/shop/sa/audit", "partner.example/ns/x/sa/y"],
                                 notPrincipals: ["old-td/ns/shop/sa/intern"]}}]
                when: [{key: source.principal, values: ["new-td/ns/shop/sa/billing"]}]
            """)
        let rbac = try httpRBAC(listener([meshConfig, policy], trustDomain: "new-td"))
        let principals = try #require(rbac.first?.rules.policies["ns[shop]-policy[payments]-rule[0]"]?.principals.first)
        let exact: (String) -> Envoy_Config_Rbac_V3_Principal = { value in Self.peer { $0.exact = "spiffe://" + value } }
        var notIntern = Envoy_Config_Rbac_V3_Principal()
        notIntern.notID = Self.or([exact("new-td/ns/shop/sa/intern"), exact("old-td/ns/shop/sa/intern")])
        #expect(principals == Self.and([
            Self.or([exact("new-td/ns/shop/sa/billing"), exact("old-td/ns/shop/sa/billing"),
                     Self.peer { $0.safeRegex.regex = "spiffe://.*/ns/shop/sa/audit" }, exact("partner.example/ns/x/sa/y")]),
            notIntern,
            Self.or([exact("new-td/ns/shop/sa/billing"), exact("old-td/ns/shop/sa/billing")]),
        ]))
        // Without aliases, in the default trust domain, the principal stays as written.
        let plain = try httpRBAC(listener([Self.seed]))
        #expect(plain.first?.rules.policies.first?.value.principals == [Self.and([Self.or([exact("billing.myapp.com")])])])
    }

    @Test func namespaceAndMeshWidePoliciesReachEveryWorkloadThere() throws {
        let namespaceWide = Self.policy("ns-deny", "  action: DENY\n  rules: [{from: [{source: {namespaces: [legacy]}}]}]")
        let meshWide = Self.policy("mesh-audit", namespace: "istio-system", "  action: AUDIT\n  rules: [{}]")
        let rootSelector = Self.policy("root-billing", namespace: "istio-system", """
              selector: {matchLabels: {app: billing}}
              rules: [{}]
            """)
        let elsewhere = Self.policy("other", namespace: "default", "  action: DENY\n  rules: [{}]")
        let documents = [namespaceWide, meshWide, rootSelector, elsewhere]
        let payments = try httpRBAC(listener(documents))
        #expect(payments.map(\.rules.action) == [.log, .deny])
        #expect(payments[0].rules.policies.keys.sorted() == ["ns[istio-system]-policy[mesh-audit]-rule[0]"])
        #expect(payments[1].rules.policies.keys.sorted() == ["ns[shop]-policy[ns-deny]-rule[0]"])
        let namespaceRegex = Self.peer { $0.safeRegex.regex = ".*/ns/legacy/.*" }
        #expect(payments[1].rules.policies.values.first?.principals == [Self.and([Self.or([namespaceRegex])])])
        // A root namespace policy with a selector selects in every namespace.
        let billing = try httpRBAC(listener(documents, ip: Self.billing))
        #expect(billing.map(\.rules.action) == [.log, .deny, .allow])
        // A proxy the configuration does not describe gets its namespace's and the mesh's.
        let undescribed = try networkRBAC(listener(documents, ip: "192.0.2.1"), port: nil)
        #expect(undescribed.map(\.rules.action) == [.log, .deny])
        let inDefault = try networkRBAC(listener(documents, ip: "192.0.2.1", namespace: "default"), port: nil)
        #expect(inDefault.map(\.rules.policies.count) == [1, 1])
    }

    @Test func sniffedPortsGetTheHTTPFiltersOnHTTPChainsAndTheNetworkOnesOnTCP() throws {
        let web = """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: web, namespace: shop}
            spec:
              hosts: [web]
              ports: [{number: 7000, name: web}]
              resolution: STATIC
              endpoints: [{address: 198.51.100.30, labels: {app: web}}]
            """
        let policy = Self.policy("web", "  selector: {matchLabels: {app: web}}\n  rules: [{}]")
        let listener = try listener([web, policy], ip: "198.51.100.30")
        let chains = listener.filterChains.filter { $0.filterChainMatch.destinationPort.value == 7000 }
        #expect(chains.count == 4)
        for chain in chains {
            if chain.name.contains("-http-") {
                let manager = try Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager(unpackingAny: chain.filters[0].typedConfig)
                #expect(manager.httpFilters.first?.name == "envoy.filters.http.rbac", "\(chain.name)")
            } else {
                #expect(chain.filters.map(\.name) == ["envoy.filters.network.rbac", "envoy.filters.network.tcp_proxy"], "\(chain.name)")
            }
        }
    }

    @Test func denyAndAuditFiltersComeBeforeAllow() throws {
        let documents = [
            Self.seed,
            Self.policy("deny-admin", "  action: DENY\n  rules: [{to: [{operation: {paths: [/admin*]}}]}]"),
            Self.policy("audit", "  action: AUDIT\n  rules: [{to: [{operation: {methods: [DELETE]}}]}]"),
        ]
        let listener = try listener(documents)
        #expect(try httpFilters(listener).map(\.name).prefix(3) == ["envoy.filters.http.rbac", "envoy.filters.http.rbac", "envoy.filters.http.rbac"])
        let rbac = try httpRBAC(listener)
        #expect(rbac.map(\.rules.action) == [.log, .deny, .allow])
        #expect(rbac.map { $0.rules.policies.keys.sorted() } == [["ns[shop]-policy[audit]-rule[0]"], ["ns[shop]-policy[deny-admin]-rule[0]"],
                                                                 ["ns[shop]-policy[payments]-rule[0]"]])
        #expect(try networkRBAC(listener).map(\.rules.action) == [.log, .deny, .allow])
    }

    @Test func operationsBecomeIstiodsMatchers() throws {
        let policy = Self.policy("ops", """
              selector: {matchLabels: {app: payments}}
              rules:
              - to:
                - operation: {methods: [GET, "HE*"], notPaths: ["/private*", "*.secret", /exact, "*"], ports: ["8080", 9000], hosts: ["*.example.com"]}
            """)
        let rbac = try httpRBAC(listener([policy]))
        let permission = try #require(rbac.first?.rules.policies["ns[shop]-policy[ops]-rule[0]"]?.permissions.first)
        let rules = permission.andRules.rules
        #expect(rules.count == 4)
        // hosts, methods, paths, ports: istiod's order.
        #expect(rules[0].orRules.rules.map(\.header.name) == [":authority"])
        #expect(rules[0].orRules.rules[0].header.stringMatch.suffix == ".example.com")
        #expect(rules[0].orRules.rules[0].header.stringMatch.ignoreCase)
        #expect(rules[1].orRules.rules.map(\.header.exactMatch) == ["GET", ""])
        #expect(rules[1].orRules.rules[1].header.prefixMatch == "HE")
        let notPaths = rules[2].notRule.orRules.rules.map(\.urlPath.path)
        #expect(notPaths.map(\.prefix) == ["/private", "", "", ""])
        #expect(notPaths.map(\.suffix) == ["", ".secret", "", ""])
        #expect(notPaths.map(\.exact) == ["", "", "/exact", ""])
        #expect(notPaths[3].safeRegex.regex == ".+")
        #expect(rules[3].orRules.rules.map(\.destinationPort) == [8080, 9000])
        #expect(rbac.first?.rules.policies.values.first?.principals.first?.andIds.ids.first?.any == true)
    }

    @Test func conditionsFollowIstiosAttributeTable() throws {
        let policy = Self.policy("when", """
              selector: {matchLabels: {app: payments}}
              action: DENY
              rules:
              - when:
                - {key: "request.headers[x-user]", values: [eve]}
                - {key: source.ip, values: [10.0.0.0/8], notValues: [10.1.2.3]}
                - {key: "request.auth.claims[groups][admin]", values: [yes]}
                - {key: destination.port, values: ["8080"]}
                - {key: connection.sni, values: ["*.local"]}
                - {key: request.auth.principal, values: ["issuer/*"]}
            """)
        let rbac = try httpRBAC(listener([policy]))
        let rule = try #require(rbac.first?.rules.policies["ns[shop]-policy[when]-rule[0]"])
        let ids = rule.principals[0].andIds.ids
        #expect(ids.count == 5)
        #expect(ids[0].orIds.ids[0].header.name == "x-user")
        #expect(ids[0].orIds.ids[0].header.exactMatch == "eve")
        #expect(ids[1].orIds.ids[0].directRemoteIp.addressPrefix == "10.0.0.0")
        #expect(ids[1].orIds.ids[0].directRemoteIp.prefixLen.value == 8)
        #expect(ids[2].notID.orIds.ids[0].directRemoteIp.prefixLen.value == 32)
        let claim = ids[3].orIds.ids[0].metadata
        #expect(claim.filter == "istio_authn")
        #expect(claim.path.map(\.key) == ["request.auth.claims", "groups", "admin"])
        #expect(claim.value.listMatch.oneOf.stringMatch.exact == "yes")
        let principal = ids[4].orIds.ids[0].metadata
        #expect(principal.path.map(\.key) == ["request.auth.principal"])
        #expect(principal.value.stringMatch.prefix == "issuer/")
        let rules = rule.permissions[0].andRules.rules
        #expect(rules.map(\.orRules.rules.count) == [1, 1])
        #expect(rules[0].orRules.rules[0].destinationPort == 8080)
        #expect(rules[1].orRules.rules[0].requestedServerName.suffix == ".local")
    }

    @Test func serviceAccountsMatchTheSPIFFEPathInAnyTrustDomain() throws {
        let policy = Self.policy("accounts", """
              selector: {matchLabels: {app: payments}}
              rules: [{from: [{source: {serviceAccounts: [web, billing/ledger]}}], when: [{key: source.serviceAccount, notValues: [shop/batch]}]}]
            """)
        let rbac = try httpRBAC(listener([policy]))
        let ids = try #require(rbac.first?.rules.policies["ns[shop]-policy[accounts]-rule[0]"]?.principals.first?.andIds.ids)
        #expect(ids.count == 2)
        #expect(ids[0].orIds.ids.map(\.filterState.stringMatch.safeRegex.regex) == ["spiffe://.+/ns/shop/(.+/|)sa/web(/.+)?",
                                                                                 "spiffe://.+/ns/billing/(.+/|)sa/ledger(/.+)?"])
        #expect(ids[1].notID.orIds.ids.map(\.filterState.stringMatch.safeRegex.regex) == ["spiffe://.+/ns/shop/(.+/|)sa/batch(/.+)?"])
    }

    @Test func emptyRulesAllowAllAndNoRulesMatchNothing() throws {
        let allowAll = Self.policy("all", "  selector: {matchLabels: {app: payments}}\n  rules: [{}]")
        let rbac = try httpRBAC(listener([allowAll]))
        let policy = try #require(rbac.first?.rules.policies["ns[shop]-policy[all]-rule[0]"])
        #expect(policy.permissions == [Self.anyPermission])
        #expect(policy.principals.first?.andIds.ids.first?.any == true)

        // An ALLOW policy without rules: one policy that never matches, so the selected workload denies all.
        let none = Self.policy("none", "  selector: {matchLabels: {app: payments}}")
        let never = try #require(try httpRBAC(listener([none])).first?.rules.policies["ns[shop]-policy[none]-rule[0]"])
        #expect(never.permissions.first?.notRule.any == true)
        #expect(never.principals.first?.notID.any == true)
        // A DENY without rules denies nothing: the same never-matching policy in the DENY filter.
        let denyNone = Self.policy("deny-none", "  action: DENY")
        let deny = try httpRBAC(listener([denyNone]))
        #expect(deny.map(\.rules.action) == [.deny])
        #expect(deny.first?.rules.policies["ns[shop]-policy[deny-none]-rule[0]"] == never)
        // No policy at all: no filter.
        #expect(try httpFilters(listener([])).map(\.name) == ["envoy.filters.http.fault", "envoy.filters.http.router"])
    }

    @Test func dryRunPoliciesGoToShadowRules() throws {
        let deny = Self.policy("deny", dryRun: true, "  action: DENY\n  rules: [{from: [{source: {notNamespaces: [shop]}}]}]")
        let rbac = try httpRBAC(listener([deny, Self.seed]))
        #expect(rbac.count == 2)
        #expect(!rbac[0].hasRules)
        #expect(rbac[0].shadowRules.action == .deny)
        #expect(rbac[0].shadowRules.policies.keys.sorted() == ["ns[shop]-policy[deny]-rule[0]"])
        #expect(rbac[0].shadowRulesStatPrefix == "istio_dry_run_deny_")
        #expect(rbac[1].hasRules && !rbac[1].hasShadowRules)
        let allow = Self.policy("allow", dryRun: true, "  rules: [{}]")
        let shadowAllow = try httpRBAC(listener([allow]))
        #expect(shadowAllow.map(\.hasRules) == [false])
        #expect(shadowAllow.first?.shadowRules.action == .allow)
        #expect(shadowAllow.first?.shadowRulesStatPrefix == "istio_dry_run_allow_")
        // istiod gives dry-run AUDIT rules no prefix.
        let audit = Self.policy("audit", dryRun: true, "  action: AUDIT\n  rules: [{}]")
        let shadowAudit = try httpRBAC(listener([audit]))
        #expect(shadowAudit.first?.shadowRules.action == .log)
        #expect(shadowAudit.first?.shadowRulesStatPrefix == "")
    }

    @Test func httpOnlyFieldsOnTCPPortsNarrowAllowAndWidenDeny() throws {
        let allow = Self.policy("allow-get", "  selector: {matchLabels: {app: payments}}\n  rules: [{to: [{operation: {methods: [GET]}}]}, {from: [{source: {namespaces: [shop]}}]}]")
        let deny = Self.policy("deny-post", "  action: DENY\n  rules: [{to: [{operation: {methods: [POST], ports: [\"9000\"]}}]}]")
        let reading = reading([allow, deny])
        #expect(reading.warnings.contains { $0.contains("AuthorizationPolicy shop/allow-get: spec.rules[0]: uses HTTP-only fields") && $0.contains("the rule is left out there") })
        #expect(reading.warnings.contains { $0.contains("AuthorizationPolicy shop/deny-post: spec.rules[0]: uses HTTP-only fields") && $0.contains("denies the whole port") })
        #expect(!reading.warnings.contains { $0.contains("allow-get: spec.rules[1]") })
        let listener = try listener([allow, deny])
        let tcp = try networkRBAC(listener)
        #expect(tcp.map(\.rules.action) == [.deny, .allow])
        // DENY: the method is dropped, the port kept.
        let denied = try #require(tcp[0].rules.policies["ns[shop]-policy[deny-post]-rule[0]"])
        #expect(denied.permissions.first?.andRules.rules.map(\.orRules.rules) == [[{ var port = Envoy_Config_Rbac_V3_Permission(); port.destinationPort = 9000; return port }()]])
        // ALLOW: the HTTP-only rule is left out, the other stays.
        #expect(tcp[1].rules.policies.keys.sorted() == ["ns[shop]-policy[allow-get]-rule[1]"])
        // HTTP keeps both.
        let http = try httpRBAC(listener)
        #expect(http[1].rules.policies.keys.sorted() == ["ns[shop]-policy[allow-get]-rule[0]", "ns[shop]-policy[allow-get]-rule[1]"])
        #expect(http[0].rules.policies.values.first?.permissions.first?.andRules.rules.count == 2)
    }

    @Test func policiesMoveListenersOnly() throws {
        let store = MeshSnapshotStore()
        func resources(_ documents: [String]) throws -> MeshResources {
            let reading = reading(documents)
            return try ProxyConfigGenerator().resources(for: try #require(reading.config, "\(reading.problems)"))
        }
        _ = store.update(try resources([]))
        #expect(store.update(try resources([Self.seed])) == [.listener])
        // A namespace-wide policy where no workload is still reaches proxies the configuration does not describe.
        #expect(store.update(try resources([Self.seed, Self.policy("x", namespace: "other", "  action: DENY")])) == [.listener])
        // Moved in the file (another document, another line), the same policies make the same filters.
        #expect(store.update(try resources([Self.policy("x", namespace: "other", "  action: DENY"), Self.seed])).isEmpty)
    }

    // MARK: Refusals

    @Test(arguments: [
        ("  action: CUSTOM", "spec.provider: is required with action CUSTOM"),
        ("  action: CUSTOM\n  provider: {name: \"\"}", "spec.provider.name: must not be empty"),
        ("  action: REJECT", "spec.action: \"REJECT\" is not an action (ALLOW, DENY, AUDIT, CUSTOM)"),
        ("  rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]", "spec.rules[0].from[0].source.ipBlocks[0]: \"10.0.0.0/33\" is not an IP address or CIDR"),
        ("  rules: [{to: [{operation: {ports: [\"99999\"]}}]}]", "spec.rules[0].to[0].operation.ports[0]: \"99999\" is not a port number"),
        ("  rules: [{when: [{key: request.colour, values: [red]}]}]", "spec.rules[0].when[0].key: \"request.colour\" is not a condition key"),
        ("  rules: [{when: [{key: \"request.headers[]\", values: [red]}]}]", "spec.rules[0].when[0].key: \"request.headers[]\" is not a condition key"),
        ("  rules: [{when: [{key: source.ip}]}]", "spec.rules[0].when[0]: needs values or notValues"),
        ("  rules: [{from: [{source: {principals: []}}]}]", "spec.rules[0].from[0].source.principals: must not be an empty list"),
        ("  rules: [{from: [{source: {principals: [\"\"]}}]}]", "spec.rules[0].from[0].source.principals[0]: must not be empty"),
        ("  rules: [{from: [{source: {}}]}]", "spec.rules[0].from[0].source: must set at least one field"),
        ("  rules: [{to: [{operation: {paths: [\"/api/{*}\"]}}]}]", "spec.rules[0].to[0].operation.paths[0]: \"/api/{*}\" is a path template"),
        ("  targetRefs: [{kind: Gateway, name: gw}]", "spec.targetRefs: not supported"),
        ("  provider: {name: ext}", "spec.provider: only allowed with action CUSTOM"),
        ("  rules: [{when: [{key: destination.ip, values: [nowhere]}]}]", "spec.rules[0].when[0].values[0]: \"nowhere\" is not an IP address or CIDR"),
        // A field Capstan does not know is refused: ignored, it would widen an ALLOW.
        ("  rules: [{from: [{source: {namespaces: [shop], sourceLabels: {app: x}}}]}]", "spec.rules[0].from[0].source.sourceLabels: not a field Capstan knows here"),
        ("  rules: [{from: [{source: {serviceAccounts: [\"shop/*\"]}}]}]", "spec.rules[0].from[0].source.serviceAccounts[0]: \"shop/*\" is not a service account"),
    ])
    func refusalsNameTheFileDocumentAndField(spec: String, message: String) {
        let reading = reading([Self.seed, Self.policy("bad", spec)])
        #expect(reading.config == nil, "nothing is half-applied")
        #expect(reading.problems.count == 1)
        let problem = reading.problems.first?.description ?? ""
        #expect(problem.hasPrefix("mesh.yaml: document 5 (line "), "\(problem)")
        #expect(problem.contains("AuthorizationPolicy shop/bad: \(message)"), "\(problem)")
    }

    @Test func aSelectorThatReachesNoWorkloadIsAWarning() {
        let stray = Self.policy("stray", "  selector: {matchLabels: {app: nobody}}\n  rules: [{}]")
        let reading = reading([Self.seed, stray])
        #expect(reading.config != nil)
        #expect(reading.warnings.filter { $0.contains("selects no workload") }.count == 1)
        #expect(reading.warnings.contains { $0.contains("AuthorizationPolicy shop/stray: spec.selector.matchLabels: selects no workload (WorkloadEntry or ServiceEntry endpoint) in namespace shop") })
    }

    @Test func dryRunAnnotationMustBeABoolean() {
        let bad = Self.policy("x", "  rules: [{}]").replacingOccurrences(of: "  namespace: shop\n", with: "  namespace: shop\n  annotations: {istio.io/dry-run: maybe}\n")
        let reading = reading([bad])
        #expect(reading.problems.map(\.description).first?.contains("metadata.annotations.istio.io/dry-run: \"maybe\" is not true or false") == true)
    }

    // MARK: istiod's output

    /// The `httpbin` ALLOW policy of the Istio documentation, whose RBAC filters istiod 1.2x generated in
    /// `istio-config/`'s dump (read by path): ours must equal them field by field, on the HTTP chains
    /// (`0.0.0.0_80`) and on the TCP ones, where the rule uses HTTP-only fields and so leaves an ALLOW
    /// filter with no policy. (The dump's second RBAC filter is for a CUSTOM policy: see the next test.)
    @Test func rbacFiltersEqualIstiodsForTheSamePolicy() throws {
        let httpbin = """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: httpbin, namespace: default}
            spec:
              hosts: [httpbin]
              ports: [{number: 80, name: http, protocol: HTTP}, {number: 9000, name: tcp, protocol: TCP}]
              resolution: STATIC
              endpoints: [{address: 198.51.100.80, labels: {app: httpbin}, serviceAccount: httpbin}]
            ---
            apiVersion: security.istio.io/v1beta1
            kind: AuthorizationPolicy
            metadata: {name: httpbin, namespace: default}
            spec:
              selector: {matchLabels: {app: httpbin}}
              action: ALLOW
              rules:
              - from:
                - source: {principals: [cluster.local/ns/default/sa/sleep]}
                - source: {namespaces: [test]}
                to:
                - operation: {methods: [GET], paths: ["/info*"]}
                - operation: {methods: [POST], paths: [/data]}
                when:
                - key: request.auth.claims[iss]
                  values: ["https://accounts.google.com"]
            """
        let reading = MeshConfigReader.read([("httpbin.yaml", httpbin)])
        let config = try #require(reading.config, "\(reading.problems)")
        let resources = try ProxyConfigGenerator().resources(for: config)
        let packed = try ProxyConfigGenerator.inboundListener(resources.inbound(ip: "198.51.100.80", namespace: "default"), transparent: false)
        let listener = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](packed.resource.value))

        let dump = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.rbacDump))) as! [String: Any]
        let section = (dump["configs"] as! [[String: Any]]).first { ($0["@type"] as? String)?.hasSuffix("ListenersConfigDump") == true }!
        let inbound = (section["dynamic_listeners"] as! [[String: Any]]).compactMap { ($0["active_state"] as? [String: Any])?["listener"] as? [String: Any] }
            .first { $0["name"] as? String == "virtualInbound" }!
        let chains = inbound["filter_chains"] as! [[String: Any]]
        func filters(_ chain: [String: Any]) -> [[String: Any]] { chain["filters"] as! [[String: Any]] }

        // HTTP: the dump's `0.0.0.0_80` plaintext chain, its connection manager's first RBAC filter.
        let httpChain = chains.first { $0["name"] as? String == "0.0.0.0_80" && ($0["filter_chain_match"] as? [String: Any])?["transport_protocol"] as? String == "raw_buffer" }!
        let manager = filters(httpChain).first { $0["name"] as? String == "envoy.filters.network.http_connection_manager" }!
        let istiodHTTP = ((manager["typed_config"] as! [String: Any])["http_filters"] as! [[String: Any]])
        let istiodNames = istiodHTTP.map { $0["name"] as! String }
        // istiod puts authorization before fault and the router; so do we.
        #expect(istiodNames.firstIndex(of: "envoy.filters.http.rbac")! < istiodNames.firstIndex(of: "envoy.filters.http.fault")!)
        let ours = try httpRBAC(listener, port: 80)
        #expect(ours.count == 1)
        let theirs = try Envoy_Extensions_Filters_Http_Rbac_V3_RBAC(jsonString: Self.typedConfigJSON(istiodHTTP.first { $0["name"] as? String == "envoy.filters.http.rbac" }!))
        #expect(theirs.rules.policies.keys.sorted() == ["ns[default]-policy[httpbin]-rule[0]"])
        #expect(theirs.rules.policies.values.first?.principals.count == 2)
        #expect(ours.first == theirs)

        // TCP: the dump's passthrough TCP chains carry the same network filter.
        let tcpChain = chains.first { $0["name"] as? String == "virtualInbound" && ($0["filter_chain_match"] as? [String: Any])?["transport_protocol"] as? String == "raw_buffer" }!
        let istiodTCP = try Envoy_Extensions_Filters_Network_Rbac_V3_RBAC(jsonString: Self.typedConfigJSON(filters(tcpChain).first { $0["name"] as? String == "envoy.filters.network.rbac" }!))
        #expect(istiodTCP.hasRules && istiodTCP.rules.policies.isEmpty && istiodTCP.statPrefix == "tcp.")
        #expect(try networkRBAC(listener, port: 9000) == [istiodTCP])
        #expect(try networkRBAC(listener, port: nil) == [istiodTCP])
    }

    // MARK: CUSTOM

    /// The mesh config as Istio's `istio` ConfigMap, with the gRPC authorizer of Istio's ext_authz task.
    static let meshConfigMap = """
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: istio, namespace: istio-system}
        data:
          mesh: |-
            extensionProviders:
            - name: sample-ext-authz-grpc
              envoyExtAuthzGrpc:
                service: ext-authz.shop.svc.cluster.local
                port: 9191
                includeRequestBodyInCheck: {maxRequestBytes: 8000}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: ext-authz, namespace: shop}
        spec:
          hosts: [ext-authz]
          ports: [{number: 9191, name: grpc, protocol: GRPC}]
          resolution: STATIC
          endpoints: [{address: 198.51.100.91}]
        """

    /// The CUSTOM policy of the dump (`ext-authz` in `default`, the same rules as `httpbin`'s ALLOW):
    /// ours must equal istiod's marking RBAC filter and, but for the cluster and authority of the
    /// dump's made-up provider, its ext_authz filter; both come before the other authorization filters.
    @Test func customFiltersEqualIstiodsForTheSamePolicy() throws {
        let custom = Self.policy("ext-authz", """
              selector: {matchLabels: {app: payments}}
              action: CUSTOM
              provider: {name: sample-ext-authz-grpc}
              rules:
              - from:
                - source: {principals: [cluster.local/ns/default/sa/sleep]}
                - source: {namespaces: [test]}
                to:
                - operation: {methods: [GET], paths: ["/info*"]}
                - operation: {methods: [POST], paths: [/data]}
                when:
                - key: request.auth.claims[iss]
                  values: ["https://accounts.google.com"]
            """)
        let reading = reading([Self.meshConfigMap, Self.seed, custom])
        let config = try #require(reading.config, "\(reading.problems)")
        let resources = try ProxyConfigGenerator().resources(for: config)
        let packed = try ProxyConfigGenerator.inboundListener(resources.inbound(ip: Self.payments, namespace: "shop"), transparent: false)
        let listener = try Envoy_Config_Listener_V3_Listener(serializedBytes: [UInt8](packed.resource.value))
        let filters = try httpFilters(listener)
        #expect(filters.map(\.name).prefix(3) == ["envoy.filters.http.rbac", "envoy.filters.http.ext_authz", "envoy.filters.http.rbac"])

        let dump = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.rbacDump))) as! [String: Any]
        let section = (dump["configs"] as! [[String: Any]]).first { ($0["@type"] as? String)?.hasSuffix("ListenersConfigDump") == true }!
        let inbound = (section["dynamic_listeners"] as! [[String: Any]]).compactMap { ($0["active_state"] as? [String: Any])?["listener"] as? [String: Any] }
            .first { $0["name"] as? String == "virtualInbound" }!
        let httpChain = (inbound["filter_chains"] as! [[String: Any]]).first { $0["name"] as? String == "0.0.0.0_80" }!
        let manager = (httpChain["filters"] as! [[String: Any]]).first { $0["name"] as? String == "envoy.filters.network.http_connection_manager" }!
        let istiod = (manager["typed_config"] as! [String: Any])["http_filters"] as! [[String: Any]]
        // The dump's policy is in `default`, ours in `shop`: only the policy name says so.
        let marker = try Envoy_Extensions_Filters_Http_Rbac_V3_RBAC(jsonString: Self.typedConfigJSON(istiod.first {
            (($0["typed_config"] as? [String: Any])?["shadow_rules_stat_prefix"] as? String) == "istio_ext_authz_" }!)
            .replacingOccurrences(of: "ns[default]-policy", with: "ns[shop]-policy"))
        #expect(marker.shadowRules.policies.keys.sorted() == ["istio-ext-authz-ns[shop]-policy[ext-authz]-rule[0]"])
        #expect(try Envoy_Extensions_Filters_Http_Rbac_V3_RBAC(unpackingAny: filters[0].typedConfig) == marker)
        var theirs = try Envoy_Extensions_Filters_Http_ExtAuthz_V3_ExtAuthz(jsonString: Self.typedConfigJSON(istiod.first { $0["name"] as? String == "envoy.filters.http.ext_authz" }!))
        #expect(theirs.grpcService.envoyGrpc.clusterName == "outbound|9191||sample-ext-authz-grpc")
        theirs.grpcService.envoyGrpc.clusterName = "outbound|9191||ext-authz.shop.svc.cluster.local"
        theirs.grpcService.envoyGrpc.authority = "ext-authz.shop.svc.cluster.local"
        #expect(try Envoy_Extensions_Filters_Http_ExtAuthz_V3_ExtAuthz(unpackingAny: filters[1].typedConfig) == theirs)

        // TCP chains: istiod's network pair, the marking RBAC filter and envoy.filters.network.ext_authz
        // (the rule's HTTP-only fields dropped, so every connection from those peers is asked about).
        let network = try chain(listener, port: 9000).filters
        #expect(network.map(\.name) == ["envoy.filters.network.rbac", "envoy.filters.network.ext_authz", "envoy.filters.network.rbac",
                                        "envoy.filters.network.tcp_proxy"])
        let tcpMarker = try Envoy_Extensions_Filters_Network_Rbac_V3_RBAC(unpackingAny: network[0].typedConfig)
        #expect(!tcpMarker.hasRules && tcpMarker.shadowRules.action == .deny && tcpMarker.statPrefix == "tcp."
                && tcpMarker.shadowRulesStatPrefix == "istio_ext_authz_")
        #expect(tcpMarker.shadowRules.policies.keys.sorted() == ["istio-ext-authz-ns[shop]-policy[ext-authz]-rule[0]"])
        let tcpExtAuthz = try Envoy_Extensions_Filters_Network_ExtAuthz_V3_ExtAuthz(unpackingAny: network[1].typedConfig)
        #expect(tcpExtAuthz.statPrefix == "tcp." && tcpExtAuthz.grpcService == theirs.grpcService && tcpExtAuthz.transportApiVersion == .v3)
        #expect(tcpExtAuthz.filterEnabledMetadata.filter == "envoy.filters.network.rbac")
        #expect(tcpExtAuthz.filterEnabledMetadata.path.map(\.key) == ["istio_ext_authz_shadow_effective_policy_id"])
        #expect(tcpExtAuthz.filterEnabledMetadata.value.stringMatch.prefix == "istio-ext-authz")
    }

    /// A provider the mesh config lacks, or whose service no ServiceEntry declares: said, and what the
    /// rules match is denied (istiod's `-deny-due-to-bad-CUSTOM-action` rules), never let through.
    @Test(arguments: [("missing", "the mesh config has no extension provider \"missing\" (it has sample-ext-authz-grpc, elsewhere)"),
                      ("elsewhere", "extension provider \"elsewhere\": no ServiceEntry declares its service authz.example.com")])
    func anUnresolvedProviderDeniesWhatItsRulesMatch(provider: String, reason: String) throws {
        let mesh = Self.meshConfigMap.replacingOccurrences(of: "        includeRequestBodyInCheck: {maxRequestBytes: 8000}\n", with: """
                    includeRequestBodyInCheck: {maxRequestBytes: 8000}
                - name: elsewhere
                  envoyExtAuthzGrpc: {service: authz.example.com, port: 9191}

            """)
        let custom = Self.policy("guard", """
              selector: {matchLabels: {app: payments}}
              action: CUSTOM
              provider: {name: \(provider)}
              rules: [{to: [{operation: {paths: ["/private*"]}}]}]
            """)
        let reading = reading([mesh, custom])
        #expect(reading.warnings.contains { $0.contains("AuthorizationPolicy shop/guard: spec.provider.name: \(reason): the requests its rules match are denied") },
                "\(reading.warnings)")
        let rbac = try httpRBAC(listener([mesh, custom]))
        #expect(rbac.count == 1)
        #expect(rbac.first?.rules.action == .deny)
        #expect(rbac.first?.rules.policies.keys.sorted() == ["istio-ext-authz-ns[shop]-policy[guard]-rule[0]-deny-due-to-bad-CUSTOM-action"])
        #expect(try !httpFilters(listener([mesh, custom])).contains { $0.name == "envoy.filters.http.ext_authz" })
    }

    @Test func customInDryRunIsRefused() {
        let reading = reading([Self.meshConfigMap, Self.policy("guard", dryRun: true, "  action: CUSTOM\n  provider: {name: sample-ext-authz-grpc}\n  rules: [{}]")])
        #expect(reading.config == nil)
        #expect(reading.problems.first?.description.contains("metadata.annotations.istio.io/dry-run: is not supported with action CUSTOM") == true, "\(reading.problems)")
    }

    /// A filter's `typed_config` without `@type`, as JSON for SwiftProtobuf (unknown fields refused).
    static func typedConfigJSON(_ filter: [String: Any]) throws -> String {
        var config = filter["typed_config"] as! [String: Any]
        config["@type"] = nil
        return String(decoding: try JSONSerialization.data(withJSONObject: config), as: UTF8.self)
    }
}
