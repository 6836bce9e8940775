import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// AuthorizationPolicy from `capstan control-plane`, enforced by the destination's sidecar on mutual TLS
/// (``MeshCluster``): the seed's policy (only billing may call payments) over HTTP and over TCP, a DENY
/// before it, and a dry-run policy that only counts.
@Suite(.serialized) struct AuthorizationEndToEndTests {
    static let peers = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers")
    static let service = "http://198.51.100.200:9080"
    static let paymentsV1 = IPAddress("192.0.2.10")!

    /// Only billing may call payments (the seed document, with the principal as Istio writes it).
    static let onlyBilling = """
        apiVersion: security.istio.io/v1beta1
        kind: AuthorizationPolicy
        metadata:
          name: payments-to-billing
          namespace: shop
        spec:
          selector:
            matchLabels:
              app: payments
          rules:
          - from:
            - source:
                principals: ["cluster.local/ns/shop/sa/billing"]
        """

    /// Nobody may call /admin, whoever they are; and a dry run of refusing POST, counted only.
    static let denials = """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata:
          name: no-admin
          namespace: shop
        spec:
          selector:
            matchLabels:
              app: payments
          action: DENY
          rules:
          - to:
            - operation:
                paths: ["/admin*"]
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata:
          name: no-post
          namespace: shop
          annotations:
            istio.io/dry-run: "true"
        spec:
          selector:
            matchLabels:
              app: payments
          action: DENY
          rules:
          - to:
            - operation:
                methods: ["POST"]
        """

    /// payments (v1 at ``paymentsV1``, v2 at 192.0.2.11) with sidecars, serving HTTP on 8080 behind port 9080.
    static let httpWorkloads = MeshDocuments.sidecarWorkloads(destinationTLS: "ISTIO_MUTUAL")
        .replacingOccurrences(of: "    name: tcp-payments\n    protocol: TCP\n", with: "    name: http-payments\n")
        .replacingOccurrences(of: "tcp-payments: 80", with: "http-payments: 8080")
        .replacingOccurrences(of: "198.51.100.10", with: "\(paymentsV1)")
        .replacingOccurrences(of: "198.51.100.99", with: "192.0.2.11")

    /// payments v1's application: the HTTP upstream peer on 8080, logging each request, started.
    static func startUpstream(in payments: MeshCluster.Pod, of cluster: MeshCluster) throws -> NamespacedProcess {
        let upstream = try NamespacedProcess(["python3", peers.appendingPathComponent("http_upstream.py").path,
                                              "--listen", "\(paymentsV1):8080", "--name", "v1", "--log-requests"], in: payments.namespace,
                                             logPath: "\(cluster.directory)/payments-v1-upstream.log")
        guard upstream.waitUntil(seconds: 20, { upstream.log.contains("READY") }) else {
            upstream.stop()
            throw SandboxError("http_upstream.py did not start: \(upstream.log)")
        }
        return upstream
    }

