import Authorization
import Configuration
import HTTPTypes
import SwiftProtobuf
import Testing
import XDS

/// RBAC as data: policies decoded from Envoy's messages, asked about connections and requests.
@Suite struct RoleBasedAccessControlTests {
    typealias Permission = Envoy_Config_Rbac_V3_Permission
    typealias Principal = Envoy_Config_Rbac_V3_Principal

    static let billing = "spiffe://cluster.local/ns/shop/sa/billing"

    static func principal(_ name: String) -> Principal {
        .with { $0.authenticated.principalName = .with { $0.exact = name } }
    }

    static func method(_ method: String) -> Permission {
        .with { $0.header = .with { $0.name = ":method"; $0.exactMatch = method } }
    }

    static func path(prefix: String) -> Permission {
        .with { $0.urlPath.path = .with { $0.prefix = prefix } }
    }

    static func rules(_ action: Envoy_Config_Rbac_V3_RBAC.Action, _ policies: [String: ([Permission], [Principal])]) throws -> RoleBasedAccessControl {
        let proto = Envoy_Config_Rbac_V3_RBAC.with { rbac in
            rbac.action = action
            for (name, (permissions, principals)) in policies {
                rbac.policies[name] = .with { $0.permissions = permissions; $0.principals = principals }
            }
        }
        return try RoleBasedAccessControl(proto, path: "rules")
    }

    static func request(_ method: HTTPRequest.Method = .get, _ path: String = "/", peer: String? = billing,
                        source: String = "10.0.0.7", port: Int = 8080) -> AuthorizationRequest {
        AuthorizationRequest(peerPrincipal: peer, sourceAddress: IPAddress(source), destinationAddress: IPAddress("10.0.0.9"),
                             destinationPort: port,
                             request: HTTPRequest(method: method, scheme: "http", authority: "payments", path: path))
    }

    /// The seed's policy: only billing may call payments.
    @Test func allowLetsThroughOnlyWhatAPolicyMatches() throws {
        let rules = try Self.rules(.allow, ["ns[shop]-policy[payments-to-billing]-rule[0]": ([.with { $0.any = true }], [Self.principal(Self.billing)])])
        #expect(rules.evaluate(Self.request()) == .init(allowed: true, matchedPolicy: "ns[shop]-policy[payments-to-billing]-rule[0]"))
        #expect(rules.evaluate(Self.request(peer: "spiffe://cluster.local/ns/shop/sa/orders")) == .init(allowed: false, matchedPolicy: nil))
        // No certificate, no principal.
        #expect(!rules.evaluate(Self.request(peer: nil)).allowed)
        // An ALLOW with no policies allows nothing (istiod's way to deny a whole port).
        #expect(!(try Self.rules(.allow, [:])).evaluate(Self.request()).allowed)
    }

    @Test func denyStopsWhatAPolicyMatchesAndLogOnlyMarks() throws {
        let policies = ["deny-post": ([Self.method("POST")], [Principal.with { $0.any = true }])]
        let deny = try Self.rules(.deny, policies)
        #expect(deny.evaluate(Self.request(.post)) == .init(allowed: false, matchedPolicy: "deny-post"))
        #expect(deny.evaluate(Self.request(.get)).allowed)
        let log = try Self.rules(.log, policies)
        #expect(log.evaluate(Self.request(.post)) == .init(allowed: true, matchedPolicy: "deny-post"))
    }

    @Test func setsNegationAndPathsWithoutTheQuery() throws {
        // (GET and /info*) or not /admin*, by a peer of namespace shop from 10.0.0.0/24.
        let permission = Permission.with {
            $0.orRules.rules = [
                .with { $0.andRules.rules = [Self.method("GET"), Self.path(prefix: "/info")] },
                .with { $0.notRule = Self.path(prefix: "/admin") },
            ]
        }
        let principal = Principal.with {
            $0.andIds.ids = [
                .with { $0.filterState = .with { $0.key = "io.istio.peer_principal"; $0.stringMatch = .with { $0.safeRegex.regex = ".*/ns/shop/.*" } } },
                .with { $0.directRemoteIp = .with { $0.addressPrefix = "10.0.0.0"; $0.prefixLen = .init(24) } },
            ]
        }
        let rules = try Self.rules(.allow, ["p": ([permission], [principal])])
        #expect(rules.evaluate(Self.request(.get, "/info?verbose=1")).allowed)
        #expect(rules.evaluate(Self.request(.post, "/orders")).allowed)
        #expect(!rules.evaluate(Self.request(.post, "/admin/users")).allowed)
        #expect(!rules.evaluate(Self.request(.get, "/info", source: "10.0.1.7")).allowed)
        #expect(!rules.evaluate(Self.request(.get, "/info", peer: "spiffe://cluster.local/ns/other/sa/billing")).allowed)
    }

