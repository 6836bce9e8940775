import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// The seed's ingress example end to end: `capstan agent proxy router` (Istio's arguments) as
/// istio-ingressgateway, no capture, serving a Gateway for `api.myapp.com` on 80 and 443 that exposes
/// only `/status` and `/delay` of an httpbin stand-in (the HTTP upstream peer); curl is the client, in
/// its own pod. The certificate is made by the test with openssl and read by the control plane from
/// `--secrets-dir`, delivered to the gateway over ADS as `kubernetes://api-cert`.
@Suite(.serialized) struct GatewayTests {
    static let peers = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers")
    static let gatewayV4 = IPAddress("192.0.2.10")!
    static let httpbinV4 = IPAddress("192.0.2.20")!
    static let clientV4 = IPAddress("192.0.2.30")!

    static func documents(redirect: Bool) -> [String: String] {
        ["gateway.yaml": """
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata:
              name: api-gateway
              namespace: shop
            spec:
              selector:
                istio: ingressgateway
              servers:
              - port:
                  number: 80
                  name: http
                  protocol: HTTP
                hosts:
                - api.myapp.com
            \(redirect ? "    tls:\n      httpsRedirect: true\n" : "")  - port:
                  number: 443
                  name: https
                  protocol: HTTPS
                hosts:
                - api.myapp.com
                tls:
                  mode: SIMPLE
                  credentialName: api-cert
              - port:
                  number: 8443
                  name: https-mtls
                  protocol: HTTPS
                hosts:
                - api.myapp.com
                tls:
                  mode: MUTUAL
                  credentialName: api-mtls
              - port:
                  number: 9000
                  name: tcp-echo
                  protocol: TCP
                hosts:
                - "*"
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata:
              name: echo
              namespace: shop
            spec:
              hosts:
              - echo.shop.svc.cluster.local
              gateways:
              - api-gateway
              tcp:
              - match:
                - port: 9000
                route:
                - destination:
                    host: echo
            ---
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata:
              name: echo
              namespace: shop
            spec:
              hosts:
              - echo.shop.svc.cluster.local
              ports:
              - number: 7000
                name: tcp-echo
                protocol: TCP
              resolution: STATIC
              endpoints:
              - address: \(httpbinV4)
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata:
              name: httpbin
              namespace: shop
            spec:
              hosts:
              - api.myapp.com
              gateways:
              - api-gateway
              http:
              - match:
                - uri:
                    prefix: /status
                - uri:
                    prefix: /delay
                route:
                - destination:
                    host: httpbin
                    port:
                      number: 8000
            ---
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata:
              name: httpbin
              namespace: shop
            spec:
              hosts:
              - httpbin.shop.svc.cluster.local
              ports:
              - number: 8000
                name: http
              resolution: STATIC
              endpoints:
              - address: \(httpbinV4)
            """]
    }

    /// A test CA and a certificate for api.myapp.com in `DIRECTORY/secrets/api-cert` (as a Kubernetes TLS
    /// secret is mounted), the same with the CA as `ca.crt` in `secrets/api-mtls`, and a client
    /// certificate from the CA (`pki/client.crt`, `pki/client.key`); the CA's path.
    static func makeCertificate(in cluster: MeshCluster) throws -> String {
        let work = try cluster.makeDirectory("pki")
        let secret = try cluster.makeDirectory("secrets/api-cert")
        let mutual = try cluster.makeDirectory("secrets/api-mtls")
        func openssl(_ arguments: [String]) throws {
            let result = try ChildProcess.run("/usr/bin/openssl", arguments)
            guard result.status == 0 else { throw SandboxError("openssl \(arguments.joined(separator: " ")): \(result)") }
        }
        let curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try openssl(["req", "-x509"] + curve + ["-keyout", "\(work)/ca.key", "-out", "\(work)/ca.crt", "-subj", "/CN=gateway test CA", "-days", "1"])
        try openssl(["req"] + curve + ["-keyout", "\(secret)/tls.key", "-out", "\(work)/tls.csr", "-subj", "/CN=api.myapp.com"])
        try "subjectAltName=DNS:api.myapp.com\n".write(toFile: "\(work)/san.ext", atomically: true, encoding: .utf8)
        try openssl(["x509", "-req", "-in", "\(work)/tls.csr", "-CA", "\(work)/ca.crt", "-CAkey", "\(work)/ca.key", "-CAcreateserial",
                     "-out", "\(secret)/tls.crt", "-days", "1", "-extfile", "\(work)/san.ext"])
        try openssl(["req"] + curve + ["-keyout", "\(work)/client.key", "-out", "\(work)/client.csr", "-subj", "/CN=partner"])
        try openssl(["x509", "-req", "-in", "\(work)/client.csr", "-CA", "\(work)/ca.crt", "-CAkey", "\(work)/ca.key", "-CAcreateserial",
                     "-out", "\(work)/client.crt", "-days", "1"])
        for (from, to) in [("\(secret)/tls.crt", "\(mutual)/tls.crt"), ("\(secret)/tls.key", "\(mutual)/tls.key"), ("\(work)/ca.crt", "\(mutual)/ca.crt")] {
            try FileManager.default.copyItem(atPath: from, toPath: to)
        }
        return "\(work)/ca.crt"
    }

