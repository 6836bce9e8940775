import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// Istio's egress gateway task (HTTP, with mutual TLS from the sidecar to the gateway) end to end: a
/// captured pod's `curl http://edition.cnn.com/politics` goes to `istio-egressgateway` (a `capstan agent
/// proxy router`) over mesh mTLS, with the external host as SNI, and the gateway sends it on to the
/// outside world. The outside world is a namespace beyond the gateway only (documentation addresses
/// 203.0.113.0/24, reachable from nowhere else): its dnsmasq (203.0.113.53) answers the gateway's lookups
/// for edition.cnn.com, its HTTP server (203.0.113.99:80) answers with what it saw. The client pod's own
/// route to 203.0.113.0/24 leads to the cluster's hub, which forwards nothing: the direct path is dead.
/// Everything runs in namespace `shop` (the CA's tokens are for it), the egress gateway's Service as a
/// ServiceEntry, since this control plane has no Kubernetes registry.
@Suite(.serialized) struct EgressGatewayTests {
    static let peers = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers")
    static let host = "edition.cnn.com"
    static let clientV4 = IPAddress("192.0.2.30")!
    static let gatewayV4 = IPAddress("192.0.2.40")!
    static let outsiderV4 = IPAddress("192.0.2.50")!
    /// The gateway's address towards the outside world, and the outside world's server and DNS.
    static let gatewayExternalV4 = IPAddress("203.0.113.1")!
    static let serverV4 = IPAddress("203.0.113.99")!
    static let dnsV4 = IPAddress("203.0.113.53")!

    /// The task's documents, as istio.io gives them (the gateway's namespace aside), and the mesh config
    /// with the access log the task reads (`accessLogFile`).
    static func documents(accessLog: String) -> [String: String] {
        ["egress.yaml": """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: cnn, namespace: shop}
            spec:
              hosts: [\(host)]
              ports:
              - {number: 80, name: http-port, protocol: HTTP}
              - {number: 443, name: https, protocol: HTTPS}
              resolution: DNS
            ---
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: istio-egressgateway, namespace: shop}
            spec:
              hosts: [istio-egressgateway.shop.svc.cluster.local]
              ports:
              - {number: 80, name: http2, protocol: HTTP2}
              resolution: STATIC
              endpoints:
              - address: \(gatewayV4)
                labels: {istio: egressgateway}
                serviceAccount: istio-egressgateway
            ---
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata: {name: istio-egressgateway, namespace: shop}
            spec:
              selector:
                istio: egressgateway
              servers:
              - port:
                  number: 80
                  name: https
                  protocol: HTTPS
                hosts:
                - \(host)
                tls:
                  mode: ISTIO_MUTUAL
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: egressgateway-for-cnn, namespace: shop}
            spec:
              host: istio-egressgateway.shop.svc.cluster.local
              subsets:
              - name: cnn
                trafficPolicy:
                  loadBalancer:
                    simple: ROUND_ROBIN
                  portLevelSettings:
                  - port:
                      number: 80
                    tls:
                      mode: ISTIO_MUTUAL
                      sni: \(host)
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: direct-cnn-through-egress-gateway, namespace: shop}
            spec:
              hosts:
              - \(host)
              gateways:
              - istio-egressgateway
              - mesh
              http:
              - match:
                - gateways:
                  - mesh
                  port: 80
                route:
                - destination:
                    host: istio-egressgateway.shop.svc.cluster.local
                    subset: cnn
                    port:
                      number: 80
                  weight: 100
              - match:
                - gateways:
                  - istio-egressgateway
                  port: 80
                route:
                - destination:
                    host: \(host)
                    port:
                      number: 80
                  weight: 100
            """,
         "istio.yaml": """
            apiVersion: v1
            kind: ConfigMap
            metadata:
              name: istio
              namespace: istio-system
            data:
              mesh: |-
                accessLogFile: \(accessLog)
            """]
    }