    /// The statuses of `count` requests to `path` from `pod`'s application (httpx through its sidecar).
    static func statuses(from pod: String, _ path: String, method: String = "GET", count: Int = 3, token: String? = nil,
                         headers: [String] = []) throws -> [Int] {
        let result = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", pod, "python3", peers.appendingPathComponent("http_client.py").path,
                                                           "httpx", service + path, "--count", String(count), "--method", method]
                                                           + ((token.map { ["Authorization:Bearer \($0)"] } ?? []) + headers).flatMap { ["--header", $0] })
        let object = try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any]
        return (object?["requests"] as? [[String: Any]] ?? []).map { $0["status"] as? Int ?? 0 }
    }

    @Test func onlyBillingMayCallPaymentsOverHTTP() throws {
        let workloads = Self.httpWorkloads
        try withMeshCluster { cluster in
            try cluster.startControlPlane(files: ["workloads.yaml": workloads, "canary.yaml": MeshDocuments.httpCanary(v1: 100, v2: 0),
                                                  "mtls.yaml": MeshDocuments.peerAuthentication(mode: "STRICT"),
                                                  "allow.yaml": Self.onlyBilling, "deny.yaml": Self.denials])
            let payments = try cluster.addWorkload("payments-v1", address: Self.paymentsV1, serviceAccount: "payments", appPort: nil)
            let upstream = try Self.startUpstream(in: payments, of: cluster)
            defer { upstream.stop() }
            _ = try cluster.addWorkload("billing", address: IPAddress("192.0.2.3")!, serviceAccount: "billing", appPort: nil)
            _ = try cluster.addWorkload("client", address: IPAddress("192.0.2.1")!, serviceAccount: "client", appPort: nil)
            let billing = "\(cluster.name)-billing", client = "\(cluster.name)-client"
            // The first requests wait for the client sidecars' configuration.
            #expect(upstream.waitUntil(seconds: 10) { (try? Self.statuses(from: billing, "/hello", count: 1)) == [200] })
            #expect(try Self.statuses(from: billing, "/hello") == [200, 200, 200])
            #expect(try Self.statuses(from: client, "/hello") == [403, 403, 403])
            // DENY is checked before ALLOW: not even billing reaches /admin.
            #expect(try Self.statuses(from: billing, "/admin/users", count: 1) == [403])
            // The dry run lets POST through and counts it.
            #expect(try Self.statuses(from: billing, "/hello", method: "POST", count: 2) == [200, 200])
            let metrics = try payments.http("GET", "/stats/prometheus", port: 15020).body.split(separator: "\n")
            func total(_ name: String) -> Int {
                metrics.filter { $0.hasPrefix(name + "{") || $0.hasPrefix(name + " ") }.compactMap { Int($0.split(separator: " ").last ?? "") }.reduce(0, +)
            }
            #expect(total("envoy_http_rbac_denied") == 4, "\(metrics.filter { $0.contains("rbac") })")
            #expect(total("envoy_http_rbac_istio_dry_run_deny_shadow_denied") == 2, "\(metrics.filter { $0.contains("rbac") })")
            // The application saw the allowed requests, never the refused ones.
            #expect(upstream.log.contains("REQUEST GET") && upstream.log.contains("/hello") && !upstream.log.contains("/admin"), "\(upstream.log)")
        }
    }

    @Test func onlyBillingMayCallPaymentsOverTCP() throws {
        let workloads = MeshDocuments.sidecarWorkloads(destinationTLS: "ISTIO_MUTUAL")
            .replacingOccurrences(of: "198.51.100.10", with: "\(Self.paymentsV1)")
            .replacingOccurrences(of: "198.51.100.99", with: "192.0.2.11")
        try withMeshCluster { cluster in
            try cluster.startControlPlane(files: ["workloads.yaml": workloads, "canary.yaml": MeshDocuments.canary(v1: 100, v2: 0),
                                                  "mtls.yaml": MeshDocuments.peerAuthentication(mode: "STRICT"), "allow.yaml": Self.onlyBilling])
            let payments = try cluster.addWorkload("payments-v1", address: Self.paymentsV1, serviceAccount: "payments")
            let billing = try cluster.addWorkload("billing", address: IPAddress("192.0.2.3")!, serviceAccount: "billing", appPort: nil)
            let client = try cluster.addWorkload("client", address: IPAddress("192.0.2.1")!, serviceAccount: "client", appPort: nil)
            let target = SocketAddress(MeshSandbox.serviceVIP, MeshSandbox.servicePort)
            let allowed = try EchoExchange.run(to: target, from: billing.namespace, payload: EchoExchange.payload(3000))
            #expect(allowed.intact, "\(allowed)")
            // The client's sidecar accepts, but payments' closes the mutual TLS connection unserved.
            #expect(throws: (any Error).self) { try EchoExchange.run(to: target, from: client.namespace, payload: EchoExchange.payload(3000)) }
            #expect(try cluster.metric("envoy_tcp_rbac_denied", in: payments) == "1")
            #expect(try cluster.metric("envoy_tcp_rbac_allowed", in: payments) == "1")
        }
    }

    static let authorizerAddress = "192.0.2.5"

    /// The mesh config naming the gRPC authorizer (Peers/ext_authz_server.py) at ``authorizerAddress``, its
    /// ServiceEntry, and a CUSTOM policy on payments with `rules` (YAML under `rules:`).
    static func custom(rules: String) -> String {
        """
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: istio
          namespace: istio-system
        data:
          mesh: |-
            extensionProviders:
            - name: shop-authz
              envoyExtAuthzGrpc:
                service: ext-authz.shop.svc.cluster.local
                port: 9191
                timeout: 2s
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: ext-authz
          namespace: shop
        spec:
          hosts: [ext-authz]
          ports: [{number: 9191, name: grpc, protocol: GRPC}]
          resolution: STATIC
          endpoints: [{address: \(authorizerAddress)}]
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata:
          name: private-asks
          namespace: shop
        spec:
          selector:
            matchLabels:
              app: payments
          action: CUSTOM
          provider:
            name: shop-authz
          rules:
        \(rules)
        """
    }

    /// Starts the authorizer in a pod of its own, allowing TCP connections from `principals`.
    static func startAuthorizer(in cluster: MeshCluster, allowing principals: [String] = []) throws -> NamespacedProcess {
        let pod = try cluster.addPod("ext-authz", address: IPAddress(authorizerAddress)!)
        let authorizer = try NamespacedProcess(["python3", peers.appendingPathComponent("ext_authz_server.py").path,
                                                "--listen", "\(authorizerAddress):9191"] + principals.flatMap { ["--allow-principal", $0] },
                                               in: pod.namespace, logPath: "\(cluster.directory)/ext-authz.log")
        guard authorizer.waitUntil(seconds: 20, { authorizer.log.contains("READY") }) else {
            authorizer.stop()
            throw SandboxError("ext_authz_server.py did not start: \(authorizer.log)")
        }
        return authorizer
    }

    /// A CUSTOM policy from `capstan control-plane`: the mesh config's provider (an `istio` ConfigMap)
    /// is the gRPC authorizer built from xds-protos (Peers/ext_authz_server.py) in a pod of its own, and
    /// payments' sidecar asks it about `/private` only, as the policy's rules say, and obeys it.
    @Test func customPolicyAsksTheExternalAuthorizer() throws {
        let custom = Self.custom(rules: """
              - to:
                - operation:
                    paths: ["/private*"]
            """)
        let workloads = Self.httpWorkloads
        try withMeshCluster { cluster in
            try cluster.startControlPlane(files: ["workloads.yaml": workloads, "canary.yaml": MeshDocuments.httpCanary(v1: 100, v2: 0),
                                                  "mtls.yaml": MeshDocuments.peerAuthentication(mode: "STRICT"), "custom.yaml": custom])
            let authorizer = try Self.startAuthorizer(in: cluster)
            defer { authorizer.stop() }
            let payments = try cluster.addWorkload("payments-v1", address: Self.paymentsV1, serviceAccount: "payments", appPort: nil)
            let upstream = try Self.startUpstream(in: payments, of: cluster)
            defer { upstream.stop() }
            _ = try cluster.addWorkload("billing", address: IPAddress("192.0.2.3")!, serviceAccount: "billing", appPort: nil)
            let billing = "\(cluster.name)-billing"
            #expect(upstream.waitUntil(seconds: 10) { (try? Self.statuses(from: billing, "/hello", count: 1)) == [200] })
            // Outside the rules: never asked.
            #expect(try Self.statuses(from: billing, "/hello", count: 2) == [200, 200])
            #expect(!authorizer.log.contains("CHECK"), "\(authorizer.log)")
            // Inside them: the authorizer decides, on the header it looks for.
            #expect(try Self.statuses(from: billing, "/private/ledger", count: 2, headers: ["x-allow:yes"]) == [200, 200])
            #expect(try Self.statuses(from: billing, "/private/ledger", count: 1) == [403])
            #expect(authorizer.log.contains("CHECK GET 198.51.100.200:9080 /private/ledger ALLOWED"), "\(authorizer.log)")
            #expect(authorizer.log.contains("/private/ledger DENIED"), "\(authorizer.log)")
            // The upstream saw the allowed ones, never the denied one.
            #expect(upstream.log.components(separatedBy: "/private/ledger").count - 1 == 2, "\(upstream.log)")
            authorizer.stop()
            // Unreachable is denied (failOpen is false).
            #expect(try Self.statuses(from: billing, "/private/ledger", count: 1, headers: ["x-allow:yes"]) == [403])
            #expect(try Self.statuses(from: billing, "/hello", count: 1) == [200])
        }
    }

    /// The same provider on a TCP port: payments' sidecar asks it about each connection (the network
    /// ext_authz filter, after mutual TLS, before connecting upstream), with the peer's principal; it
    /// allows billing's only.
    @Test func customPolicyAsksTheExternalAuthorizerAboutTCPConnections() throws {
        let workloads = MeshDocuments.sidecarWorkloads(destinationTLS: "ISTIO_MUTUAL")
            .replacingOccurrences(of: "198.51.100.10", with: "\(Self.paymentsV1)")
            .replacingOccurrences(of: "198.51.100.99", with: "192.0.2.11")
        try withMeshCluster { cluster in
            try cluster.startControlPlane(files: ["workloads.yaml": workloads, "canary.yaml": MeshDocuments.canary(v1: 100, v2: 0),
                                                  "mtls.yaml": MeshDocuments.peerAuthentication(mode: "STRICT"),
                                                  "custom.yaml": Self.custom(rules: "  - {}")])
            let authorizer = try Self.startAuthorizer(in: cluster, allowing: ["spiffe://cluster.local/ns/shop/sa/billing"])
            defer { authorizer.stop() }
            _ = try cluster.addWorkload("payments-v1", address: Self.paymentsV1, serviceAccount: "payments")
            let billing = try cluster.addWorkload("billing", address: IPAddress("192.0.2.3")!, serviceAccount: "billing", appPort: nil)
            let client = try cluster.addWorkload("client", address: IPAddress("192.0.2.1")!, serviceAccount: "client", appPort: nil)
            let target = SocketAddress(MeshSandbox.serviceVIP, MeshSandbox.servicePort)
            let allowed = try EchoExchange.run(to: target, from: billing.namespace, payload: EchoExchange.payload(3000))
            #expect(allowed.intact, "\(allowed)")
            // The client's sidecar accepts, but payments' closes the mutual TLS connection once the authorizer says no.
            #expect(throws: (any Error).self) { try EchoExchange.run(to: target, from: client.namespace, payload: EchoExchange.payload(3000)) }
            #expect(authorizer.log.contains("CHECK TCP spiffe://cluster.local/ns/shop/sa/billing ALLOWED"), "\(authorizer.log)")
            #expect(authorizer.log.contains("CHECK TCP spiffe://cluster.local/ns/shop/sa/client DENIED"), "\(authorizer.log)")
        }
    }

    /// RequestAuthentication from `capstan control-plane` (the issuer's JWKS inline; keys and tokens from
    /// jwt_issuer.py, the `cryptography` package, not Capstan's code) with an AuthorizationPolicy that
    /// wants a request principal in group admins: payments' sidecar verifies the token (`jwt_authn`)
    /// before RBAC reads its claims, so a bad token is 401, a good one of the wrong group or none 403.
    @Test func requestAuthenticationFeedsAuthorizationPolicysClaims() throws {
        let tokens = try JWTAuthenticationEndToEndTests.issue()
        let jwks = String(data: try JSONSerialization.data(withJSONObject: [tokens["jwks"]!], options: [.fragmentsAllowed]), encoding: .utf8)!
            .dropFirst().dropLast()
        let authentication = """
            apiVersion: security.istio.io/v1
            kind: RequestAuthentication
            metadata:
              name: payments-jwt
              namespace: shop
            spec:
              selector:
                matchLabels:
                  app: payments
              jwtRules:
              - issuer: "\(JWTAuthenticationEndToEndTests.issuer)"
                jwks: \(jwks)
            ---
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata:
              name: payments-admins
              namespace: shop
            spec:
              selector:
                matchLabels:
                  app: payments
              rules:
              - from:
                - source:
                    requestPrincipals: ["*"]
                when:
                - key: request.auth.claims[groups]
                  values: ["admins"]
            """
        let workloads = Self.httpWorkloads
        try withMeshCluster { cluster in
            try cluster.startControlPlane(files: ["workloads.yaml": workloads, "canary.yaml": MeshDocuments.httpCanary(v1: 100, v2: 0),
                                                  "mtls.yaml": MeshDocuments.peerAuthentication(mode: "STRICT"), "jwt.yaml": authentication])
            let payments = try cluster.addWorkload("payments-v1", address: Self.paymentsV1, serviceAccount: "payments", appPort: nil)
            let upstream = try Self.startUpstream(in: payments, of: cluster)
            defer { upstream.stop() }
            _ = try cluster.addWorkload("billing", address: IPAddress("192.0.2.3")!, serviceAccount: "billing", appPort: nil)
            _ = try cluster.addWorkload("client", address: IPAddress("192.0.2.1")!, serviceAccount: "client", appPort: nil)
            let billing = "\(cluster.name)-billing", client = "\(cluster.name)-client"
            // The first requests wait for the client sidecars' configuration.
            #expect(upstream.waitUntil(seconds: 10) { (try? Self.statuses(from: billing, "/hello", count: 1, token: tokens["admins"])) == [200] })
            #expect(try Self.statuses(from: billing, "/hello", count: 2, token: tokens["admins"]) == [200, 200])
            #expect(try Self.statuses(from: client, "/hello", count: 1, token: tokens["admins"]) == [200])
            // A valid token of another group: authenticated, not authorized.
            #expect(try Self.statuses(from: client, "/hello", count: 1, token: tokens["guests"]) == [403])
            // A token that fails verification is refused by jwt_authn before RBAC.
            #expect(try Self.statuses(from: client, "/hello", count: 1, token: tokens["expired_admins"]) == [401])
            #expect(try Self.statuses(from: client, "/hello", count: 1, token: tokens["other_issuer"]) == [401])
            #expect(try Self.statuses(from: client, "/hello", count: 1, token: tokens["stranger"]) == [401])
            // No token passes RequestAuthentication; requestPrincipals then refuses it.
            #expect(try Self.statuses(from: client, "/hello", count: 1) == [403])
            #expect(try Self.statuses(from: billing, "/hello", count: 1) == [403])
        }
    }
}