    /// curl from the client pod: `-w` status (and redirect URL), body suppressed.
    static func curl(_ cluster: MeshCluster, _ arguments: [String]) throws -> String {
        let result = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(cluster.name)-client", "curl", "-sS", "-o", "/dev/null",
                                                          "--max-time", "5", "-w", "%{http_code} %{redirect_url}"] + arguments)
        return result.standardOutput.trimmingCharacters(in: .whitespaces)
    }

    static func plain(_ cluster: MeshCluster, _ path: String) throws -> String {
        try curl(cluster, ["-H", "Host: api.myapp.com", "http://\(gatewayV4)\(path)"])
    }

    static func secure(_ cluster: MeshCluster, _ path: String, ca: String) throws -> String {
        try curl(cluster, ["--resolve", "api.myapp.com:443:\(gatewayV4)", "--cacert", ca, "https://api.myapp.com\(path)"])
    }

    @Test func theSeedsIngressThroughAGatewayAgent() throws {
        try withMeshCluster { cluster in
            let ca = try Self.makeCertificate(in: cluster)
            try cluster.startControlPlane(files: Self.documents(redirect: false), arguments: ["--secrets-dir", "\(cluster.directory)/secrets"])
            let httpbin = try cluster.addPod("httpbin", address: Self.httpbinV4)
            let upstream = try NamespacedProcess(["python3", Self.peers.appendingPathComponent("http_upstream.py").path,
                                                  "--listen", "\(Self.httpbinV4):8000", "--name", "httpbin"],
                                                 in: httpbin.namespace, logPath: "\(cluster.directory)/httpbin.log")
            httpbin.processes.append(upstream)
            httpbin.servers.append(try EchoServer(in: httpbin.namespace, port: 7000))
            #expect(upstream.waitUntil(seconds: 20) { upstream.log.contains("READY") }, "\(upstream.log)")
            try cluster.addPod("client", address: Self.clientV4)

            // The gateway pod: no capture; its proxy (uid 1337) binds 80 and 443 as Istio's gateway pods do,
            // with net.ipv4.ip_unprivileged_port_start=0 in the pod's own network namespace.
            let gateway = try cluster.addPod("ingress", address: Self.gatewayV4)
            let sysctl = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(cluster.name)-ingress", "sysctl", "-w",
                                                               "net.ipv4.ip_unprivileged_port_start=0"])
            #expect(sysctl.status == 0, "\(sysctl)")
            let agent = try cluster.startAgent(in: gateway, serviceAccount: "istio-ingressgateway",
                                               environment: ["ISTIO_METAJSON_LABELS": #"{"istio": "ingressgateway", "app": "istio-ingressgateway"}"#,
                                                             "TERMINATION_DRAIN_DURATION_SECONDS": "4"],
                                               arguments: ["proxy", "router"])
            try cluster.waitReady(gateway, agent: agent, seconds: 20)

            // The proxy is a router node, with istiod's listeners and routes for it.
            let dump = try gateway.http("GET", "/config_dump", port: 15000).body.replacingOccurrences(of: " ", with: "")
            let bootstrap = try String(contentsOfFile: "\(cluster.directory)/ingress/sockets/envoy-rev.json", encoding: .utf8)
                .replacingOccurrences(of: " ", with: "")
            #expect(bootstrap.contains("\"id\":\"router~\(Self.gatewayV4)~ingress-7d9f.shop~shop.svc.cluster.local\""), "\(bootstrap.prefix(400))")
            #expect(dump.contains("\"name\":\"0.0.0.0_80\"") && dump.contains("\"name\":\"0.0.0.0_443\""))
            #expect(!dump.contains("virtualOutbound") && !dump.contains("virtualInbound"))
            #expect(dump.contains("\"route_config_name\":\"https.443.https.api-gateway.shop\"") || dump.contains("\"rds_route_config_name\":\"https.443.https.api-gateway.shop\""))

            #expect(try Self.plain(cluster, "/status/418") == "418", "\(agent.log)")
            #expect(try Self.plain(cluster, "/delay/0").hasPrefix("200"))
            // Not exposed by the VirtualService: Envoy's 404 (NR) from the gateway itself.
            #expect(try Self.plain(cluster, "/headers").hasPrefix("404"))
            // Another host: no virtual host for it.
            #expect(try Self.curl(cluster, ["-H", "Host: other.example.com", "http://\(Self.gatewayV4)/status/418"]).hasPrefix("404"))
            // SIMPLE TLS with the test's certificate, verified by curl against the test CA.
            #expect(try Self.secure(cluster, "/status/418", ca: ca) == "418", "\(agent.log)")
            #expect(try Self.secure(cluster, "/headers", ca: ca).hasPrefix("404"))
            let secrets = try gateway.http("GET", "/config_dump", port: 15000).body
            #expect(secrets.contains("kubernetes://api-cert"))
            #expect(!secrets.contains("PRIVATE KEY-----\\nM"), "the key is not dumped")

            // TCP on 9000: bytes relayed by the bound tcp route to the echo server.
            let client = try #require(cluster.pods["client"])
            let echo = try EchoExchange.run(to: SocketAddress(Self.gatewayV4, 9000), from: client.namespace, payload: EchoExchange.payload(4096))
            #expect(echo.intact && echo.serverAddress == "\(Self.httpbinV4):7000", "\(echo)")

            // MUTUAL: the client certificate from the test CA (kubernetes://api-mtls-cacert) is required.
            let mutual = ["--resolve", "api.myapp.com:8443:\(Self.gatewayV4)", "--cacert", ca, "https://api.myapp.com:8443/status/418"]
            #expect(try Self.curl(cluster, ["--cert", "\(cluster.directory)/pki/client.crt", "--key", "\(cluster.directory)/pki/client.key"] + mutual) == "418")
            #expect(try Self.curl(cluster, mutual).hasPrefix("000"), "no client certificate, no request")

            // The certificate rotated in place (files renamed into the secret's directory): pushed, and served.
            let pki = "\(cluster.directory)/pki"
            let curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
            _ = try ChildProcess.run("/usr/bin/openssl", ["req"] + curve + ["-keyout", "\(pki)/new.key", "-out", "\(pki)/new.csr", "-subj", "/CN=api.myapp.com"])
            _ = try ChildProcess.run("/usr/bin/openssl", ["x509", "-req", "-in", "\(pki)/new.csr", "-CA", "\(pki)/ca.crt", "-CAkey", "\(pki)/ca.key",
                                                          "-CAcreateserial", "-out", "\(pki)/new.crt", "-days", "1", "-extfile", "\(pki)/san.ext"])
            let serial = try ChildProcess.run("/usr/bin/openssl", ["x509", "-noout", "-serial", "-in", "\(pki)/new.crt"]).standardOutput
            #expect(serial.hasPrefix("serial="), "\(serial)")
            for file in ["tls.key", "tls.crt"] {
                try FileManager.default.copyItem(atPath: "\(pki)/new.\(file.dropFirst(4))", toPath: "\(cluster.directory)/secrets/api-cert/.\(file).new")
                #expect(rename("\(cluster.directory)/secrets/api-cert/.\(file).new", "\(cluster.directory)/secrets/api-cert/\(file)") == 0)
            }
            func served() -> String {
                (try? ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(cluster.name)-client", "bash", "-c",
                    "openssl s_client -connect \(Self.gatewayV4):443 -servername api.myapp.com </dev/null 2>/dev/null | openssl x509 -noout -serial"]))?.standardOutput ?? ""
            }
            #expect(agent.waitUntil(seconds: 10) { served() == serial }, "served \(served()), rotated \(serial)")
            #expect(try Self.secure(cluster, "/status/418", ca: ca) == "418")

            // httpsRedirect on port 80, pushed as a change.
            try cluster.write("mesh/gateway.yaml", Self.documents(redirect: true)["gateway.yaml"]!)
            let redirected = agent.waitUntil(seconds: 10) { (try? Self.plain(cluster, "/status/418")) == "301 https://api.myapp.com/status/418" }
            #expect(redirected, "\((try? Self.plain(cluster, "/status/418")) ?? "")")
            #expect(try Self.secure(cluster, "/status/418", ca: ca) == "418")

            // A secret whose key is not its certificate's is refused, naming the secret and the file, never the key.
            try FileManager.default.removeItem(atPath: "\(cluster.directory)/secrets/api-mtls/tls.key")
            try FileManager.default.copyItem(atPath: "\(cluster.directory)/pki/client.key", toPath: "\(cluster.directory)/secrets/api-mtls/tls.key")
            let refused = try ChildProcess.run("/usr/bin/timeout", ["10", "/usr/sbin/ip", "netns", "exec", "\(cluster.name)-client", Sandbox.capstanExecutable,
                                                                    "control-plane", "--config-dir", "\(cluster.directory)/mesh",
                                                                    "--secrets-dir", "\(cluster.directory)/secrets", "--xds-address", "127.0.0.1:15999"])
            #expect(refused.status == 1)
            #expect(refused.standardError.contains("spec.servers[2].tls.credentialName: secret \"api-mtls\""), "\(refused)")
            #expect(refused.standardError.contains("tls.key: is not the key of the first certificate in tls.crt"), "\(refused)")
            #expect(!refused.standardError.contains("PRIVATE KEY"))
            let validated = try ChildProcess.run(Sandbox.capstanExecutable, ["control-plane", "--validate", "\(cluster.directory)/mesh",
                                                                             "--secrets-dir", "\(cluster.directory)/secrets"])
            #expect(validated.status == 1 && validated.standardError.contains("secret \"api-mtls\""), "\(validated)")

            // Drain: not ready at once, but the listeners keep serving through the termination drain time.
            let started = ContinuousClock.now
            agent.signal(SIGTERM)
            #expect(agent.waitUntil(seconds: 2) { (try? gateway.http("GET", "/healthz/ready", port: 15021))?.status == 503 })
            Thread.sleep(forTimeInterval: 2)
            #expect(try Self.secure(cluster, "/status/418", ca: ca) == "418", "still serving 2 s into the drain")
            let status = agent.waitForExit(seconds: 15)
            #expect(status == 0, "\(agent.log)")
            #expect(ContinuousClock.now - started >= .seconds(4), "the drain lasted TERMINATION_DRAIN_DURATION_SECONDS")
        }
    }

    /// Istio's "ingress gateway without TLS termination" task: a PASSTHROUGH server on 443 for
    /// nginx.example.com, and a VirtualService whose `tls` route sends that SNI to my-nginx's 443 (an
    /// HTTPS server with its own CA, refusing any other SNI, standing in for nginx).
    static let passthroughDocuments = """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: mygateway, namespace: shop}
        spec:
          selector:
            istio: ingressgateway
          servers:
          - port:
              number: 443
              name: https
              protocol: HTTPS
            tls:
              mode: PASSTHROUGH
            hosts:
            - nginx.example.com
            - other.example.com
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: nginx, namespace: shop}
        spec:
          hosts:
          - nginx.example.com
          gateways:
          - mygateway
          tls:
          - match:
            - port: 443
              sniHosts:
              - nginx.example.com
            route:
            - destination:
                host: my-nginx
                port:
                  number: 443
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: my-nginx, namespace: shop}
        spec:
          hosts: [my-nginx.shop.svc.cluster.local]
          ports: [{number: 443, name: https, protocol: HTTPS}]
          resolution: STATIC
          endpoints: [{address: \(httpbinV4)}]
        """

    @Test func aPassthroughServerRelaysTLSBySNIWithoutTerminatingIt() throws {
        try withMeshCluster { cluster in
            try cluster.startControlPlane(files: ["gateway.yaml": Self.passthroughDocuments])
            let nginx = try cluster.addPod("nginx", address: Self.httpbinV4)
            let ca = "\(cluster.directory)/nginx-ca.pem"
            let server = try NamespacedProcess(["python3", Self.peers.appendingPathComponent("tls_origin_server.py").path,
                                                "--listen", "\(Self.httpbinV4):443", "--host", "nginx.example.com", "--ca-out", ca],
                                               in: nginx.namespace, logPath: "\(cluster.directory)/nginx.log")
            nginx.processes.append(server)
            #expect(server.waitUntil(seconds: 20) { server.log.contains("READY") }, "\(server.log)")
            try cluster.addPod("client", address: Self.clientV4)
            let gateway = try cluster.addPod("ingress", address: Self.gatewayV4)
            let sysctl = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(cluster.name)-ingress", "sysctl", "-w",
                                                               "net.ipv4.ip_unprivileged_port_start=0"])
            #expect(sysctl.status == 0, "\(sysctl)")
            let agent = try cluster.startAgent(in: gateway, serviceAccount: "istio-ingressgateway",
                                               environment: ["ISTIO_METAJSON_LABELS": #"{"istio": "ingressgateway"}"#],
                                               arguments: ["proxy", "router"])
            try cluster.waitReady(gateway, agent: agent, seconds: 20)

            // The task's check: curl verifies nginx's own certificate (its CA, not the gateway's), through the gateway.
            let answer = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(cluster.name)-client", "curl", "-sS", "--max-time", "5",
                                                               "--resolve", "nginx.example.com:443:\(Self.gatewayV4)", "--cacert", ca,
                                                               "https://nginx.example.com/passthrough"])
            #expect(answer.standardOutput.contains("\"path\": \"/passthrough\""), "\(answer)\n\(agent.log.suffix(3000))\n\(server.log)")
            #expect(answer.standardOutput.contains("\"sni\": \"nginx.example.com\""), "\(answer)")
            #expect(Int((try gateway.http("GET", "/stats", port: 15000).body.split(separator: "\n")
                .first { $0.hasPrefix("cluster.outbound|443||my-nginx.shop.svc.cluster.local.upstream_cx_total: ") }?
                .split(separator: " ").last).map(String.init) ?? "") ?? 0 >= 1)
            // A name of the server no tls route takes: no chain, the connection is closed before any byte reaches nginx.
            let other = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(cluster.name)-client", "curl", "-sS", "--max-time", "5", "-k",
                                                              "--resolve", "other.example.com:443:\(Self.gatewayV4)", "https://other.example.com/other"])
            #expect(other.status != 0, "\(other)")
            #expect(!server.log.contains("other.example.com"), "\(server.log)")
        }
    }

    /// OPTIONAL_MUTUAL on 8443 with the `api-mtls` secret (its `ca.crt` verifies clients): served with a
    /// client certificate from that CA (the gateway tells the upstream who the client is) and without
    /// one; a certificate from another CA is refused in the handshake. A secret without `ca.crt` is
    /// refused for it, as for MUTUAL.
    static let optionalMutualDocuments = """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: api-gateway, namespace: shop}
        spec:
          selector:
            istio: ingressgateway
          servers:
          - port: {number: 8443, name: https-optional, protocol: HTTPS}
            hosts: [api.myapp.com]
            tls: {mode: OPTIONAL_MUTUAL, credentialName: api-mtls}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: httpbin, namespace: shop}
        spec:
          hosts: [api.myapp.com]
          gateways: [api-gateway]
          http:
          - route: [{destination: {host: httpbin, port: {number: 8000}}}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: httpbin, namespace: shop}
        spec:
          hosts: [httpbin.shop.svc.cluster.local]
          ports: [{number: 8000, name: http}]
          resolution: STATIC
          endpoints: [{address: \(httpbinV4)}]
        """

    @Test func anOptionalMutualServerVerifiesACertificateWhenOneIsPresented() throws {
        try withMeshCluster { cluster in
            let ca = try Self.makeCertificate(in: cluster)
            let pki = "\(cluster.directory)/pki"
            func openssl(_ arguments: [String]) throws {
                let result = try ChildProcess.run("/usr/bin/openssl", arguments)
                guard result.status == 0 else { throw SandboxError("openssl \(arguments.joined(separator: " ")): \(result)") }
            }
            let curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
            // The partner's certificate from the secret's CA, with a SPIFFE ID the gateway passes on; and one from another CA.
            try "subjectAltName=URI:spiffe://partner.example/ns/web/sa/checkout\n".write(toFile: "\(pki)/partner.ext", atomically: true, encoding: .utf8)
            try openssl(["req"] + curve + ["-keyout", "\(pki)/partner.key", "-out", "\(pki)/partner.csr", "-subj", "/CN=partner"])
            try openssl(["x509", "-req", "-in", "\(pki)/partner.csr", "-CA", "\(pki)/ca.crt", "-CAkey", "\(pki)/ca.key", "-CAcreateserial",
                         "-out", "\(pki)/partner.crt", "-days", "1", "-extfile", "\(pki)/partner.ext"])
            try openssl(["req", "-x509"] + curve + ["-keyout", "\(pki)/rogue-ca.key", "-out", "\(pki)/rogue-ca.crt", "-subj", "/CN=rogue CA", "-days", "1"])
            try openssl(["x509", "-req", "-in", "\(pki)/partner.csr", "-CA", "\(pki)/rogue-ca.crt", "-CAkey", "\(pki)/rogue-ca.key", "-CAcreateserial",
                         "-out", "\(pki)/rogue.crt", "-days", "1", "-extfile", "\(pki)/partner.ext"])

            try cluster.startControlPlane(files: ["gateway.yaml": Self.optionalMutualDocuments],
                                          arguments: ["--secrets-dir", "\(cluster.directory)/secrets"])
            let httpbin = try cluster.addPod("httpbin", address: Self.httpbinV4)
            let upstream = try NamespacedProcess(["python3", Self.peers.appendingPathComponent("http_upstream.py").path,
                                                  "--listen", "\(Self.httpbinV4):8000", "--name", "httpbin"],
                                                 in: httpbin.namespace, logPath: "\(cluster.directory)/httpbin.log")
            httpbin.processes.append(upstream)
            #expect(upstream.waitUntil(seconds: 20) { upstream.log.contains("READY") }, "\(upstream.log)")
            try cluster.addPod("client", address: Self.clientV4)
            let gateway = try cluster.addPod("ingress", address: Self.gatewayV4)
            let agent = try cluster.startAgent(in: gateway, serviceAccount: "istio-ingressgateway",
                                               environment: ["ISTIO_METAJSON_LABELS": #"{"istio": "ingressgateway"}"#],
                                               arguments: ["proxy", "router"])
            try cluster.waitReady(gateway, agent: agent, seconds: 20)

            func get(_ certificate: [String]) throws -> (status: Int32, headers: [String: Any], output: String) {
                let result = try ChildProcess.run("/usr/sbin/ip", ["netns", "exec", "\(cluster.name)-client", "curl", "-sS", "--max-time", "5",
                                                                   "--resolve", "api.myapp.com:8443:\(Self.gatewayV4)", "--cacert", ca]
                                                  + certificate + ["https://api.myapp.com:8443/headers"])
                let json = (try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any]) ?? [:]
                return (result.status, json["headers"] as? [String: Any] ?? [:], "\(result)")
            }
            // With the partner's certificate: verified, and its identity goes on in x-forwarded-client-cert.
            let partner = try get(["--cert", "\(pki)/partner.crt", "--key", "\(pki)/partner.key"])
            #expect(partner.status == 0, "\(partner.output)\n\(agent.log.suffix(3000))")
            #expect((partner.headers["x-forwarded-client-cert"] as? String)?.contains("URI=spiffe://partner.example/ns/web/sa/checkout") == true,
                    "\(partner.output)")
            // Without one: served all the same, with no client identity.
            let anonymous = try get([])
            #expect(anonymous.status == 0 && anonymous.headers["host"] as? String == "api.myapp.com:8443", "\(anonymous.output)")
            #expect(anonymous.headers["x-forwarded-client-cert"] == nil, "\(anonymous.output)")
            // Another CA's certificate: presented, so verified, and refused.
            let rogue = try get(["--cert", "\(pki)/rogue.crt", "--key", "\(pki)/partner.key"])
            #expect(rogue.status != 0 && rogue.headers.isEmpty, "\(rogue.output)")

            // The secret without its ca.crt: nothing to verify a presented certificate with, refused.
            try FileManager.default.removeItem(atPath: "\(cluster.directory)/secrets/api-mtls/ca.crt")
            let validated = try ChildProcess.run(Sandbox.capstanExecutable, ["control-plane", "--validate", "\(cluster.directory)/mesh",
                                                                             "--secrets-dir", "\(cluster.directory)/secrets"])
            #expect(validated.status == 1 && validated.standardError.contains("has no ca.crt, which tls.mode OPTIONAL_MUTUAL verifies clients with"),
                    "\(validated)")
        }
    }
}