    /// `/etc/netns/NAMESPACE/resolv.conf` (which `ip netns exec` mounts) naming the outside world's DNS, for
    /// `pods`; removed afterwards with `/etc/netns` itself if this made it.
    static func withResolvConf<T>(_ cluster: MeshCluster, pods: [String], _ body: () throws -> T) throws -> T {
        let hadNetnsDirectory = FileManager.default.fileExists(atPath: "/etc/netns")
        let directories = pods.map { "/etc/netns/\(cluster.name)-\($0)" }
        defer {
            for directory in directories { try? FileManager.default.removeItem(atPath: directory) }
            if !hadNetnsDirectory { rmdir("/etc/netns") }
        }
        for directory in directories {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try "nameserver \(dnsV4)\noptions timeout:1 attempts:2\n".write(toFile: "\(directory)/resolv.conf", atomically: true, encoding: .utf8)
        }
        return try body()
    }

    static func run(_ cluster: MeshCluster, in pod: String, _ arguments: [String]) throws -> ChildProcess.Result {
        try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(cluster.name)-\(pod)"] + arguments)
    }

    /// The first line of `pod`'s proxy's /stats named `name`, its value.
    static func stat(_ pod: MeshCluster.Pod, _ name: String) throws -> Int? {
        try pod.http("GET", "/stats", port: 15000).body.split(separator: "\n").first { $0.hasPrefix("\(name): ") }
            .flatMap { Int($0.dropFirst(name.count + 2)) }
    }

    /// The parts of the sandbox a test looks at.
    struct World {
        var cluster: MeshCluster
        var gateway: MeshCluster.Pod
        var client: MeshCluster.Pod
        var agent: NamespacedProcess
        var dns: NamespacedProcess
        var server: NamespacedProcess
        /// The outside world's namespace.
        var internet: MeshCluster.Pod
        /// The gateway's access log file.
        var accessLog: String
    }

