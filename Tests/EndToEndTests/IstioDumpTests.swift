import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// Issue 15's acceptance test: the proxy driven by what istiod really sent. `dump_ads_server.py` (grpcio and
/// PyPI's xds-protos, not our protos) serves every listener, cluster and route configuration of an Envoy
/// `/config_dump` taken from Istio 1.20.8 (`../shared/istio-config/`, read in place) over ADS from the peer
/// namespace, on 192.0.2.2:15010; EDS gives each cluster an upstream of ours in the peer (plaintext: no
/// `tlsMode: istio` metadata), and SDS gives `default` and `ROOTCA` from a throw-away CA made with openssl.
/// The proxy's bootstrap is an istiod sidecar's (or gateway's) in the parts Capstan reads: the node, ADS
/// through the static `xds-grpc` cluster, and `sds-grpc`, both to the Python server over TCP.
@Suite(.serialized) struct IstioDumpTests {
    static let peers = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers").path
    static let dumps = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../../shared/istio-config").standardized.path
    static let sidecarDump = "\(dumps)/sidecar-istio1.20.8-hello-openshift.config_dump.json"
    static let gatewayDump = "\(dumps)/ingressgateway-istio1.20.8.config_dump.json"

    /// The service the tests call, as the sidecar dump has it: listener `172.30.178.23_8080` (RDS
    /// `hello-openshift.vanilla-playground.svc.cluster.local:8080`), and on port 80 the VirtualService route
    /// of RDS `80`; both route to this cluster. The gateway routes `/dani` to it too.
    static let helloHost = "hello-openshift.vanilla-playground.svc.cluster.local"
    static let helloVIP = "172.30.178.23"
    static let helloCluster = "outbound|8080||hello-openshift.vanilla-playground.svc.cluster.local"
    /// The upstreams in the peer: one for that cluster, one every other EDS cluster gets.
    static let helloEndpoint = "198.51.100.10:8080"
    static let defaultEndpoint = "198.51.100.10:9000"
    static let defaultUpstream = "default-endpoint"

    static let typeURLs = [
        "CDS": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "EDS": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        "LDS": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "RDS": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "SDS": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
    ]

    /// The proxy a test drives: its node, and the workload identity its `default` secret carries.
    struct Node {
        var id: String
        var cluster: String
        var identity: String
        var metadata: [String: Any]

        /// Istio's node metadata, in the shape istiod reads (a subset of the dump's bootstrap node).
        static func metadata(namespace: String, name: String, workload: String, serviceAccount: String,
                             labels: [String: String], extra: [String: Any] = [:]) -> [String: Any] {
            [
                "NAMESPACE": namespace, "NAME": name, "WORKLOAD_NAME": workload, "SERVICE_ACCOUNT": serviceAccount,
                "LABELS": labels, "INSTANCE_IPS": "192.0.2.1", "MESH_ID": "cluster.local", "CLUSTER_ID": "Kubernetes",
                "ISTIO_VERSION": "1.20.8", "ENVOY_PROMETHEUS_PORT": 15090, "ENVOY_STATUS_PORT": 15021,
                "PILOT_SAN": ["istiod-basic.istio-system.svc"],
                "PROXY_CONFIG": ["discoveryAddress": "192.0.2.2:15010", "proxyAdminPort": 15000, "statusPort": 15020,
                                 "concurrency": 2, "drainDuration": "45s", "terminationDrainDuration": "5s"],
            ].merging(extra) { $1 }
        }

        /// hello-openshift's sidecar, as in the sidecar dump (pod IP ours).
        static var sidecar: Node {
            Node(
                id: "sidecar~192.0.2.1~hello-openshift-5b7bcb9b6d-kggwf.vanilla-playground~vanilla-playground.svc.cluster.local",
                cluster: "hello-openshift.vanilla-playground",
                identity: "spiffe://cluster.local/ns/vanilla-playground/sa/default",
                metadata: metadata(namespace: "vanilla-playground", name: "hello-openshift-5b7bcb9b6d-kggwf", workload: "hello-openshift",
                                   serviceAccount: "default",
                                   labels: ["app": "hello-openshift", "security.istio.io/tlsMode": "istio",
                                            "service.istio.io/canonical-name": "hello-openshift", "service.istio.io/canonical-revision": "latest"],
                                   extra: ["INTERCEPTION_MODE": "REDIRECT", "APP_CONTAINERS": "hello-openshift"]))
        }

