import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// Istio's HTTP examples served by `capstan control-plane` to a captured pod's proxy, checked with a
/// real client (httpx, keep-alive) against real upstreams (Hypercorn, answering with
/// `x-upstream-name`): `payments` is a ServiceEntry at 198.51.100.200 whose port 9080 is HTTP by its
/// name (`http-payments`); v1 and v2 serve on 198.51.100.10:8080 and 198.51.100.99:8080 in the peer.
@Suite(.serialized) struct HTTPControlPlaneTests {
    static let peers = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers")
    static let service = "http://198.51.100.200:9080"

    /// A mesh whose workloads are HTTP servers named v1 and v2 (on 8080, gRPC on 9090) and echo servers (on 80), with
    /// `files` besides the workloads (a `workloads.yaml` among them replaces ``MeshDocuments/httpWorkloads``);
    /// the pod's proxy runs with `proxyArguments`; `upstreamArguments` are added to the named upstream's
    /// command line (`["v2": ["--fail-status", "503"]]`); the pod is in `proxyNamespace` (its node id's).
    func withHTTPMesh<T>(_ files: [String: String], proxyArguments: [String] = [], upstreamArguments: [String: [String]] = [:],
                         proxyLocality: String? = nil, proxyNamespace: String = "shop", _ body: (MeshSandbox) throws -> T) throws -> T {
        try withSandbox { sandbox in
            let mesh = try MeshSandbox(sandbox, files: files.merging(["workloads.yaml": MeshDocuments.httpWorkloads]) { given, _ in given })
            var upstreams: [NamespacedProcess] = []
            defer { upstreams.forEach { $0.stop() } }
            for (name, address) in [("v1", "198.51.100.10"), ("v2", "198.51.100.99")] {
                let log = "/tmp/\(sandbox.name)-upstream-\(name).log"
                let process = try NamespacedProcess(["python3", Self.peers.appendingPathComponent("http_upstream.py").path,
                                                     "--listen", "\(address):8080", "--name", name, "--grpc-port", "9090"]
                                                        + upstreamArguments[name, default: []],
                                                    in: sandbox.peer, logPath: log)
                upstreams.append(process)
                guard process.waitUntil(seconds: 20, { process.log.contains("READY") }) else {
                    throw SandboxError("upstream \(name) did not start: \(process.log)")
                }
            }
            try mesh.startControlPlane()
            try mesh.startProxy(arguments: proxyArguments, locality: proxyLocality, namespace: proxyNamespace)
            return try body(mesh)
        }
    }

