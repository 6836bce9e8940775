import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// Istio's east-west gateway (the multi-network install's `cross-network-gateway`: AUTO_PASSTHROUGH on
/// 15443 for `*.local`) end to end: `capstan agent proxy router` as the gateway, payments behind it with
/// a captured sidecar under STRICT mutual TLS, and a client speaking as a sidecar on another network
/// does to that network's gateway: mutual TLS with the client workload's certificate (issued by the
/// mesh CA to its agent, `OUTPUT_CERTS`), the SNI `outbound_.8080_._.payments.shop.svc.cluster.local`
/// and Istio's ALPN, from a pod of its own (no capture). The
/// gateway relays the bytes by that name without terminating them: the certificate the client sees is
/// payments', and payments' sidecar verifies the client's. With `meshNetworks`, a real client sidecar on
/// the other network is sent the gateway by split horizon EDS and does the same on its own.
@Suite(.serialized) struct EastWestGatewayTests {
    static let peers = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers")
    static let gatewayV4 = IPAddress("192.0.2.10")!
    static let paymentsV4 = IPAddress("192.0.2.20")!
    static let clientV4 = IPAddress("192.0.2.30")!
    static let remoteV4 = IPAddress("192.0.2.40")!
    static let host = "payments.shop.svc.cluster.local"
    static let sni = "outbound_.8080_._.\(host)"

    static let documents = """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: cross-network-gateway, namespace: shop}
        spec:
          selector:
            istio: eastwestgateway
          servers:
          - port:
              number: 15443
              name: tls
              protocol: TLS
            tls:
              mode: AUTO_PASSTHROUGH
            hosts:
            - "*.local"
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: payments, namespace: shop}
        spec:
          hosts: [\(host)]
          ports: [{number: 8080, name: tcp-payments, protocol: TCP}]
          resolution: STATIC
          endpoints:
          - address: \(paymentsV4)
            labels: {app: payments, security.istio.io/tlsMode: istio}
            serviceAccount: payments
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: client, namespace: shop}
        spec:
          hosts: [client.shop.svc.cluster.local]
          ports: [{number: 80, name: http, protocol: HTTP}]
          resolution: STATIC
          endpoints:
          - address: \(clientV4)
            labels: {app: client, security.istio.io/tlsMode: istio}
            serviceAccount: client
        """