    /// Operators inside operators, each with several operands: the compiled checks must step over an
    /// operand's whole subtree (matched or not) to reach the next, and report the first policy by name.
    @Test func nestedOperatorsAndManyPoliciesAreTriedInOrder() throws {
        // or(and(POST, /a*), not(or(/b*, /c*)), and(GET, or(/d*, /e*)))
        let permission = Permission.with {
            $0.orRules.rules = [
                .with { $0.andRules.rules = [Self.method("POST"), Self.path(prefix: "/a")] },
                .with { $0.notRule = .with { $0.orRules.rules = [Self.path(prefix: "/b"), Self.path(prefix: "/c")] } },
                .with { $0.andRules.rules = [Self.method("GET"), .with { $0.orRules.rules = [Self.path(prefix: "/d"), Self.path(prefix: "/e")] }] },
            ]
        }
        let anyone = Principal.with { $0.any = true }
        let nested = try Self.rules(.allow, ["p": ([permission], [anyone])])
        #expect(nested.evaluate(Self.request(.post, "/a1")).allowed)
        #expect(nested.evaluate(Self.request(.put, "/z")).allowed)       // not(/b or /c)
        #expect(!nested.evaluate(Self.request(.post, "/b1")).allowed)
        #expect(!nested.evaluate(Self.request(.put, "/c")).allowed)
        #expect(nested.evaluate(Self.request(.get, "/e9")).allowed)      // the last operand, after two subtrees
        #expect(!nested.evaluate(Self.request(.post, "/c/e")).allowed)

        // 20 policies as the benchmark's: each GET on any path for one caller range; the last one's range matches.
        var policies: [String: ([Permission], [Principal])] = [:]
        for index in 1...20 {
            let range = index < 20 ? "10.\(index).0.0" : "10.0.0.0"
            let permission = Permission.with { $0.andRules.rules = [.with { $0.orRules.rules = [Self.method("GET")] }, .with { $0.orRules.rules = [Self.path(prefix: "/")] }] }
            let principal = Principal.with { $0.andIds.ids = [.with { $0.orIds.ids = [.with { $0.directRemoteIp = .with { $0.addressPrefix = range; $0.prefixLen = .init(24) } }] }] }
            policies["policy-\(index < 10 ? "0" : "")\(index)"] = ([permission], [principal, Self.principal("spiffe://cluster.local/ns/x/sa/p\(index)")])
        }
        let many = try Self.rules(.allow, policies)
        #expect(many.policyNames.first == "policy-01" && many.policyNames.count == 20)
        #expect(many.evaluate(Self.request()) == .init(allowed: true, matchedPolicy: "policy-20"))
        #expect(many.evaluate(Self.request(source: "10.7.0.1")) == .init(allowed: true, matchedPolicy: "policy-07"))
        // A principal after the first: policy-03's second principal, though 10.9.9.9 is in no range.
        #expect(many.evaluate(Self.request(peer: "spiffe://cluster.local/ns/x/sa/p3", source: "10.9.9.9")) == .init(allowed: true, matchedPolicy: "policy-03"))
        #expect(!many.evaluate(Self.request(.post)).allowed)
        #expect(!many.evaluate(Self.request(source: "10.21.0.1")).allowed)
    }

    @Test func portsAndHTTPRulesOnATCPConnection() throws {
        let rules = try Self.rules(.allow, [
            "tcp": ([.with { $0.destinationPortRange = .with { $0.start = 9000; $0.end = 9100 } }], [.with { $0.any = true }]),
            "http": ([Self.method("GET")], [.with { $0.any = true }]),
        ])
        let connection = AuthorizationRequest(peerPrincipal: Self.billing, destinationPort: 9099)
        #expect(rules.evaluate(connection) == .init(allowed: true, matchedPolicy: "tcp"))
        // The range is half-open, and a header rule matches no TCP connection.
        #expect(!rules.evaluate(AuthorizationRequest(peerPrincipal: Self.billing, destinationPort: 9100)).allowed)
    }