        /// istio-ingressgateway, as in the gateway dump: a `router~` node, no capture.
        static var gateway: Node {
            Node(
                id: "router~192.0.2.1~istio-ingressgateway-74ddf8dd9f-6p8p2.istio-system~istio-system.svc.cluster.local",
                cluster: "istio-ingressgateway.istio-system",
                identity: "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
                metadata: metadata(namespace: "istio-system", name: "istio-ingressgateway-74ddf8dd9f-6p8p2", workload: "istio-ingressgateway",
                                   serviceAccount: "istio-ingressgateway-service-account",
                                   labels: ["app": "istio-ingressgateway", "istio": "ingressgateway",
                                            "service.istio.io/canonical-name": "istio-ingressgateway", "service.istio.io/canonical-revision": "basic"]))
        }

        /// The proxy's bootstrap: as pilot-agent renders it in what Capstan reads, with `xds-grpc` and
        /// `sds-grpc` reaching the Python server over TCP instead of the agent's unix sockets.
        var bootstrap: String {
            get throws {
                func grpcCluster(_ name: String) -> [String: Any] {
                    ["name": name, "type": "STATIC", "connect_timeout": "1s",
                     "load_assignment": ["cluster_name": name, "endpoints": [["lb_endpoints": [["endpoint": ["address": [
                         "socket_address": ["address": "192.0.2.2", "port_value": 15010]]]]]]]],
                     "typed_extension_protocol_options": ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions": [
                         "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                         "explicit_http_config": ["http2_protocol_options": [String: Any]()]]]]
                }
                let ads: [String: Any] = ["ads": [String: Any](), "initial_fetch_timeout": "0s", "resource_api_version": "V3"]
                let bootstrap: [String: Any] = [
                    "node": ["id": id, "cluster": cluster, "metadata": metadata],
                    "dynamic_resources": [
                        "lds_config": ads, "cds_config": ads,
                        "ads_config": ["api_type": "GRPC", "transport_api_version": "V3", "set_node_on_first_message_only": true,
                                       "grpc_services": [["envoy_grpc": ["cluster_name": "xds-grpc"]]]],
                    ],
                    "static_resources": ["clusters": [grpcCluster("xds-grpc"), grpcCluster("sds-grpc")]],
                ]
                return String(decoding: try JSONSerialization.data(withJSONObject: bootstrap, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self)
            }
        }
    }

    /// The dynamic listeners (active), clusters, route configurations and secrets named in a config dump:
    /// Envoy's, or the one the proxy's admin API serves, which has the same sections.
    struct Names: Equatable, CustomStringConvertible {
        var listeners: Set<String>
        var clusters: Set<String>
        var routes: Set<String>
        var secrets: Set<String>
        /// The EDS resource names of the EDS clusters (an Envoy dump's clusters carry their type).
        var endpointServices: Set<String>

        init(_ dump: Any) {
            let configs = (dump as? [String: Any])?["configs"] as? [[String: Any]] ?? []
            func entries(_ section: String, _ key: String) -> [[String: Any]] {
                configs.first { $0["@type"] as? String == "type.googleapis.com/envoy.admin.v3.\(section)" }?[key] as? [[String: Any]] ?? []
            }
            func name(_ entry: [String: Any], _ path: String...) -> String? {
                var value: Any? = entry
                for key in path { value = (value as? [String: Any])?[key] }
                return value as? String
            }
            listeners = Set(entries("ListenersConfigDump", "dynamic_listeners").compactMap { name($0, "active_state", "listener", "name") })
            let clusters = entries("ClustersConfigDump", "dynamic_active_clusters").compactMap { $0["cluster"] as? [String: Any] }
            self.clusters = Set(clusters.compactMap { $0["name"] as? String })
            endpointServices = Set(clusters.filter { $0["type"] as? String == "EDS" }.compactMap {
                name($0, "eds_cluster_config", "service_name") ?? $0["name"] as? String
            })
            routes = Set(entries("RoutesConfigDump", "dynamic_route_configs").compactMap { name($0, "route_config", "name") })
            secrets = Set(entries("SecretsConfigDump", "dynamic_active_secrets").compactMap { $0["name"] as? String })
        }

        init(file: String) throws {
            self.init(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))))
        }