    /// The control plane serving `files` (given the access log's path), the egress gateway pod (no
    /// capture, its proxy binding ports below 1024 as Istio's gateway pods do, with unprivileged ports
    /// from 0 in its own namespace), the outside world behind it (dnsmasq, and the server `serve` starts
    /// there), and the captured pod (curl's) whose route to the outside world ends at the hub.
    static func withWorld<T>(files: (MeshCluster, String) -> [String: String], serve: (MeshCluster, NetworkNamespace) throws -> NamespacedProcess,
                             _ body: (World) throws -> T) throws -> T {
        try withMeshCluster { cluster in
            try withResolvConf(cluster, pods: ["egress", "sleep"]) {
                let logs = try cluster.makeDirectory("egress-logs", owner: 1337)
                try cluster.startControlPlane(files: files(cluster, "\(logs)/access.log"))
                let gateway = try cluster.addPod("egress", address: gatewayV4)
                let sysctl = try run(cluster, in: "egress", ["sysctl", "-w", "net.ipv4.ip_unprivileged_port_start=0"])
                #expect(sysctl.status == 0, "\(sysctl)")
                let internet = try cluster.addNetwork("internet", beyond: gateway, gatewayAddress: gatewayExternalV4, addresses: [serverV4, dnsV4])
                let dns = try NamespacedProcess(["/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                                                 "--listen-address=\(dnsV4)", "--bind-interfaces", "--port=53", "--log-queries",
                                                 "--log-facility=-", "--pid-file=", "--user=root", "--local-ttl=30",
                                                 "--host-record=\(host),\(serverV4)"],
                                                in: internet.namespace, logPath: "\(cluster.directory)/dnsmasq.log")
                internet.processes.append(dns)
                let server = try serve(cluster, internet.namespace)
                internet.processes.append(server)
                #expect(server.waitUntil(seconds: 20) { server.log.contains("READY") }, "\(server.log)")
                #expect(dns.waitUntil(seconds: 10) { dns.log.contains("started") }, "\(dns.log)")
                let agent = try cluster.startAgent(in: gateway, serviceAccount: "istio-egressgateway",
                                                   environment: ["ISTIO_METAJSON_LABELS": #"{"istio": "egressgateway", "app": "istio-egressgateway"}"#],
                                                   arguments: ["proxy", "router"])
                try cluster.waitReady(gateway, agent: agent, seconds: 20)
                let client = try cluster.addWorkload("sleep", address: clientV4, serviceAccount: "client", appPort: nil)
                let route = try run(cluster, in: "sleep", ["ip", "route", "add", "203.0.113.0/24", "via", "\(MeshCluster.hubV4)"])
                #expect(route.status == 0, "\(route)")
                return try body(World(cluster: cluster, gateway: gateway, client: client, agent: agent, dns: dns, server: server,
                                      internet: internet, accessLog: "\(logs)/access.log"))
            }
        }
    }

    @Test func aPodReachesAnExternalHostThroughTheEgressGatewayOverMutualTLS() throws {
        try Self.withWorld(files: { Self.documents(accessLog: $1) }, serve: { cluster, namespace in
            try NamespacedProcess(["python3", Self.peers.appendingPathComponent("http_upstream.py").path,
                                   "--listen", "\(Self.serverV4):80", "--name", "internet", "--log-requests", "--report-client"],
                                  in: namespace, logPath: "\(cluster.directory)/internet.log")
        }) { world in
            let (cluster, gateway, client, agent, dns, server) = (world.cluster, world.gateway, world.client, world.agent, world.dns, world.server)

            // The gateway's listener on 80 takes mesh mTLS for the external host's name, with its workload certificate.
            let dump = try gateway.http("GET", "/config_dump", port: 15000).body.replacingOccurrences(of: " ", with: "")
            // (GatewayGeneratorTests checks the chain is chosen by SNI; the dump lists its `server_names`.)
            #expect(dump.contains("\"name\":\"0.0.0.0_80\"") && dump.contains("\"rds_route_config_name\":\"https.80.https.istio-egressgateway.shop\""))
            #expect(dump.contains("\"require_client_certificate\":true") && dump.contains("\"name\":\"ROOTCA\"") && dump.contains("\"name\":\"default\""))
            // The sidecar's cluster to the gateway's subset does ISTIO_MUTUAL with the task's SNI.
            let sidecarDump = try client.http("GET", "/config_dump", port: 15000).body.replacingOccurrences(of: " ", with: "")
            #expect(sidecarDump.contains("\"sni\":\"\(Self.host)\""), "the rule's sni on outbound|80|cnn|istio-egressgateway")

            // The task's check: curl the external host from the pod; the answer comes from the outside world.
            var answer: ChildProcess.Result?
            let reached = agent.waitUntil(seconds: 20) {
                answer = try? Self.run(cluster, in: "sleep", ["curl", "-sS", "--max-time", "5",
                                                              "--resolve", "\(Self.host):80:\(Self.serverV4)", "http://\(Self.host)/politics"])
                return answer?.standardOutput.contains("\"path\": \"/politics\"") == true
            }
            #expect(reached, "\(answer.map(String.init(describing:)) ?? "")\ngateway: \(agent.log.suffix(3000))\nserver: \(server.log)\ndns: \(dns.log)")
            let json = try answer.flatMap { try JSONSerialization.jsonObject(with: Data($0.standardOutput.utf8)) as? [String: Any] }
            let headers = json?["headers"] as? [String: Any]
            // The outside world saw the gateway's address, not the pod's: the request left through the gateway.
            #expect(json?["client"] as? String == "\(Self.gatewayExternalV4)", "\(json ?? [:])")
            #expect(headers?["host"] as? String == Self.host)
            // The gateway terminated the sidecar's mutual TLS: it names the client's workload identity.
            let certificateDetails = headers?["x-forwarded-client-cert"] as? String ?? ""
            #expect(certificateDetails.contains("URI=spiffe://cluster.local/ns/shop/sa/client"), "\(headers ?? [:])")
            // The gateway looked the name up, in the outside world's DNS.
            #expect(dns.log.contains("query[A] \(Self.host) from \(Self.gatewayExternalV4)"), "\(dns.log)")

            // The access log (the mesh config's file, written by both proxies) shows the request twice: the
            // sidecar's line, out to the gateway's subset, and the gateway's, from the pod out by the host's cluster.
            // (The proxies flush their access logs every second.)
            var accessLog = ""
            _ = agent.waitUntil(seconds: 5) {
                accessLog = (try? String(contentsOfFile: world.accessLog, encoding: .utf8)) ?? ""
                return accessLog.components(separatedBy: "/politics").count >= 3
            }
            let lines = accessLog.split(separator: "\n").filter { $0.contains("\"GET /politics HTTP/") }
            let line = lines.first { $0.contains("outbound|80||\(Self.host)") } ?? ""
            #expect(line.contains(" 200 ") && line.contains("\"\(Self.serverV4):80\""), "\(accessLog)\n\(agent.log.suffix(4000))")
            // The client's sidecar, and the SNI it asked the gateway for (%REQUESTED_SERVER_NAME%, before the route name).
            #expect(line.contains(" \(Self.clientV4):") && line.contains("\"\(Self.host)\""), "\(line)")
            #expect(line.contains(" \(Self.host) "), "the SNI: \(line)")
            let sidecarLine = lines.first { $0.contains("outbound|80|cnn|istio-egressgateway.shop.svc.cluster.local") } ?? ""
            #expect(sidecarLine.contains(" 200 ") && sidecarLine.contains("\"\(Self.gatewayV4):80\""), "\(accessLog)")

            // The sidecar sent it to the gateway's subset, never to the host's own cluster.
            #expect(try Self.stat(client, "cluster.outbound|80|cnn|istio-egressgateway.shop.svc.cluster.local.upstream_rq_total") ?? 0 >= 1)
            #expect(try Self.stat(client, "cluster.outbound|80||\(Self.host).upstream_cx_total") ?? 0 == 0)
            // And the pod has no path of its own: without the sidecar (uid 1337 is not captured), nothing answers.
            let direct = try Self.run(cluster, in: "sleep", ["setpriv", "--reuid", "1337", "--regid", "1337", "--clear-groups",
                                                             "curl", "-sS", "--max-time", "3", "http://\(Self.serverV4)/direct"])
            #expect(direct.status != 0, "\(direct)")
            #expect(!server.log.contains("/direct"), "\(server.log)")

            // Only mesh workloads get through the gateway: a pod without a workload certificate is refused in the handshake.
            try cluster.addPod("outsider", address: Self.outsiderV4)
            let outsider = try Self.run(cluster, in: "outsider", ["curl", "-sSk", "--max-time", "5", "--resolve", "\(Self.host):80:\(Self.gatewayV4)",
                                                                   "https://\(Self.host):80/outsider"])
            #expect(outsider.status != 0, "\(outsider)")
            let plaintext = try Self.run(cluster, in: "outsider", ["curl", "-sS", "--max-time", "5", "-H", "Host: \(Self.host)",
                                                                    "http://\(Self.gatewayV4)/outsider"])
            #expect(plaintext.status != 0 || !plaintext.standardOutput.contains("/outsider"), "\(plaintext)")
            #expect(!server.log.contains("/outsider"), "\(server.log)")
        }
    }

    /// The task's HTTPS variant ("Egress gateway for HTTPS traffic"): the application's own TLS goes
    /// through, untouched, from its sidecar (a `tls` route for `mesh`: the name, by SNI, to the gateway's
    /// subset) to the gateway (a PASSTHROUGH server on 443, protocol TLS, whose `tls` route sends the name
    /// out to the host's 443).
    static let httpsDocuments = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: cnn, namespace: shop}
        spec:
          hosts: [\(host)]
          ports:
          - {number: 80, name: http-port, protocol: HTTP}
          - {number: 443, name: https, protocol: HTTPS}
          resolution: DNS
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: istio-egressgateway, namespace: shop}
        spec:
          hosts: [istio-egressgateway.shop.svc.cluster.local]
          ports:
          - {number: 80, name: http2, protocol: HTTP2}
          - {number: 443, name: https, protocol: HTTPS}
          resolution: STATIC
          endpoints:
          - address: \(gatewayV4)
            labels: {istio: egressgateway}
            serviceAccount: istio-egressgateway
        ---
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: istio-egressgateway, namespace: shop}
        spec:
          selector:
            istio: egressgateway
          servers:
          - port:
              number: 443
              name: tls
              protocol: TLS
            hosts:
            - \(host)
            tls:
              mode: PASSTHROUGH
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: egressgateway-for-cnn, namespace: shop}
        spec:
          host: istio-egressgateway.shop.svc.cluster.local
          subsets:
          - name: cnn
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: direct-cnn-through-egress-gateway, namespace: shop}
        spec:
          hosts:
          - \(host)
          gateways:
          - mesh
          - istio-egressgateway
          tls:
          - match:
            - gateways:
              - mesh
              port: 443
              sniHosts:
              - \(host)
            route:
            - destination:
                host: istio-egressgateway.shop.svc.cluster.local
                subset: cnn
                port:
                  number: 443
          - match:
            - gateways:
              - istio-egressgateway
              port: 443
              sniHosts:
              - \(host)
            route:
            - destination:
                host: \(host)
                port:
                  number: 443
              weight: 100
        """

    @Test func aPodsOwnTLSPassesThroughTheEgressGateway() throws {
        try Self.withWorld(files: { _, _ in ["egress.yaml": Self.httpsDocuments] }, serve: { cluster, namespace in
            try NamespacedProcess(["python3", Self.peers.appendingPathComponent("tls_origin_server.py").path,
                                   "--listen", "\(Self.serverV4):443", "--host", Self.host, "--ca-out", "\(cluster.directory)/cnn-ca.pem"],
                                  in: namespace, logPath: "\(cluster.directory)/internet.log")
        }) { world in
            let (cluster, gateway, client, agent, dns, server) = (world.cluster, world.gateway, world.client, world.agent, world.dns, world.server)
            // The task's check: curl https://edition.cnn.com from the pod, verifying the server's own certificate.
            var answer: ChildProcess.Result?
            let reached = agent.waitUntil(seconds: 20) {
                answer = try? Self.run(cluster, in: "sleep", ["curl", "-sS", "--max-time", "5", "--cacert", "\(cluster.directory)/cnn-ca.pem",
                                                              "--resolve", "\(Self.host):443:\(Self.serverV4)", "https://\(Self.host)/politics"])
                return answer?.standardOutput.contains("\"path\": \"/politics\"") == true
            }
            #expect(reached, "\(answer.map(String.init(describing:)) ?? "")\ngateway: \(agent.log.suffix(3000))\nserver: \(server.log)\ndns: \(dns.log)")
            // Nobody terminated it: the server saw the application's SNI, and curl verified the server's certificate.
            #expect(answer?.standardOutput.contains("\"sni\": \"\(Self.host)\"") == true, "\(answer.map(String.init(describing:)) ?? "")")
            // The sidecar relayed it to the gateway's subset, the gateway out by the host's cluster, resolved in the outside world's DNS.
            #expect(try Self.stat(client, "cluster.outbound|443|cnn|istio-egressgateway.shop.svc.cluster.local.upstream_cx_total") ?? 0 >= 1)
            #expect(try Self.stat(client, "cluster.outbound|443||\(Self.host).upstream_cx_total") ?? 0 == 0)
            #expect(try Self.stat(gateway, "cluster.outbound|443||\(Self.host).upstream_cx_total") ?? 0 >= 1)
            #expect(dns.log.contains("query[A] \(Self.host) from \(Self.gatewayExternalV4)"), "\(dns.log)")
            // Without the sidecar, the pod reaches nothing.
            let direct = try Self.run(cluster, in: "sleep", ["setpriv", "--reuid", "1337", "--regid", "1337", "--clear-groups", "curl", "-sS",
                                                             "--max-time", "3", "--cacert", "\(cluster.directory)/cnn-ca.pem",
                                                             "--resolve", "\(Self.host):443:\(Self.serverV4)", "https://\(Self.host)/direct"])
            #expect(direct.status != 0, "\(direct)")
            #expect(!server.log.contains("/direct"), "\(server.log)")
        }
    }

    /// The task's TLS-origination variant ("Egress gateways with TLS origination"): the same mTLS hop to
    /// the gateway, whose route sends the host to its port 443, where the rule on the host's cluster
    /// (SIMPLE, the outside server's CA: the sandbox's server is not one the system roots know) makes
    /// the gateway originate TLS.
    static func originationDocuments(accessLog: String, ca: String) -> [String: String] {
        var files = documents(accessLog: accessLog)
        files["egress.yaml"] = files["egress.yaml"]!
            .replacingOccurrences(of: "host: \(host)\n        port:\n          number: 80\n",
                                  with: "host: \(host)\n        port:\n          number: 443\n")
            + """

            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: originate-tls-for-edition-cnn-com, namespace: shop}
            spec:
              host: \(host)
              trafficPolicy:
                loadBalancer:
                  simple: ROUND_ROBIN
                portLevelSettings:
                - port:
                    number: 443
                  tls:
                    mode: SIMPLE
                    sni: \(host)
                    caCertificates: \(ca)
            """
        return files
    }

    @Test func theEgressGatewayOriginatesTLSForAPodsHTTP() throws {
        // The outside server's CA, which it writes at start (before any proxy reads the rule's file).
        try Self.withWorld(files: { cluster, log in Self.originationDocuments(accessLog: log, ca: "\(cluster.directory)/cnn-ca.pem") },
                           serve: { cluster, namespace in
            try NamespacedProcess(["python3", Self.peers.appendingPathComponent("tls_origin_server.py").path,
                                   "--listen", "\(Self.serverV4):443", "--host", Self.host, "--ca-out", "\(cluster.directory)/cnn-ca.pem"],
                                  in: namespace, logPath: "\(cluster.directory)/internet.log")
        }) { world throws in
            var answer: ChildProcess.Result?
            let reached = world.agent.waitUntil(seconds: 20) {
                answer = try? Self.run(world.cluster, in: "sleep", ["curl", "-sS", "--max-time", "5",
                                                                    "--resolve", "\(Self.host):80:\(Self.serverV4)", "http://\(Self.host)/politics"])
                return answer?.standardOutput.contains("\"path\": \"/politics\"") == true
            }
            #expect(reached, "\(answer.map(String.init(describing:)) ?? "")\ngateway: \(world.agent.log.suffix(3000))\nserver: \(world.server.log)")
            // The outside server got TLS with the host's name, from the gateway (the pod sent plain HTTP to its sidecar).
            #expect(answer?.standardOutput.contains("\"sni\": \"\(Self.host)\"") == true, "\(answer.map(String.init(describing:)) ?? "")")
            #expect(try Self.stat(world.gateway, "cluster.outbound|443||\(Self.host).upstream_cx_total") ?? 0 >= 1)
            #expect(try Self.stat(world.client, "cluster.outbound|80|cnn|istio-egressgateway.shop.svc.cluster.local.upstream_rq_total") ?? 0 >= 1)
        }
    }

    /// Istio's egress gateway for TCP with mTLS (the shape of its MongoDB task, with an echo server for
    /// the database): the sidecar sends the service's address and port to the gateway's subset over
    /// ISTIO_MUTUAL with the service's name as SNI; the gateway's TLS server terminates it and relays the
    /// bytes out.
    static let tcpDocuments = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: mongo, namespace: shop}
        spec:
          hosts: [my-mongo.tcp.svc]
          addresses: [\(serverV4)/32]
          ports:
          - {number: 27017, name: mongo, protocol: TCP}
          location: MESH_EXTERNAL
          resolution: STATIC
          endpoints:
          - address: \(serverV4)
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: istio-egressgateway, namespace: shop}
        spec:
          hosts: [istio-egressgateway.shop.svc.cluster.local]
          ports:
          - {number: 7777, name: tcp, protocol: TCP}
          resolution: STATIC
          endpoints:
          - address: \(gatewayV4)
            labels: {istio: egressgateway}
            serviceAccount: istio-egressgateway
        ---
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: istio-egressgateway, namespace: shop}
        spec:
          selector:
            istio: egressgateway
          servers:
          - port:
              number: 7777
              name: tls
              protocol: TLS
            hosts:
            - my-mongo.tcp.svc
            tls:
              mode: ISTIO_MUTUAL
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: egressgateway-for-mongo, namespace: shop}
        spec:
          host: istio-egressgateway.shop.svc.cluster.local
          subsets:
          - name: mongo
            trafficPolicy:
              loadBalancer:
                simple: ROUND_ROBIN
              portLevelSettings:
              - port:
                  number: 7777
                tls:
                  mode: ISTIO_MUTUAL
                  sni: my-mongo.tcp.svc
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: direct-mongo-through-egress-gateway, namespace: shop}
        spec:
          hosts:
          - my-mongo.tcp.svc
          gateways:
          - mesh
          - istio-egressgateway
          tcp:
          - match:
            - gateways:
              - mesh
              destinationSubnets:
              - \(serverV4)/32
              port: 27017
            route:
            - destination:
                host: istio-egressgateway.shop.svc.cluster.local
                subset: mongo
                port:
                  number: 7777
          - match:
            - gateways:
              - istio-egressgateway
              port: 7777
            route:
            - destination:
                host: my-mongo.tcp.svc
                port:
                  number: 27017
              weight: 100
        """

    @Test func aPodsTCPGoesThroughTheEgressGatewayOverMutualTLS() throws {
        try Self.withWorld(files: { _, _ in ["egress.yaml": Self.tcpDocuments] }, serve: { cluster, namespace in
            try NamespacedProcess(["python3", Self.peers.appendingPathComponent("http_upstream.py").path,
                                   "--listen", "\(Self.serverV4):80", "--name", "internet"],
                                  in: namespace, logPath: "\(cluster.directory)/internet.log")
        }) { world throws in
            world.internet.servers.append(try EchoServer(in: world.internet.namespace, port: 27017))
            var exchange: EchoExchange?
            let reached = world.agent.waitUntil(seconds: 20) {
                exchange = try? EchoExchange.run(to: SocketAddress(Self.serverV4, 27017), from: world.client.namespace,
                                                 payload: EchoExchange.payload(4096))
                return exchange?.intact == true
            }
            #expect(reached, "\(exchange.map(String.init(describing:)) ?? "")\ngateway: \(world.agent.log.suffix(3000))")
            // The database saw the gateway's address: the bytes left through it.
            #expect(exchange?.peerSeenByServer.hasPrefix("\(Self.gatewayExternalV4)") == true, "\(exchange.map(String.init(describing:)) ?? "")")
            #expect(try Self.stat(world.client, "cluster.outbound|7777|mongo|istio-egressgateway.shop.svc.cluster.local.upstream_cx_total") ?? 0 >= 1)
            #expect(try Self.stat(world.gateway, "cluster.outbound|27017||my-mongo.tcp.svc.upstream_cx_total") ?? 0 >= 1)
        }
    }
}