    /// `requested_server_name` (Istio's `connection.sni`): the ClientHello's server name, or the empty
    /// string without TLS, as Envoy matches it, so a DENY on a name never misses a connection that asked for it.
    @Test func requestedServerNameMatchesTheClientHellosName() throws {
        let rules = try Self.rules(.deny, [
            "sni": ([.with { $0.requestedServerName.suffix = ".payments.shop.svc.cluster.local" }], [.with { $0.any = true }]),
            "none": ([.with { $0.requestedServerName.exact = "" }], [.with { $0.any = true }]),
        ])
        let asked = AuthorizationRequest(peerPrincipal: Self.billing, requestedServerName: "outbound_.9000_._.payments.shop.svc.cluster.local")
        #expect(rules.evaluate(asked) == .init(allowed: false, matchedPolicy: "sni"))
        #expect(rules.evaluate(AuthorizationRequest(peerPrincipal: Self.billing)) == .init(allowed: false, matchedPolicy: "none"))
        #expect(rules.evaluate(AuthorizationRequest(peerPrincipal: Self.billing, requestedServerName: "ledger.billing")).allowed)
    }

    /// Istio's view of a JWT's claims: claims are lists, matched by one of their elements.
    @Test func metadataPrincipalsReadTheJWTClaims() throws {
        let groups = Principal.with {
            $0.metadata = .with {
                $0.filter = "istio_authn"
                $0.path = [.with { $0.key = "request.auth.claims" }, .with { $0.key = "groups" }]
                $0.value.listMatch.oneOf.stringMatch.exact = "admins"
            }
        }
        let rules = try Self.rules(.allow, ["admins": ([.with { $0.any = true }], [groups])])
        var request = Self.request()
        #expect(!rules.evaluate(request).allowed)
        var claims = Google_Protobuf_Struct()
        claims.fields["groups"] = Google_Protobuf_Value(listValue: .init(values: [.init(stringValue: "dev"), .init(stringValue: "admins")]))
        request.metadata["istio_authn"] = Google_Protobuf_Struct(fields: ["request.auth.claims": Google_Protobuf_Value(structValue: claims)])
        #expect(rules.evaluate(request).allowed)
    }

    @Test func whatCannotBeActedOnIsRefusedByPath() throws {
        func refusal(_ principal: Principal) -> String? {
            do {
                _ = try Self.rules(.deny, ["p": ([.with { $0.any = true }], [principal])])
                return nil
            } catch {
                return "\(error)"
            }
        }
        #expect(refusal(.with { $0.filterState = .with { $0.key = "my.state"; $0.stringMatch.exact = "x" } })?.hasPrefix(
            #"rules.policies["p"].principals[0].filter_state.key: "my.state" is not supported"#) == true)
        #expect(refusal(.with { $0.metadata = .with { $0.filter = "my.filter"; $0.path = [.with { $0.key = "k" }]; $0.value.presentMatch = true } })?.hasPrefix(
            #"rules.policies["p"].principals[0].metadata.filter: "my.filter" is not supported"#) == true)
        #expect(refusal(Principal()) == #"rules.policies["p"].principals[0]: needs an identifier: and_ids, or_ids, any, authenticated, source_ip, direct_remote_ip, remote_ip, header, url_path, metadata, filter_state or not_id"#)
        #expect(refusal(.with { $0.sourceIp = .with { $0.addressPrefix = "10.0.0.300" } }) == #"rules.policies["p"].principals[0].source_ip.address_prefix: "10.0.0.300" is not an IP address"#)
        // A CEL condition (field 3 of Policy, outside the subset) would change whom the policy matches.
        let known = Envoy_Config_Rbac_V3_Policy.with { $0.permissions = [.with { $0.any = true }]; $0.principals = [.with { $0.any = true }] }
        let policy = try Envoy_Config_Rbac_V3_Policy(serializedBytes: try known.serializedBytes() + [0x1A, 0x00] as [UInt8])
        let proto = Envoy_Config_Rbac_V3_RBAC.with { $0.action = .deny; $0.policies["cel"] = policy }
        #expect(throws: ConfigError.self) { try RoleBasedAccessControl(proto, path: "rules") }
    }
}