        var description: String {
            "\(listeners.count) listeners, \(clusters.count) clusters, \(routes.count) route configurations, secrets \(secrets.sorted())"
        }
    }

    /// A pod (captured or not) whose proxy the Python server configures from a dump, the upstreams in the
    /// peer, and a scratch directory (certificates, bootstrap, logs). ``stop()`` ends every process and
    /// removes the directory.
    final class DumpedMesh {
        let sandbox: Sandbox
        let node: Node
        let directory: String
        private(set) var server: NamespacedProcess?
        private(set) var serverLog = ""
        private(set) var upstreams: [NamespacedProcess] = []
        private(set) var proxy: ProxyProcess?

        init(_ sandbox: Sandbox, node: Node) throws {
            self.sandbox = sandbox
            self.node = node
            directory = "/tmp/capstan-dump-\(sandbox.name)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }

        func stop() {
            proxy?.stop()
            server?.stop()
            upstreams.forEach { $0.stop() }
            try? FileManager.default.removeItem(atPath: directory)
        }

        /// A root CA and a workload certificate for the node's identity, as istiod's CA issues them (EC
        /// P-256, the SPIFFE ID as the only, critical, URI SAN): `root-cert.pem`, `cert-chain.pem`, `key.pem`.
        func makeCertificates() throws {
            try """
                basicConstraints = critical, CA:FALSE
                keyUsage = critical, digitalSignature, keyEncipherment
                extendedKeyUsage = serverAuth, clientAuth
                subjectAltName = critical, URI:\(node.identity)
                """.write(toFile: "\(directory)/workload.ext", atomically: true, encoding: .utf8)
            let d = directory
            for arguments in [
                ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "\(d)/ca-key.pem",
                 "-out", "\(d)/root-cert.pem", "-subj", "/O=cluster.local", "-days", "1",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "\(d)/key.pem",
                 "-out", "\(d)/workload.csr", "-subj", "/O=cluster.local"],
                ["x509", "-req", "-in", "\(d)/workload.csr", "-CA", "\(d)/root-cert.pem", "-CAkey", "\(d)/ca-key.pem",
                 "-CAcreateserial", "-out", "\(d)/cert-chain.pem", "-days", "1", "-extfile", "\(d)/workload.ext"],
            ] {
                let result = try ChildProcess.run("/usr/bin/openssl", arguments)
                guard result.status == 0 else { throw SandboxError("openssl \(arguments.joined(separator: " ")): \(result)") }
            }
        }

        /// `http_upstream.py` on `address`, answering with `x-upstream-name: name`.
        func startUpstream(_ name: String, at address: String) throws {
            let process = try NamespacedProcess(["/usr/bin/env", "python3", "\(IstioDumpTests.peers)/http_upstream.py", "--listen", address, "--name", name],
                                                in: sandbox.peer, logPath: "\(directory)/upstream-\(upstreams.count).log")
            upstreams.append(process)
            guard process.waitUntil(seconds: 20, { process.log.contains("READY") }) else {
                throw SandboxError("upstream \(name) did not start: \(process.log)")
            }
        }

        /// `dump_ads_server.py` serving `dump` on 192.0.2.2:15010, stopping the one before; its requests are
        /// logged to `log` (in the scratch directory).
        func startServer(dump: String, log: String = "ads-requests.jsonl") throws {
            server?.stop()
            serverLog = "\(directory)/\(log)"
            let process = try NamespacedProcess(["/usr/bin/env", "python3", "\(IstioDumpTests.peers)/dump_ads_server.py",
                                                 "--listen", "192.0.2.2:15010", "--dump", dump, "--log", serverLog,
                                                 "--endpoint", "\(IstioDumpTests.helloCluster)=\(IstioDumpTests.helloEndpoint)",
                                                 "--default-endpoint", IstioDumpTests.defaultEndpoint, "--tls-mode", "disabled",
                                                 "--cert-chain", "\(directory)/cert-chain.pem", "--private-key", "\(directory)/key.pem",
                                                 "--root-cert", "\(directory)/root-cert.pem"],
                                                in: sandbox.peer, logPath: "\(serverLog).out")
            server = process
            guard process.waitUntil(seconds: 20, { process.log.contains("READY") }) else {
                throw SandboxError("dump_ads_server.py did not start: \(process.log)")
            }
        }

        /// `capstan proxy --config BOOTSTRAP` in the pod, once LIVE.
        func startProxy() throws {
            let file = "\(directory)/bootstrap.json"
            try node.bootstrap.write(toFile: file, atomically: true, encoding: .utf8)
            do {
                proxy = try ProxyProcess(in: sandbox.pod, arguments: ["--config", file], logPath: "\(directory)/proxy.log")
            } catch {
                throw SandboxError("\(error)\nADS requests:\n\(requestText)")
            }
        }

        var requestText: String { (try? String(contentsOfFile: serverLog, encoding: .utf8)) ?? "" }

        /// The DiscoveryRequests the server logged, in order.
        var requests: [[String: Any]] {
            requestText.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        }

        /// Whether the latest request of `type` (CDS, EDS, …) ACKs version 1 (its nonce answered, no error),
        /// subscribed to `names` (nil: anything, as the wildcard CDS and LDS).
        func acknowledged(_ type: String, names: Set<String>?) -> Bool {
            guard let last = requests.last(where: { $0["type_url"] as? String == IstioDumpTests.typeURLs[type] }) else { return false }
            return last["version_info"] as? String == "1" && !(last["response_nonce"] as? String ?? "").isEmpty
                && last["error_detail"] is NSNull && names.map { Set(last["resource_names"] as? [String] ?? []) == $0 } != false
        }

        /// The NACKs the server saw: their type, version_info (the version the proxy keeps) and error_detail.
        var rejections: [(type: String, version: String, error: String)] {
            requests.compactMap { request in
                (request["error_detail"] as? String).map { (request["type_url"] as? String ?? "?", request["version_info"] as? String ?? "", $0) }
            }
        }

        func configDump() throws -> Any {
            let proxy = try #require(proxy)
            let response = try proxy.admin("GET", "/config_dump")
            try #require(response.status == 200, "\(response)")
            return try JSONSerialization.jsonObject(with: Data(response.body.utf8))
        }

        func stat(_ name: String) throws -> String? {
            try proxy?.admin("GET", "/stats").body.split(separator: "\n").first { $0.hasPrefix("\(name): ") }
                .map { String($0.dropFirst(name.count + 2)) }
        }

        /// curl (HTTP/1.1) from the pod, as the application (captured) or, with `from: peer`, from outside.
        func curl(_ arguments: [String], fromPeer: Bool = false) throws -> ChildProcess.Result {
            let namespace = "\(sandbox.name)-\(fromPeer ? "peer" : "pod")"
            return try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", namespace, "curl", "-sS", "--max-time", "10", "-i"] + arguments)
        }

        /// The `x-upstream-name` of curl's answer, or a description of what came instead.
        func upstream(_ arguments: [String], fromPeer: Bool = false) throws -> String {
            let result = try curl(arguments, fromPeer: fromPeer)
            let header = result.standardOutput.split(separator: "\r\n").first { $0.lowercased().hasPrefix("x-upstream-name: ") }
            return header.map { String($0.dropFirst("x-upstream-name: ".count)) } ?? "no upstream: \(result)\nproxy:\n\(proxy?.errorOutput ?? "")"
        }
    }

    /// A sandbox with `dump` served to a proxy for `node`, capture installed when `capture`; the
    /// upstreams up. Everything is stopped and removed afterwards, also on failure.
    func withDumpedMesh<T>(_ dump: String, node: Node, capture: Bool, _ body: (DumpedMesh) throws -> T) throws -> T {
        try withSandbox { sandbox in
            if capture {
                try sandbox.initialize()
                // The dump's services live in 172.30.0.0/16: a route makes the application's connects to
                // them go out (to be captured); nothing is sent there, the proxy answers from its listeners.
                try ChildProcess.require("/usr/sbin/ip", ["-n", "\(sandbox.name)-pod", "route", "add", "172.30.0.0/16", "via", "192.0.2.2"])
            }
            let mesh = try DumpedMesh(sandbox, node: node)
            defer { mesh.stop() }
            try mesh.makeCertificates()
            try mesh.startUpstream(Self.helloCluster, at: Self.helloEndpoint)
            try mesh.startUpstream(Self.defaultUpstream, at: Self.defaultEndpoint)
            try mesh.startServer(dump: dump)
            try mesh.startProxy()
            return try body(mesh)
        }
    }

    /// 1. Every resource of istiod's sidecar configuration is ACKed and in force.
    @Test func theSidecarAcceptsEveryResourceIstiodSent() throws {
        let expected = try Names(file: Self.sidecarDump)
        #expect((expected.listeners.count, expected.clusters.count, expected.routes.count) == (16, 20, 9), "\(expected)")
        try withDumpedMesh(Self.sidecarDump, node: .sidecar, capture: true) { mesh in
            let subscriptions: [(String, Set<String>?)] = [("CDS", nil), ("EDS", expected.endpointServices), ("LDS", nil),
                                                           ("RDS", expected.routes), ("SDS", ["default", "ROOTCA"])]
            let server = try #require(mesh.server)
            #expect(server.waitUntil(seconds: 10) { subscriptions.allSatisfy { mesh.acknowledged($0.0, names: $0.1) } },
                    "not every type ACKed version 1: \(mesh.requestText)")
            for (type, names) in subscriptions {
                #expect(mesh.acknowledged(type, names: names), "\(type) is not ACKed")
            }
            #expect(mesh.rejections.isEmpty, "NACKs: \(mesh.rejections)\nproxy:\n\(mesh.proxy?.errorOutput ?? "")")
            #expect(mesh.requests.first?["node"] as? String == Node.sidecar.id)

            let dump = try mesh.configDump()
            let inForce = Names(dump)
            #expect(inForce.listeners == expected.listeners, "missing \(expected.listeners.subtracting(inForce.listeners)), extra \(inForce.listeners.subtracting(expected.listeners))")
            #expect(inForce.clusters == expected.clusters, "missing \(expected.clusters.subtracting(inForce.clusters)), extra \(inForce.clusters.subtracting(expected.clusters))")
            #expect(inForce.routes == expected.routes, "missing \(expected.routes.subtracting(inForce.routes)), extra \(inForce.routes.subtracting(expected.routes))")
            #expect(inForce.secrets == expected.secrets, "\(inForce)")
            let secrets = ((dump as? [String: Any])?["configs"] as? [[String: Any]])?.lazy.compactMap { $0["dynamic_active_secrets"] as? [[String: Any]] }.first
            #expect(secrets?.first { $0["name"] as? String == "default" }?["identity"] as? String == Node.sidecar.identity, "\(secrets ?? [])")
            #expect(try mesh.stat("listener_manager.lds.update_rejected") == "0")
            #expect(try mesh.stat("cluster_manager.cds.update_rejected") == "0")
        }
    }

    /// 2. The application's request, captured, goes virtualOutbound → the listener of its destination →
    /// its RDS route → the cluster's EDS endpoint; Istio's request metrics count it.
    @Test func aCapturedRequestReachesTheEndpointItsRouteNames() throws {
        try withDumpedMesh(Self.sidecarDump, node: .sidecar, capture: true) { mesh in
            // 172.30.178.23_8080, RDS "hello-openshift.vanilla-playground.svc.cluster.local:8080".
            #expect(try mesh.upstream(["-H", "Host: \(Self.helloHost)", "http://\(Self.helloVIP):8080/"]) == Self.helloCluster)
            // 0.0.0.0_80, RDS "80": the VirtualService's route for the host name, to port 8080.
            #expect(try mesh.upstream(["--resolve", "\(Self.helloHost):80:\(Self.helloVIP)", "http://\(Self.helloHost)/"]) == Self.helloCluster)
            // 0.0.0.0_9090, RDS "9090": kiali by its VIP, whose endpoint is the default one.
            #expect(try mesh.upstream(["http://172.30.244.61:9090/"]) == Self.defaultUpstream)

            let metrics = try #require(mesh.proxy).admin("GET", "/stats/prometheus", port: 15090).body
            let requests = metrics.split(separator: "\n").filter { $0.hasPrefix("istio_requests_total{") }
            #expect(requests.contains { $0.contains(#"reporter="source""#) && $0.contains(#"destination_service="\#(Self.helloHost)""#)
                && $0.contains(#"response_code="200""#) && $0.hasSuffix(" 2") }, "\(requests)")
            // Asked for by its VIP, counted by the service its cluster stands for (Istio's cluster metadata).
            #expect(requests.contains { $0.contains(#"destination_service="kiali.istio-system.svc.cluster.local""#) }, "\(requests)")
        }
    }

    /// 3. The ingress gateway: no capture, the dump's listener binds 0.0.0.0:8080, and a client outside the
    /// pod reaches the cluster the gateway's route names.
    @Test func theIngressGatewayServesItsRoutesOnItsOwnPort() throws {
        let expected = try Names(file: Self.gatewayDump)
        try withDumpedMesh(Self.gatewayDump, node: .gateway, capture: false) { mesh in
            let server = try #require(mesh.server)
            #expect(server.waitUntil(seconds: 10) {
                [("CDS", nil), ("EDS", expected.endpointServices), ("LDS", nil), ("RDS", expected.routes)].allSatisfy { mesh.acknowledged($0.0, names: $0.1) }
            }, "\(mesh.requestText)")
            #expect(mesh.rejections.isEmpty, "NACKs: \(mesh.rejections)")
            #expect(Names(try mesh.configDump()) == expected)

            // Route "http.8080": exact path /dani to hello-openshift; anything else has no route (404).
            #expect(try mesh.upstream(["http://192.0.2.1:8080/dani"], fromPeer: true) == Self.helloCluster)
            let other = try mesh.curl(["-o", "/dev/null", "-w", "%{http_code}", "http://192.0.2.1:8080/elsewhere"], fromPeer: true)
            #expect(other.standardOutput.hasSuffix("404"), "\(other)")
        }
    }

    /// 4. An update with a filter Capstan does not have (Lua, in one listener's HTTP filters) is NACKed
    /// with the listener and the filter named, and the configuration in force keeps serving. The server
    /// serves one version only, so the update is the server restarted with the changed dump: the proxy
    /// reconnects and gets it.
    @Test func anUnsupportedFilterIsNACKedAndTheConfigurationInForceKeepsServing() throws {
        try withDumpedMesh(Self.sidecarDump, node: .sidecar, capture: true) { mesh in
            let changed = "\(mesh.directory)/with-lua.config_dump.json"
            let edit = try ChildProcess.run("/usr/bin/env", ["python3", "-c", """
                import json, sys
                source, listener, target = sys.argv[1:]
                lua = {"name": "envoy.filters.http.lua", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                    "default_source_code": {"inline_string": "function envoy_on_request(handle) end"}}}
                dump = json.load(open(source))
                for section in dump["configs"]:
                    for entry in section.get("dynamic_listeners", []):
                        if entry["name"] == listener:
                            for chain in entry["active_state"]["listener"]["filter_chains"]:
                                for network in chain["filters"]:
                                    if network["name"] == "envoy.filters.network.http_connection_manager":
                                        network["typed_config"]["http_filters"].insert(-1, lua)
                json.dump(dump, open(target, "w"))
                """, Self.sidecarDump, "\(Self.helloVIP)_8080", changed])
            try #require(edit.status == 0, "\(edit)")
            #expect(try mesh.upstream(["-H", "Host: \(Self.helloHost)", "http://\(Self.helloVIP):8080/"]) == Self.helloCluster)

            try mesh.startServer(dump: changed, log: "ads-requests-lua.jsonl")
            let server = try #require(mesh.server)
            #expect(server.waitUntil(seconds: 15) { !mesh.rejections.isEmpty }, "no NACK: \(mesh.requestText)\nproxy:\n\(mesh.proxy?.errorOutput ?? "")")
            let nack = try #require(mesh.rejections.first)
            #expect(nack.type == Self.typeURLs["LDS"] && nack.version == "1", "\(nack)")
            #expect(nack.error.contains("\(Self.helloVIP)_8080") && nack.error.contains("envoy.filters.http.lua"), "\(nack.error)")
            #expect(mesh.rejections.count == 1, "only LDS is refused: \(mesh.rejections)")

            // What was in force still is, and still serves.
            #expect(try mesh.stat("listener_manager.lds.update_rejected") == "1")
            #expect(Names(try mesh.configDump()).listeners.count == 16)
            #expect(try mesh.upstream(["-H", "Host: \(Self.helloHost)", "http://\(Self.helloVIP):8080/"]) == Self.helloCluster)
            #expect(mesh.proxy?.isRunning == true)
        }
    }
}