    /// `count` requests on one keep-alive connection (httpx), from the pod: who answered each, and the
    /// client ports used (one per connection).
    func requests(_ mesh: MeshSandbox, path: String = "/", count: Int, headers: [String] = []) throws -> (upstreams: [String], ports: Set<Int>) {
        let arguments = ["ip", "netns", "exec", "\(mesh.sandbox.name)-pod", "python3", Self.peers.appendingPathComponent("http_client.py").path,
                         "httpx", Self.service + path, "--count", String(count)] + headers.flatMap { ["--header", $0] }
        let result = try ChildProcess.run("/usr/bin/env", arguments)
        guard let object = try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any],
              let requests = object["requests"] as? [[String: Any]], requests.count == count else {
            throw SandboxError("http_client.py: \(result)\ncontrol plane: \(mesh.controlPlane?.log ?? "")\nproxy: \(mesh.proxy?.errorOutput ?? "")")
        }
        for request in requests where request["status"] as? Int != 200 {
            throw SandboxError("a request was answered \(request): \(result.standardOutput.prefix(2000))")
        }
        return (requests.map { $0["upstream"] as? String ?? "?" }, Set(requests.compactMap { $0["local_port"] as? Int }))
    }

    /// Waits until a request to `path` with `headers` is answered by `upstream` (a pushed route in force).
    func waitFor(_ upstream: String, _ mesh: MeshSandbox, path: String = "/", headers: [String] = []) -> Bool {
        mesh.proxy?.waitUntil(seconds: 10) { (try? requests(mesh, path: path, count: 1, headers: headers).upstreams) == [upstream] } ?? false
    }

    @Test func canaryNinetyTenSplitsEachRequestOnKeepAliveConnections() throws {
        // Another HTTP service on 8080, so that the proxy has a listener 0.0.0.0_8080 (below).
        let other = """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata:
              name: other
              namespace: shop
            spec:
              hosts:
              - other.shop.svc.cluster.local
              addresses:
              - 198.51.100.203
              ports:
              - number: 8080
                name: http
              resolution: NONE
            """
        try withHTTPMesh(["canary.yaml": MeshDocuments.httpCanary(v1: 90, v2: 10), "other.yaml": other]) { mesh in
            let routed = waitFor("v1", mesh) || waitFor("v2", mesh)
            #expect(routed, "\(mesh.proxy?.errorOutput ?? "")")
            var total: [String: Int] = [:]
            for connection in 0..<4 {
                let (upstreams, ports) = try requests(mesh, count: 250)
                #expect(ports.count == 1, "connection \(connection) used one client connection")
                #expect(Set(upstreams) == ["v1", "v2"], "connection \(connection) saw both versions: \(upstreams)")
                for upstream in upstreams { total[upstream, default: 0] += 1 }
            }
            // 10 % of 1,000 ± 3 points.
            #expect(total.values.reduce(0, +) == 1000)
            #expect((70...130).contains(total["v2", default: 0]), "\(total)")
            let counted = Int(try mesh.stat("http.outbound_0.0.0.0_9080.downstream_rq_total") ?? "") ?? 0
            #expect(counted >= 1000, "http.outbound_0.0.0.0_9080.downstream_rq_total: \(counted)")
            // Istio's request metric names the service from the cluster's istio.services metadata.
            let metrics = try #require(mesh.proxy).admin("GET", "/stats/prometheus").body.split(separator: "\n")
            #expect(metrics.contains { $0.hasPrefix("istio_requests_total{") && $0.contains(#"destination_service="payments.shop.svc.cluster.local""#) },
                    "\(metrics.filter { $0.hasPrefix("istio_requests_total") })")
            // A host the mesh does not know, on an HTTP port of the mesh: allow_any passes it to its
            // original destination (v1's server, called directly), as Istio's ALLOW_ANY does.
            let direct = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(mesh.sandbox.name)-pod", "curl", "-sS", "-i",
                                                              "--max-time", "10", "http://198.51.100.10:8080/direct"])
            #expect(direct.standardOutput.lowercased().contains("x-upstream-name: v1"), "\(direct)")
            #expect(try mesh.stat("http.outbound_0.0.0.0_8080.downstream_rq_total") == "1", "routed by 0.0.0.0_8080's connection manager")
            let dump = try #require(mesh.proxy).admin("GET", "/config_dump").body
            let compact = dump.replacingOccurrences(of: " ", with: "")
            #expect(compact.contains("\"rds_route_config_name\":\"9080\""), "the listener takes its routes over RDS")
            #expect(compact.contains("\"name\":\"payments.shop.svc.cluster.local:9080\""), "RDS 9080 is in force")
        }
    }

    @Test func uriPrefixAndHeaderMatchesRouteBySubsetAndFollowChanges() throws {
        // Seed 2: /v1 to subset v1 (Istio's example calls it stable), everything else to the service.
        let prefix = MeshDocuments.httpVirtualService("""
              - match:
                - uri:
                    prefix: /v1
                route:
                - destination:
                    host: payments
                    subset: v1
              - route:
                - destination:
                    host: payments
                    subset: v2
            """)
        try withHTTPMesh(["routes.yaml": prefix]) { mesh in
            #expect(waitFor("v1", mesh, path: "/v1/pay"), "\(mesh.proxy?.errorOutput ?? "")")
            #expect(Set(try requests(mesh, path: "/v1/pay", count: 20).upstreams) == ["v1"])
            #expect(Set(try requests(mesh, path: "/v2/pay", count: 20).upstreams) == ["v2"])
            #expect(Set(try requests(mesh, path: "/", count: 20).upstreams) == ["v2"])

            // Seed 3: one user to v2, everyone else to v1; pushed as a change, applied per request.
            try mesh.write("routes.yaml", MeshDocuments.httpVirtualService("""
                  - match:
                    - headers:
                        end-user:
                          exact: jason
                    route:
                    - destination:
                        host: payments
                        subset: v2
                  - route:
                    - destination:
                        host: payments
                        subset: v1
                """))
            #expect(waitFor("v1", mesh, path: "/v2/pay"), "\(mesh.controlPlane?.log ?? "")")
            #expect(Set(try requests(mesh, count: 20, headers: ["end-user:jason"]).upstreams) == ["v2"])
            // As a pod calls it by its Kubernetes short name.
            #expect(Set(try requests(mesh, count: 5, headers: ["end-user:jason", "host:payments:9080"]).upstreams) == ["v2"])
            #expect(Set(try requests(mesh, count: 20, headers: ["end-user:mary"]).upstreams) == ["v1"])
            #expect(Set(try requests(mesh, count: 20).upstreams) == ["v1"])
            #expect(try mesh.stat("listener_manager.lds.update_rejected") == "0")
        }
    }

    @Test func aPortWithNoProtocolIsSniffedHTTPPerRequestAndAnythingElseAsTCP() throws {
        // Port 9080 named `payments`, no protocol: Istio sniffs it. A second service on the same
        // workloads' echo servers (port 80), also unnamed, carries bytes that are not HTTP.
        let workloads = MeshDocuments.httpWorkloads.replacingOccurrences(of: "name: http-payments", with: "name: payments")
            .replacingOccurrences(of: "http-payments: 8080", with: "payments: 8080") + """

            ---
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata:
              name: ledger
              namespace: shop
            spec:
              hosts:
              - ledger.shop.svc.cluster.local
              addresses:
              - 198.51.100.201
              ports:
              - number: 9090
                name: ledger
                targetPort: 80
              resolution: STATIC
              workloadSelector:
                labels:
                  app: payments
            """
        try withHTTPMesh(["workloads.yaml": workloads, "canary.yaml": MeshDocuments.httpCanary(v1: 50, v2: 50)]) { mesh in
            let routed = waitFor("v1", mesh) || waitFor("v2", mesh)
            #expect(routed, "\(mesh.proxy?.errorOutput ?? "")")
            let (upstreams, ports) = try requests(mesh, count: 100)
            #expect(ports.count == 1 && Set(upstreams) == ["v1", "v2"], "per request on one connection: \(upstreams)")
            let started = ContinuousClock.now
            let echo = try EchoExchange.run(to: SocketAddress(IPAddress("198.51.100.201")!, 9090), from: mesh.sandbox.pod, payload: [1, 2, 3])
            #expect([MeshSandbox.v1, MeshSandbox.v2].contains(echo.serverAddress), "\(echo)")
            #expect(echo.echoed == [1, 2, 3])
            // The client spoke first: sniffing decided at once, not at the 15 s listener filter timeout.
            #expect(ContinuousClock.now - started < .seconds(5))
            let compact = try #require(mesh.proxy).admin("GET", "/config_dump").body.replacingOccurrences(of: " ", with: "")
            #expect(compact.contains("\"name\":\"198.51.100.200_9080\""))
            #expect(compact.contains("\"rds_route_config_name\":\"payments.shop.svc.cluster.local:9080\""))
        }
    }

    @Test func mutualTLSBetweenSidecarsCarriesHTTPToTheInboundConnectionManager() throws {
        // Two injected pods with agents (``MeshCluster``): the client's proxy sends each request over
        // mutual TLS (istio.alpn: istio-http/1.1) to v1's proxy, whose inbound HTTP chain routes it to
        // the application and tells it the caller (x-forwarded-client-cert).
        let v1 = IPAddress("192.0.2.10")!
        let workloads = MeshDocuments.sidecarWorkloads(destinationTLS: "ISTIO_MUTUAL")
            .replacingOccurrences(of: "    name: tcp-payments\n    protocol: TCP\n", with: "    name: http-payments\n")
            .replacingOccurrences(of: "tcp-payments: 80", with: "http-payments: 8080")
            .replacingOccurrences(of: "198.51.100.10", with: "\(v1)")
            .replacingOccurrences(of: "198.51.100.99", with: "192.0.2.11")
        try withMeshCluster { cluster in
            try cluster.startControlPlane(files: ["workloads.yaml": workloads, "canary.yaml": MeshDocuments.httpCanary(v1: 100, v2: 0),
                                                  "mtls.yaml": MeshDocuments.peerAuthentication(mode: "STRICT")])
            let payments = try cluster.addWorkload("payments-v1", address: v1, serviceAccount: "payments", appPort: nil)
            let upstream = try NamespacedProcess(["python3", Self.peers.appendingPathComponent("http_upstream.py").path,
                                                  "--listen", "\(v1):8080", "--name", "v1"], in: payments.namespace,
                                                 logPath: "\(cluster.directory)/payments-v1-upstream.log")
            defer { upstream.stop() }
            #expect(upstream.waitUntil(seconds: 20) { upstream.log.contains("READY") }, "\(upstream.log)")
            _ = try cluster.addWorkload("client", address: IPAddress("192.0.2.1")!, serviceAccount: "client", appPort: nil)
            var answered: [String: Any]?
            _ = upstream.waitUntil(seconds: 10) {
                let result = try? ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(cluster.name)-client", "python3",
                                                                   Self.peers.appendingPathComponent("http_client.py").path,
                                                                   "httpx", Self.service + "/hello", "--count", "5"])
                answered = (try? JSONSerialization.jsonObject(with: Data((result?.standardOutput ?? "").utf8))) as? [String: Any]
                return ((answered?["requests"] as? [[String: Any]])?.allSatisfy { $0["status"] as? Int == 200 }) == true
            }
            let requests = try #require(answered?["requests"] as? [[String: Any]], "\(String(describing: answered))")
            #expect(requests.count == 5 && requests.allSatisfy { $0["upstream"] as? String == "v1" }, "\(requests)")
            let headers = ((requests.first?["json"] as? [String: Any])?["headers"] as? [String: Any]) ?? [:]
            let certificate = headers["x-forwarded-client-cert"] as? String ?? ""
            #expect(certificate.contains("URI=spiffe://cluster.local/ns/shop/sa/client"), "\(headers)")
            #expect(certificate.contains("By=spiffe://cluster.local/ns/shop/sa/payments"), "\(headers)")
            // Counted by v1's inbound connection manager, with the caller's verified identity.
            let metrics = try payments.http("GET", "/stats/prometheus", port: 15020).body
            #expect(metrics.split(separator: "\n").contains {
                $0.hasPrefix("istio_requests_total{") && $0.contains(#"reporter="destination""#)
                    && $0.contains(#"source_principal="spiffe://cluster.local/ns/shop/sa/client""#)
            }, "\(metrics.split(separator: "\n").filter { $0.hasPrefix("istio_requests_total") })")
        }
    }

    /// The gRPC echo service: port 7070 (`grpc-echo`) of 198.51.100.202, served by the payments workloads on 9090.
    static let echoService = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: echo
          namespace: shop
        spec:
          hosts:
          - echo.shop.svc.cluster.local
          addresses:
          - 198.51.100.202
          ports:
          - number: 7070
            name: grpc-echo
            targetPort: 9090
          resolution: STATIC
          workloadSelector:
            labels:
              app: payments
        """

    @Test func grpcIsBalancedPerCallNotPerConnection() throws {
        // Seed 6, Istio's #7117: a gRPC client keeps one HTTP/2 connection; its calls still spread
        // over both backends, because the port says grpc and the proxy routes each stream.
        let echo = Self.echoService
        try withHTTPMesh(["echo.yaml": echo]) { mesh in
            func calls(_ count: Int) -> [String] {
                let result = try? ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(mesh.sandbox.name)-pod", "python3",
                                                                   Self.peers.appendingPathComponent("http_client.py").path,
                                                                   "grpc", "198.51.100.202:7070", "unary", "--calls", String(count)])
                let object = (try? JSONSerialization.jsonObject(with: Data((result?.standardOutput ?? "").utf8))) as? [String: Any]
                return (object?["messages"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
            }
            let ready = mesh.proxy?.waitUntil(seconds: 10) { calls(1).count == 1 } ?? false
            #expect(ready, "\(mesh.proxy?.errorOutput ?? "")")
            let names = calls(20)
            #expect(names.count == 20, "\(names)")
            #expect(Set(names) == ["v1", "v2"], "calls on one connection reached both backends: \(names)")
            let compact = try #require(mesh.proxy).admin("GET", "/config_dump").body.replacingOccurrences(of: " ", with: "")
            #expect(compact.contains("\"rds_route_config_name\":\"7070\""))
        }
    }

    @Test func rewriteAndRedirect() throws {
        // Seed 5: /v1/ rewritten to / on its way to v1, and /old redirected to /new.
        let routes = MeshDocuments.httpVirtualService("""
              - match:
                - uri:
                    prefix: /v1/
                rewrite:
                  uri: /
                route:
                - destination:
                    host: payments
                    subset: v1
              - match:
                - uri:
                    exact: /old
                redirect:
                  uri: /new
              - route:
                - destination:
                    host: payments
                    subset: v2
            """)
        try withHTTPMesh(["routes.yaml": routes]) { mesh in
            #expect(waitFor("v1", mesh, path: "/v1/pay?x=1"), "\(mesh.proxy?.errorOutput ?? "")")
            let result = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(mesh.sandbox.name)-pod", "curl", "-sS", "--max-time", "10",
                                                              "-i", Self.service + "/v1/pay?x=1", Self.service + "/old"])
            let text = result.standardOutput.lowercased()
            #expect(text.contains("x-upstream-name: v1"), "\(result)")
            #expect(text.contains(#""path": "/pay?x=1""#), "v1 saw the rewritten path: \(result)")
            #expect(text.contains("http/1.1 301"), "\(result)")
            #expect(text.contains("location: http://198.51.100.200:9080/new"), "\(result)")
        }
    }

    /// A VirtualService's `corsPolicy`, served by the caller's sidecar as Envoy's CORS filter serves it: a
    /// preflight from an allowed origin is answered there (v1 never sees it), one from another origin goes
    /// on to v1, and v1's answers carry `Access-Control-Allow-Origin` for allowed origins only.
    @Test func corsPolicyAnswersPreflightsAndMarksResponses() throws {
        let routes = MeshDocuments.httpVirtualService("""
              - corsPolicy:
                  allowOrigins: [{exact: "https://shop.example"}]
                  allowMethods: [GET, POST]
                  allowHeaders: [x-user]
                  exposeHeaders: [x-upstream-name]
                  maxAge: 1h
                route:
                - destination:
                    host: payments
                    subset: v1
            """)
        try withHTTPMesh(["routes.yaml": routes]) { mesh in
            #expect(waitFor("v1", mesh, path: "/pay"), "\(mesh.proxy?.errorOutput ?? "")")
            func curl(_ arguments: [String]) throws -> String {
                try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(mesh.sandbox.name)-pod", "curl", "-sS", "--max-time", "10", "-i"]
                                     + arguments + [Self.service + "/pay"]).standardOutput.lowercased()
            }
            let preflight = ["-X", "OPTIONS", "-H", "Access-Control-Request-Method: POST", "-H", "Access-Control-Request-Headers: x-user"]
            let answered = try curl(preflight + ["-H", "Origin: https://shop.example"])
            #expect(answered.hasPrefix("http/1.1 200"), "\(answered)")
            for line in ["access-control-allow-origin: https://shop.example", "access-control-allow-methods: get,post",
                         "access-control-allow-headers: x-user", "access-control-max-age: 3600"] {
                #expect(answered.contains(line), "\(line): \(answered)")
            }
            #expect(!answered.contains("x-upstream-name"), "the sidecar answered, not v1: \(answered)")
            let forwarded = try curl(preflight + ["-H", "Origin: https://evil.example"])
            #expect(forwarded.contains("x-upstream-name: v1") && !forwarded.contains("access-control-allow-origin"), "\(forwarded)")
            let allowed = try curl(["-H", "Origin: https://shop.example"])
            #expect(allowed.contains("x-upstream-name: v1") && allowed.contains("access-control-allow-origin: https://shop.example")
                    && allowed.contains("access-control-expose-headers: x-upstream-name"), "\(allowed)")
            let other = try curl(["-H", "Origin: https://evil.example"])
            #expect(other.contains("x-upstream-name: v1") && !other.contains("access-control-"), "\(other)")
        }
    }

    /// Istio's delegation: the root VirtualService hands `/team` to a VirtualService without hosts (another
    /// team's), whose routes split it by header; the rest stays with the root's own route.
    @Test func delegatedRoutesServeTheirPartOfTheRootsPaths() throws {
        let root = MeshDocuments.httpVirtualService("""
              - match:
                - uri:
                    prefix: /team
                delegate:
                  name: team-routes
              - route:
                - destination:
                    host: payments
                    subset: v1
            """)
        let delegate = """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: team-routes, namespace: shop}
            spec:
              http:
              - match: [{headers: {end-user: {exact: jason}}}]
                route: [{destination: {host: payments, subset: v2}}]
              - match: [{uri: {prefix: /team/v1}}]
                route: [{destination: {host: payments, subset: v1}}]
              - route: [{destination: {host: payments, subset: v2}}]
            """
        try withHTTPMesh(["routes.yaml": root, "team.yaml": delegate]) { mesh in
            #expect(waitFor("v2", mesh, path: "/team/x"), "\(mesh.proxy?.errorOutput ?? "")")
            let team = try requests(mesh, path: "/team/x", count: 20).upstreams
            let teamV1 = try requests(mesh, path: "/team/v1/x", count: 20).upstreams
            let jason = try requests(mesh, path: "/team/v1/x", count: 20, headers: ["end-user: jason"]).upstreams
            // Outside /team the delegate's catch-all does not apply: the root's own route.
            let other = try requests(mesh, path: "/other", count: 20, headers: ["end-user: jason"]).upstreams
            #expect(Set(team) == ["v2"] && Set(teamV1) == ["v1"] && Set(jason) == ["v2"] && Set(other) == ["v1"], "\(team) \(teamV1) \(jason) \(other)")
        }
    }

    /// `sourceLabels` and `sourceNamespace`, decided per caller as istiod decides them: the pod (in `shop`,
    /// labelled `app: web` by its WorkloadEntry) is sent to v2 by the routes naming it, and a route naming
    /// other callers does not apply to it.
    @Test func routesNamingTheCallerApplyToItsSidecarOnly() throws {
        let routes = MeshDocuments.httpVirtualService("""
              - match:
                - sourceLabels: {app: batch}
                route:
                - destination: {host: payments, subset: v1}
              - match:
                - sourceLabels: {app: web}
                  sourceNamespace: shop
                  uri: {prefix: /web}
                route:
                - destination: {host: payments, subset: v2}
              - route:
                - destination: {host: payments, subset: v1}
            """)
        let client = """
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: client, namespace: shop}
            spec:
              address: 192.0.2.1
              labels: {app: web}
            """
        try withHTTPMesh(["routes.yaml": routes, "client.yaml": client]) { mesh in
            #expect(waitFor("v2", mesh, path: "/web/x"), "\(mesh.proxy?.errorOutput ?? "")")
            let web = try requests(mesh, path: "/web/x", count: 20).upstreams
            let other = try requests(mesh, path: "/other", count: 20).upstreams
            #expect(Set(web) == ["v2"] && Set(other) == ["v1"], "\(web) \(other)")
        }
    }

    /// `exportTo: ["."]`, as istiod applies it: payments (namespace shop) is sent to shop's sidecars only.
    /// The pod as a pod of namespace web, in a REGISTRY_ONLY mesh, has no cluster, listener or route for
    /// it, and its request goes into BlackHoleCluster; the same pod as a pod of shop reaches v1 and v2.
    @Test func aServiceExportedToItsOwnNamespaceIsReachedFromThereOnly() throws {
        let workloads = MeshDocuments.httpWorkloads.replacingOccurrences(of: "  resolution: STATIC\n", with: "  resolution: STATIC\n  exportTo: [\".\"]\n")
        #expect(workloads != MeshDocuments.httpWorkloads)
        try withHTTPMesh(["workloads.yaml": workloads, "istio.yaml": EgressTests.registryOnly], proxyNamespace: "web") { mesh in
            let proxy = try #require(mesh.proxy)
            // Configured (the control plane's clusters are in force), without payments.
            let configured = proxy.waitUntil(seconds: 10) {
                let dump = (try? proxy.admin("GET", "/config_dump").body) ?? ""
                return dump.contains("BlackHoleCluster") && dump.contains("virtualOutbound")
            }
            let dump = try proxy.admin("GET", "/config_dump").body
            #expect(configured, "\(dump.prefix(3000))\nproxy: \(proxy.errorOutput)")
            let clusters = try proxy.admin("GET", "/clusters").body
            #expect(!clusters.contains("payments.shop.svc.cluster.local"), "\(clusters)")
            #expect(!dump.contains("payments.shop.svc.cluster.local") && !dump.contains("0.0.0.0_9080"), "\(dump.prefix(3000))")
            let blocked = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(mesh.sandbox.name)-pod", "curl", "-sS", "--max-time", "5",
                                                                "http://198.51.100.200:9080/"])
            #expect(blocked.status != 0, "\(blocked)")
            let stats = try proxy.admin("GET", "/stats").body
            #expect(Int(try mesh.stat("cluster.BlackHoleCluster.upstream_cx_none_healthy") ?? "") ?? 0 >= 1, "\(stats)")

            // The same pod in shop: payments is there, and both versions answer.
            proxy.stop()
            try mesh.startProxy(namespace: "shop")
            let reached = mesh.proxy?.waitUntil(seconds: 10) { (try? requests(mesh, count: 1)) != nil } ?? false
            #expect(reached, "proxy: \(mesh.proxy?.errorOutput ?? "")\ncontrol plane: \(mesh.controlPlane?.log ?? "")")
            let answered = try requests(mesh, count: 20).upstreams
            #expect(Set(answered) == ["v1", "v2"], "\(answered)")
        }
    }

    /// A VirtualService with `exportTo: ["."]` routes the sidecars of its namespace only: sending every
    /// request to v2, it applies to the pod as a pod of shop; the pod as a pod of web, which sees the
    /// service (exported everywhere) but not the VirtualService, is balanced over v1 and v2.
    @Test func aVirtualServiceExportedToItsOwnNamespaceRoutesOnlyThere() throws {
        let routes = MeshDocuments.httpVirtualService("""
              - route:
                - destination: {host: payments, subset: v2}
            """) + "\n  exportTo: [\".\"]"
        try withHTTPMesh(["routes.yaml": routes], proxyNamespace: "web") { mesh in
            let reached = mesh.proxy?.waitUntil(seconds: 10) { (try? requests(mesh, count: 1)) != nil } ?? false
            #expect(reached, "proxy: \(mesh.proxy?.errorOutput ?? "")\ncontrol plane: \(mesh.controlPlane?.log ?? "")")
            let web = try requests(mesh, count: 20).upstreams
            #expect(Set(web) == ["v1", "v2"], "\(web)")
            mesh.proxy?.stop()
            try mesh.startProxy(namespace: "shop")
            #expect(waitFor("v2", mesh), "\(mesh.proxy?.errorOutput ?? "")")
            let shop = try requests(mesh, count: 20).upstreams
            #expect(Set(shop) == ["v2"], "\(shop)")
        }
    }

    /// Seed 4: every request mirrored to v2 while v1 answers. v2 sees each request as a copy, addressed
    /// to the `-shadow` host, and its answers never reach the client; the copies count in v2's cluster.
    @Test func mirrorSendsACopyOfEveryRequestToV2WhileV1Answers() throws {
        let routes = MeshDocuments.httpVirtualService("""
              - route:
                - destination:
                    host: payments
                    subset: v1
                mirror:
                  host: payments
                  subset: v2
                mirrorPercentage:
                  value: 100.0
            """)
        try withHTTPMesh(["routes.yaml": routes], upstreamArguments: ["v1": ["--log-requests"], "v2": ["--log-requests"]]) { mesh in
            let proxy = try #require(mesh.proxy)
            let v2Log = "/tmp/\(mesh.sandbox.name)-upstream-v2.log"
            func seenByV2() -> (shadows: Int, others: Int) {
                let lines = ((try? String(contentsOfFile: v2Log, encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.hasPrefix("REQUEST ") }
                let shadows = lines.filter { $0.split(separator: " ").dropFirst(2).first?.hasSuffix("-shadow:9080") == true }.count
                return (shadows, lines.count - shadows)
            }
            let cluster = "cluster.outbound|9080|v2|payments.shop.svc.cluster.local"
            // The route in force: a request that v1 answers and v2 sees as a copy.
            #expect(proxy.waitUntil(seconds: 10) {
                (try? requests(mesh, count: 1).upstreams) == ["v1"] && seenByV2().shadows > 0
            }, "\(proxy.errorOutput)")
            // Only copies reach v2's subset cluster (requests before the route went to the cluster without subset).
            #expect(proxy.waitUntil(seconds: 5) { (try? mesh.stat("\(cluster).upstream_rq_total")).flatMap { Int($0) } == seenByV2().shadows })
            let before = seenByV2()
            let counted = try mesh.stat("\(cluster).upstream_rq_total").flatMap { Int($0) } ?? 0

            let (upstreams, _) = try requests(mesh, path: "/pay", count: 20)
            #expect(upstreams == Array(repeating: "v1", count: 20), "every response from v1")
            #expect(proxy.waitUntil(seconds: 10) { seenByV2().shadows == before.shadows + 20 }, "v2 saw \(seenByV2()), before \(before)")
            #expect(seenByV2().others == before.others, "v2 saw nothing but copies")
            let log = (try? String(contentsOfFile: v2Log, encoding: .utf8)) ?? ""
            #expect(log.contains("REQUEST GET 198.51.100.200-shadow:9080 /pay"), "\(log.suffix(500))")
            #expect(proxy.waitUntil(seconds: 5) { (try? mesh.stat("\(cluster).upstream_rq_total")) == String(counted + 20) },
                    "the copies count in v2's cluster: \((try? mesh.stat("\(cluster).upstream_rq_total")) ?? "-")")
        }
    }

    /// `count` requests on one keep-alive connection (httpx): how many got each status, and the client ports.
    func statuses(_ mesh: MeshSandbox, path: String = "/", count: Int) throws -> (statuses: [Int: Int], ports: Int) {
        let arguments = ["ip", "netns", "exec", "\(mesh.sandbox.name)-pod", "python3", Self.peers.appendingPathComponent("http_client.py").path,
                         "httpx", Self.service + path, "--count", String(count), "--tally"]
        let result = try ChildProcess.run("/usr/bin/env", arguments)
        guard let object = try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any],
              let statuses = object["statuses"] as? [String: Int], let ports = object["local_ports"] as? [Int] else {
            throw SandboxError("http_client.py: \(result)\nproxy: \(mesh.proxy?.errorOutput ?? "")")
        }
        return (Dictionary(uniqueKeysWithValues: statuses.map { (Int($0.key) ?? 0, $0.value) }), ports.count)
    }

    @Test func faultInjectionAbortsItsShareAndDelaysAsTheVirtualServiceSays() throws {
        // Seed 6: /slow delayed 300 ms on every request; everything else aborted with 503 on half of them.
        let routes = MeshDocuments.httpVirtualService("""
              - match:
                - uri:
                    prefix: /slow
                fault:
                  delay:
                    fixedDelay: 300ms
                    percentage:
                      value: 100
                route:
                - destination:
                    host: payments
              - fault:
                  abort:
                    httpStatus: 503
                    percentage:
                      value: 50
                route:
                - destination:
                    host: payments
            """)
        try withHTTPMesh(["routes.yaml": routes]) { mesh in
            // In force once 503s come (20 requests all answered 200 by chance: one in a million).
            let inForce = mesh.proxy?.waitUntil(seconds: 15) { (try? statuses(mesh, count: 20).statuses[503]) != nil } ?? false
            #expect(inForce, "\(mesh.proxy?.errorOutput ?? "")")

            // Envoy draws each request on its own, so the share aborted is binomial. Over the issue's 1,000
            // requests, 50 ± 3 % is 1.9 standard deviations: a correct proxy would fail it once in 17 runs.
            // Over 10,000 (four keep-alive connections), ± 3 % is 6 standard deviations: a chance failure
            // about twice in a billion runs.
            var total: [Int: Int] = [:]
            for connection in 0..<4 {
                let (statuses, ports) = try statuses(mesh, count: 2500)
                #expect(ports == 1, "connection \(connection) used one client connection")
                total.merge(statuses, uniquingKeysWith: +)
            }
            #expect(Set(total.keys) == [200, 503], "\(total)")
            #expect(total.values.reduce(0, +) == 10_000)
            let aborted = total[503, default: 0]
            #expect((4_700...5_300).contains(aborted), "aborted \(aborted) of 10,000")
            let injected = Int(try mesh.stat("http.outbound_0.0.0.0_9080.fault.aborts_injected") ?? "") ?? 0
            #expect(injected >= aborted, "fault.aborts_injected: \(injected)")
            let metrics = try #require(mesh.proxy).admin("GET", "/stats/prometheus").body.split(separator: "\n")
            #expect(metrics.contains { $0.hasPrefix("istio_requests_total{") && $0.contains(#"response_code="503""#)
                    && $0.contains(#"response_flags="FI""#) }, "\(metrics.filter { $0.hasPrefix("istio_requests_total") })")

            // The delay: every request to /slow takes at least 300 ms, then reaches the upstream with all
            // its body (200 kB, held by the proxy meanwhile), over HTTP/1.1 and over HTTP/2.
            for version in [[], ["--http2"]] {
                let arguments = ["ip", "netns", "exec", "\(mesh.sandbox.name)-pod", "python3", Self.peers.appendingPathComponent("http_client.py").path,
                                 "httpx", Self.service + "/slow", "--count", "3", "--body-bytes", "200000"] + version
                let result = try ChildProcess.run("/usr/bin/env", arguments)
                let object = try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any]
                let requests = object?["requests"] as? [[String: Any]] ?? []
                let answered = requests.map { ($0["status"] as? Int ?? 0, $0["elapsed_ms"] as? Double ?? 0, $0["body_sha_ok"] as? Bool ?? false) }
                #expect(answered.count == 3, "\(version): \(result)")
                for (status, elapsed, bodyArrived) in answered {
                    #expect(status == 200 && bodyArrived, "\(version): \(status), the upstream saw the whole body: \(bodyArrived)")
                    #expect(elapsed >= 300, "\(version): \(elapsed) ms")
                }
            }
            let delayed = Int(try mesh.stat("http.outbound_0.0.0.0_9080.fault.delays_injected") ?? "") ?? 0
            #expect(delayed >= 6, "fault.delays_injected: \(delayed)")
            #expect(try mesh.stat("http.outbound_0.0.0.0_9080.fault.active_faults") == "0")
        }
    }

    @Test func aGRPCAbortFaultEndsCallsWithItsStatus() throws {
        let fault = """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata:
              name: echo
              namespace: shop
            spec:
              hosts:
              - echo.shop.svc.cluster.local
              http:
              - fault:
                  abort:
                    grpcStatus: UNAVAILABLE
                    percentage:
                      value: 100
                route:
                - destination:
                    host: echo.shop.svc.cluster.local
            """
        try withHTTPMesh(["echo.yaml": Self.echoService, "fault.yaml": fault]) { mesh in
            // A call expecting OK; the proxy ends it with the fault's status (HTTP/2: headers, then trailers).
            func call() -> (code: String, details: String, output: String) {
                let result = try? ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(mesh.sandbox.name)-pod", "python3",
                                                                   Self.peers.appendingPathComponent("http_client.py").path,
                                                                   "grpc", "198.51.100.202:7070", "unary"])
                let object = (try? JSONSerialization.jsonObject(with: Data((result?.standardOutput ?? "").utf8))) as? [String: Any]
                return (object?["code"] as? String ?? "", object?["details"] as? String ?? "", "\(String(describing: result))")
            }
            let aborted = mesh.proxy?.waitUntil(seconds: 10) { call().code == "UNAVAILABLE" } ?? false
            #expect(aborted, "\(call().output) \(mesh.proxy?.errorOutput ?? "")")
            let (code, details, output) = call()
            #expect(code == "UNAVAILABLE" && details == "fault filter abort", "\(output)")
            let injected = Int(try mesh.stat("http.outbound_0.0.0.0_7070.fault.aborts_injected") ?? "") ?? 0
            #expect(injected >= 1, "fault.aborts_injected: \(injected)")
        }
    }

    /// Outlier detection as the seeds configure it (`consecutive5xxErrors: 2`), against v2 answering every
    /// request 503: once v2 has answered twice it is ejected, and the following requests all go to v1
    /// without a retry (Istio's default policy retries 503s, so the client sees 200s either way).
    @Test func aFailingEndpointIsEjectedAfterTwoConsecutive5xx() throws {
        let workloads = MeshDocuments.httpWorkloads.replacingOccurrences(of: "spec:\n  host: payments\n  subsets:", with: """
            spec:
              host: payments
              trafficPolicy:
                outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}
              subsets:
            """)
        #expect(workloads != MeshDocuments.httpWorkloads)
        try withHTTPMesh(["workloads.yaml": workloads], upstreamArguments: ["v2": ["--fail-status", "503"]]) { mesh in
            let proxy = try #require(mesh.proxy)
            let cluster = "cluster.outbound|9080||payments.shop.svc.cluster.local"
            let v2Log = "/tmp/\(mesh.sandbox.name)-upstream-v2.log"
            func failuresAtV2() -> Int {
                ((try? String(contentsOfFile: v2Log, encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.hasPrefix("FAILED ") }.count
            }
            // One request at a time until v2 is ejected (round robin sends every other attempt to v2).
            let ejected = proxy.waitUntil(seconds: 20) {
                _ = try? ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(mesh.sandbox.name)-pod", "curl", "-sS", "-o", "/dev/null",
                                                          "--max-time", "5", Self.service + "/"])
                return (try? mesh.stat("\(cluster).outlier_detection.ejections_active")) == "1"
            }
            #expect(ejected, "\(proxy.errorOutput)")
            #expect(failuresAtV2() == 2, "v2 answered twice before its ejection")
            #expect(try mesh.stat("\(cluster).outlier_detection.ejections_enforced_consecutive_5xx") == "1")
            #expect(try mesh.stat("\(cluster).outlier_detection.ejections_detected_consecutive_5xx") == "1")
            let hosts = try proxy.admin("GET", "/clusters").body
            #expect(hosts.contains("outbound|9080||payments.shop.svc.cluster.local::198.51.100.99:8080::health_flags::/failed_outlier_check"), "\(hosts)")
            #expect(hosts.contains("outbound|9080||payments.shop.svc.cluster.local::198.51.100.10:8080::health_flags::healthy"), "\(hosts)")
            let dump = try proxy.admin("GET", "/config_dump").body.replacingOccurrences(of: " ", with: "")
            #expect(dump.contains(#""base_ejection_time":"30s""#) && dump.contains(#""interval":"1s""#), "the outlier detection in force is dumped")

            let retries = try mesh.stat("\(cluster).upstream_rq_retry")
            let (upstreams, _) = try requests(mesh, count: 50)
            #expect(upstreams == Array(repeating: "v1", count: 50))
            #expect(failuresAtV2() == 2, "no request reached v2 while it was ejected")
            #expect(try mesh.stat("\(cluster).upstream_rq_retry") == retries, "no attempt needed a retry")
        }
    }
}