    /// The client's TLS connection to the gateway, from the remote pod, with the client workload's
    /// certificate and key.
    static func connect(_ cluster: MeshCluster, sni: String = sni, certificate: Bool = true, alpn: String = "istio-peer-exchange,istio",
                        payload: String) throws -> (status: Int32, json: [String: Any], output: String) {
        let certs = "\(cluster.directory)/sleep/certs"
        var arguments = ["netns", "exec", "\(cluster.name)-remote", "python3", peers.appendingPathComponent("mesh_tls_client.py").path, "--connect", "\(gatewayV4):15443",
                         "--sni", sni, "--ca", "\(cluster.directory)/root-cert.pem", "--alpn", alpn, "--send", payload]
        if certificate { arguments += ["--cert", "\(certs)/cert-chain.pem", "--key", "\(certs)/key.pem"] }
        let result = try ChildProcess.run("/usr/sbin/ip", arguments)
        let json = (try? JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any]) ?? [:]
        return (result.status, json, "\(result)")
    }

    /// The filter chains of the listener named `listener` in a proxy's /config_dump.
    static func chains(in dump: String, listener: String) throws -> [[String: Any]] {
        let json = try JSONSerialization.jsonObject(with: Data(dump.utf8)) as? [String: Any]
        let configs = json?["configs"] as? [[String: Any]] ?? []
        let listeners = configs.first { ($0["@type"] as? String)?.hasSuffix("ListenersConfigDump") == true }
        // From xDS (active) or from a bootstrap (static).
        let dynamic = (listeners?["dynamic_listeners"] as? [[String: Any]] ?? []).compactMap { ($0["active_state"] as? [String: Any])?["listener"] }
        let all = dynamic + (listeners?["static_listeners"] as? [[String: Any]] ?? []).compactMap { $0["listener"] }
        let found = all.compactMap { $0 as? [String: Any] }.first { $0["name"] as? String == listener }
        return found?["filter_chains"] as? [[String: Any]] ?? []
    }

    /// The first line of `pod`'s proxy's /stats named `name`, its value.
    static func stat(_ pod: MeshCluster.Pod, _ name: String) throws -> Int? {
        try pod.http("GET", "/stats", port: 15000).body.split(separator: "\n").first { $0.hasPrefix("\(name): ") }
            .flatMap { Int($0.dropFirst(name.count + 2)) }
    }

    /// The control plane, payments (captured, STRICT), the client workload (for its certificate), the
    /// remote pod its TLS client runs in, and the gateway's pod (nothing started in it yet).
    static func withNetwork<T>(_ body: (MeshCluster, _ payments: MeshCluster.Pod, _ gateway: MeshCluster.Pod) throws -> T) throws -> T {
        try withMeshCluster { cluster in
            try cluster.startControlPlane(files: ["gateway.yaml": Self.documents, "mtls.yaml": MeshDocuments.peerAuthentication(mode: "STRICT")])
            let payments = try cluster.addWorkload("payments", address: Self.paymentsV4, serviceAccount: "payments", appPort: 8080)
            try cluster.addWorkload("sleep", address: Self.clientV4, serviceAccount: "client", appPort: nil)
            try cluster.addPod("remote", address: Self.remoteV4)
            return try body(cluster, payments, try cluster.addPod("eastwest", address: Self.gatewayV4))
        }
    }

    @Test func aSidecarsMutualTLSReachesAnotherNetworksWorkloadThroughTheGatewayUnterminated() throws {
        try Self.withNetwork { cluster, payments, gateway in
            let agent = try cluster.startAgent(in: gateway, serviceAccount: "istio-ingressgateway",
                                               environment: ["ISTIO_METAJSON_LABELS": #"{"istio": "eastwestgateway"}"#],
                                               arguments: ["proxy", "router"])
            try cluster.waitReady(gateway, agent: agent, seconds: 20)

            // istiod's chain for the cluster's SNI, with no TLS context, to its SNI-DNAT cluster, with no TLS either.
            let dump = try gateway.http("GET", "/config_dump", port: 15000).body
            let chain = try #require(Self.chains(in: dump, listener: "0.0.0.0_15443").first { $0["server_names"] as? [String] == [Self.sni] },
                                     "\(dump.prefix(4000))")
            #expect(chain["clusters"] as? [String] == [Self.sni] && chain["transport_socket"] == nil, "\(chain)")
            #expect(chain["application_protocols"] as? [String] == ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"])
            let clusters = try gateway.http("GET", "/config_dump", port: 15000).body.replacingOccurrences(of: " ", with: "")
            #expect(clusters.contains("\"name\":\"\(Self.sni)\""))

            // Through the gateway: the certificate is payments' own, the bytes reach its application via its sidecar.
            let reached = try Self.connect(cluster, payload: "through the east-west gateway")
            #expect(reached.status == 0, "\(reached.output)\ngateway: \(agent.log.suffix(3000))")
            #expect(reached.json["peer_uris"] as? [String] == ["spiffe://cluster.local/ns/shop/sa/payments"], "\(reached.output)")
            let received = reached.json["received"] as? String ?? ""
            // The echo server sees payments' sidecar (inbound passthrough from 127.0.0.6), then the payload back.
            #expect(received.hasPrefix("peer=127.0.0.6") && received.contains("through the east-west gateway"), "\(reached.output)")
            #expect(try Self.stat(gateway, "cluster.\(Self.sni).upstream_cx_total") ?? 0 >= 1)
            // Payments' sidecar terminated it and knows the client by its workload identity.
            let metrics = try payments.http("GET", "/stats/prometheus", port: 15020).body
            #expect(metrics.split(separator: "\n").contains { $0.hasPrefix("istio_tcp_connections_opened_total")
                && $0.contains("source_principal=\"spiffe://cluster.local/ns/shop/sa/client\"") && $0.contains("reporter=\"destination\"") },
                    "\(metrics.split(separator: "\n").filter { $0.contains("istio_tcp") })")

            // No client certificate: the gateway still relays, and payments' sidecar (STRICT) refuses the handshake.
            let anonymous = try Self.connect(cluster, certificate: false, payload: "anonymous")
            #expect(anonymous.status != 0 || !(anonymous.json["received"] as? String ?? "").contains("anonymous"), "\(anonymous.output)")
            // A cluster the gateway does not expose, and a client that is not Istio's mutual TLS (no istio ALPN):
            // no chain, closed before any byte leaves the gateway (counted as no_filter_chain_match).
            let before = try Self.stat(gateway, "listener.0.0.0.0_15443.no_filter_chain_match") ?? 0
            let unknown = try Self.connect(cluster, sni: "outbound_.8080_._.reviews.shop.svc.cluster.local", payload: "reviews")
            #expect(unknown.status != 0, "\(unknown.output)")
            let browser = try Self.connect(cluster, alpn: "h2,http/1.1", payload: "browser")
            #expect(browser.status != 0, "\(browser.output)")
            #expect(try Self.stat(gateway, "listener.0.0.0.0_15443.no_filter_chain_match") ?? 0 >= before + 2)
        }
    }

    /// The same mesh split in two networks (Istio's multi-primary, multi-network install): payments and the
    /// gateway on network-b, the client on network-a, and `meshNetworks` naming the gateway of network-b.
    /// Payments gets a VIP, so that the client's application connects to it as it would to a service.
    static let serviceVIP = IPAddress("198.51.100.200")!
    static var networkDocuments: String {
        documents
            .replacingOccurrences(of: "hosts: [\(host)]\n", with: "hosts: [\(host)]\n  addresses: [\(serviceVIP)]\n")
            .replacingOccurrences(of: "serviceAccount: payments\n", with: "serviceAccount: payments\n    network: network-b\n")
            .replacingOccurrences(of: "serviceAccount: client", with: "serviceAccount: client\n    network: network-a")
            + """

            ---
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: istio, namespace: istio-system}
            data:
              mesh: |-
                {}
              meshNetworks: |-
                networks:
                  network-b:
                    gateways: [{address: \(gatewayV4), port: 15443}]
            """
    }

    /// Split horizon EDS end to end: the client's own sidecar (captured, on network-a) gets the gateway's
    /// address for payments instead of payments' own, and its mutual TLS, with the SNI
    /// `outbound_.8080_._.payments…`, goes through the gateway unterminated to payments' sidecar, which
    /// knows the client by its workload identity.
    @Test func aClientSidecarOnAnotherNetworkIsSentTheGatewayAndReachesPaymentsThroughIt() throws {
        try withMeshCluster { cluster in
            try cluster.startControlPlane(files: ["gateway.yaml": Self.networkDocuments, "mtls.yaml": MeshDocuments.peerAuthentication(mode: "STRICT")])
            let payments = try cluster.addWorkload("payments", address: Self.paymentsV4, serviceAccount: "payments", appPort: 8080,
                                                   environment: ["ISTIO_META_NETWORK": "network-b"])
            let gateway = try cluster.addPod("eastwest", address: Self.gatewayV4)
            let agent = try cluster.startAgent(in: gateway, serviceAccount: "istio-ingressgateway",
                                               environment: ["ISTIO_METAJSON_LABELS": #"{"istio": "eastwestgateway"}"#, "ISTIO_META_NETWORK": "network-b"],
                                               arguments: ["proxy", "router"])
            try cluster.waitReady(gateway, agent: agent, seconds: 20)
            let client = try cluster.addWorkload("sleep", address: Self.clientV4, serviceAccount: "client", appPort: nil,
                                                 environment: ["ISTIO_META_NETWORK": "network-a"])

            // The client's EDS: the gateway (weight 1, the one endpoint behind it), not payments' own address.
            let cluster8080 = "outbound|8080||\(Self.host)"
            let hosts = try client.http("GET", "/clusters", port: 15000).body.split(separator: "\n").filter { $0.hasPrefix("\(cluster8080)::") }
            #expect(hosts.contains { $0 == "\(cluster8080)::\(Self.gatewayV4):15443::weight::1" }, "\(hosts)")
            #expect(!hosts.contains { $0.contains("::\(Self.paymentsV4):") }, "\(hosts)")
            // Payments' own sidecar, on network-b, is sent payments directly.
            let own = try payments.http("GET", "/clusters", port: 15000).body
            #expect(own.contains("\(cluster8080)::\(Self.paymentsV4):8080::weight::1"), "\(own.split(separator: "\n").filter { $0.hasPrefix(cluster8080) })")

            // The application's connection to the VIP: captured, mutual TLS through the gateway, echoed by payments.
            let exchange = try EchoExchange.run(to: SocketAddress(Self.serviceVIP, 8080), from: client.namespace, payload: EchoExchange.payload(2000))
            #expect(exchange.intact, "\(exchange)\ngateway: \(agent.log.suffix(3000))")
            #expect(exchange.serverAddress.hasPrefix("\(Self.paymentsV4)"), "\(exchange.serverAddress)")
            #expect(try Self.stat(gateway, "cluster.\(Self.sni).upstream_cx_total") ?? 0 >= 1)
            #expect(try Self.stat(client, "cluster.\(cluster8080).upstream_cx_total") ?? 0 >= 1)
            // Payments' sidecar terminated the client's mutual TLS (STRICT) and knows it by its identity.
            let metrics = try payments.http("GET", "/stats/prometheus", port: 15020).body
            #expect(metrics.split(separator: "\n").contains { $0.hasPrefix("istio_tcp_connections_opened_total")
                && $0.contains("source_principal=\"spiffe://cluster.local/ns/shop/sa/client\"") && $0.contains("reporter=\"destination\"") },
                    "\(metrics.split(separator: "\n").filter { $0.contains("istio_tcp") })")
        }
    }

    /// istiod before 1.19 (`PILOT_ENABLE_LEGACY_AUTO_PASSTHROUGH`) gave the server one chain for its hosts
    /// with `envoy.filters.network.sni_cluster` (by name, no configuration) before a `tcp_proxy` to
    /// `BlackHoleCluster`: here from a bootstrap to `capstan proxy`. The SNI names the cluster; a name no
    /// cluster has is closed, counted in `downstream_cx_no_cluster`.
    static let legacyBootstrap = """
        node: {id: "router~\(gatewayV4)~eastwest-7d9f.shop~shop.svc.cluster.local"}
        static_resources:
          listeners:
          - name: 0.0.0.0_15443
            address: {socket_address: {address: 0.0.0.0, port_value: 15443}}
            listener_filters:
            - name: envoy.filters.listener.tls_inspector
              typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
            filter_chains:
            - filter_chain_match: {server_names: ["*.local"]}
              filters:
              - name: envoy.filters.network.sni_cluster
              - name: envoy.filters.network.tcp_proxy
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                  stat_prefix: BlackHoleCluster
                  cluster: BlackHoleCluster
          clusters:
          - {name: BlackHoleCluster, type: STATIC, connect_timeout: 1s}
          - name: \(sni)
            type: STATIC
            connect_timeout: 1s
            load_assignment:
              cluster_name: \(sni)
              endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: \(paymentsV4), port_value: 8080}}}}]}]
        """

    @Test func theOlderSNIClusterFormRoutesByTheNameItselfAndClosesAnUnknownOne() throws {
        try Self.withNetwork { cluster, _, gateway in
            let file = try cluster.write("eastwest/bootstrap.yaml", Self.legacyBootstrap)
            let proxy = try ProxyProcess(in: gateway.namespace, arguments: ["--config", file], logPath: "\(cluster.directory)/eastwest-proxy.log")
            defer { proxy.stop() }
            let dump = try gateway.http("GET", "/config_dump", port: 15000).body
            let chain = try #require(Self.chains(in: dump, listener: "0.0.0.0_15443").first, "\(dump.prefix(3000))")
            #expect(chain["sni_cluster"] as? Bool == true && chain["server_names"] as? [String] == ["*.local"], "\(chain)")

            let reached = try Self.connect(cluster, payload: "by the name itself")
            #expect(reached.status == 0, "\(reached.output)")
            #expect(reached.json["peer_uris"] as? [String] == ["spiffe://cluster.local/ns/shop/sa/payments"], "\(reached.output)")
            #expect((reached.json["received"] as? String ?? "").contains("by the name itself"), "\(reached.output)")
            #expect(try Self.stat(gateway, "cluster.\(Self.sni).upstream_cx_total") == 1)
            // A name under *.local that no cluster has: the chain matches, sni_cluster names nothing, closed and counted.
            let unknown = try Self.connect(cluster, sni: "outbound_.8080_._.reviews.shop.svc.cluster.local", payload: "reviews")
            #expect(unknown.status != 0, "\(unknown.output)")
            #expect(try Self.stat(gateway, "listener.0.0.0.0_15443.downstream_cx_no_cluster") == 1)
            #expect(try Self.stat(gateway, "listener.0.0.0.0_15443.no_filter_chain_match") == 0)
        }
    }
}
