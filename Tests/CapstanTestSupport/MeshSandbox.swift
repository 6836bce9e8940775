import Foundation
import Netfilter

/// Istio-style documents for a `payments` service in namespace `shop`, with workloads v1 and v2 on
/// the sandbox peer's addresses, and a bootstrap that points a proxy at a control plane over ADS.
public enum MeshDocuments {
    public static let workloads = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata:
          name: payments
          namespace: shop
        spec:
          hosts:
          - payments.shop.svc.cluster.local
          addresses:
          - 198.51.100.200
          ports:
          - number: 9080
            name: tcp-payments
            protocol: TCP
          resolution: STATIC
          workloadSelector:
            labels:
              app: payments
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata:
          name: payments-v1
          namespace: shop
        spec:
          address: 198.51.100.10
          labels:
            app: payments
            version: v1
          ports:
            tcp-payments: 80
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata:
          name: payments-v2
          namespace: shop
        spec:
          address: 198.51.100.99
          labels:
            app: payments
            version: v2
          ports:
            tcp-payments: 80
        ---
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: payments
          namespace: shop
        spec:
          host: payments
          subsets:
          - name: v1
            labels:
              version: v1
          - name: v2
            labels:
              version: v2
        """

    /// ``workloads`` over HTTP: port 9080 named `http-payments` (Istio's protocol by port name), the
    /// workloads' HTTP servers on 8080 (the peer's echo servers keep 80).
    public static let httpWorkloads = workloads
        .replacingOccurrences(of: "    name: tcp-payments\n    protocol: TCP\n", with: "    name: http-payments\n")
        .replacingOccurrences(of: "    tcp-payments: 80\n", with: "    http-payments: 8080\n")
        .replacingOccurrences(of: "    tcp-payments: 80", with: "    http-payments: 8080")

    /// A VirtualService for payments with `http` routes (YAML list items, indented as under `http:`).
    public static func httpVirtualService(_ routes: String) -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: payments
          namespace: shop
        spec:
          hosts:
          - payments
          http:
        \(routes)
        """
    }

    /// Istio's canary example over HTTP: each request goes to v1 or v2 by weight.
    public static func httpCanary(v1: Int, v2: Int) -> String {
        httpVirtualService("""
          - route:
            - destination:
                host: payments
                subset: v1
              weight: \(v1)
            - destination:
                host: payments
                subset: v2
              weight: \(v2)
        """)
    }

    /// Istio's canary example, for TCP: weights between subsets v1 and v2.
    public static func canary(v1: Int, v2: Int) -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata:
          name: payments
          namespace: shop
        spec:
          hosts:
          - payments
          tcp:
          - match:
            - port: 9080
            route:
            - destination:
                host: payments
                subset: v1
              weight: \(v1)
            - destination:
                host: payments
                subset: v2
              weight: \(v2)
        """
    }

    /// ``workloads`` with both WorkloadEntries marked as running a sidecar (Istio's endpoint label
    /// `security.istio.io/tlsMode: istio`) under service account `payments`, so a client's sidecar
    /// sends them mutual TLS by Istio's auto mTLS; `destinationTLS` (`ISTIO_MUTUAL`, `DISABLE`) sets
    /// the DestinationRule's `trafficPolicy.tls.mode`.
    public static func sidecarWorkloads(destinationTLS: String? = nil) -> String {
        var text = workloads
        for version in ["v1", "v2"] {
            text = text.replacingOccurrences(of: "    version: \(version)\n  ports:", with: """
                    version: \(version)
                    security.istio.io/tlsMode: istio
                  serviceAccount: payments
                  ports:
                """)
        }
        if let destinationTLS {
            text = text.replacingOccurrences(of: "  host: payments\n  subsets:", with: """
                  host: payments
                  trafficPolicy:
                    tls:
                      mode: \(destinationTLS)
                  subsets:
                """)
        }
        return text
    }

    /// A PeerAuthentication with `spec.mtls.mode` (`STRICT`, `PERMISSIVE`, `DISABLE`, `UNSET`):
    /// mesh-wide as given (root namespace `istio-system`, no selector), else for `namespace`, or for
    /// the workloads there whose labels include `matchLabels`.
    public static func peerAuthentication(mode: String, name: String = "default", namespace: String = "istio-system",
                                          matchLabels: [String: String] = [:]) -> String {
        let selector = matchLabels.isEmpty ? "" : "  selector:\n    matchLabels:\n"
            + matchLabels.sorted { $0.key < $1.key }.map { "      \($0.key): \($0.value)\n" }.joined()
        return """
            apiVersion: security.istio.io/v1
            kind: PeerAuthentication
            metadata:
              name: \(name)
              namespace: \(namespace)
            spec:
            \(selector)  mtls:
                mode: \(mode)
            """
    }

    /// The proxy's bootstrap: ADS through the static `xds-grpc` cluster, as Istio's bootstrap has it.
    /// `locality`: the node's `region/zone/subzone` (none when nil); `namespace`: the pod's, in the node id.
    public static func bootstrap(server: String, locality: String? = nil, namespace: String = "shop") -> String {
        let parts = server.split(separator: ":")
        let place = locality.map { $0.split(separator: "/", omittingEmptySubsequences: false).map(String.init) + ["", "", ""] }
        let node = place.map { #", "locality": {"region": "\#($0[0])", "zone": "\#($0[1])", "sub_zone": "\#($0[2])"}"# } ?? ""
        return """
            {"node": {"id": "sidecar~192.0.2.1~client-7d9f.\(namespace)~\(namespace).svc.cluster.local", "cluster": "client.\(namespace)",
                      "metadata": {"NAMESPACE": "\(namespace)", "INTERCEPTION_MODE": "REDIRECT"}\(node)},
             "dynamic_resources": {"lds_config": {"ads": {}, "resource_api_version": "V3"},
                                   "cds_config": {"ads": {}, "resource_api_version": "V3"},
                                   "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                                                  "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}},
             "static_resources": {"clusters": [{"name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
               "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
                 {"socket_address": {"address": "\(parts[0])", "port_value": \(parts[1])}}}}]}]}}]}}
            """
    }
}

/// A captured pod, its proxy, a control plane serving `directory` from the peer namespace on
/// 192.0.2.2:15010 (which the proxy, as uid 1337, reaches uncaptured), and the two workloads: the
/// peer's echo servers, v1 at 198.51.100.10 and v2 at 198.51.100.99.
public final class MeshSandbox: @unchecked Sendable {
    public static let serviceVIP = IPAddress("198.51.100.200")!
    public static let servicePort: UInt16 = 9080
    public static let xdsAddress = "192.0.2.2:15010"
    public static let v1 = "198.51.100.10:80"
    public static let v2 = "198.51.100.99:80"

    public let sandbox: Sandbox
    public let directory: URL
    public var controlPlane: NamespacedProcess?
    public var proxy: ProxyProcess?
    public let workloads: EchoServer

    /// The proxy here runs without an agent, so it has no certificates: unless `files` says otherwise,
    /// the mesh is plaintext (a mesh-wide PeerAuthentication DISABLE); mTLS is tested with ``MeshCluster``.
    public init(_ sandbox: Sandbox, files: [String: String]) throws {
        self.sandbox = sandbox
        directory = URL(fileURLWithPath: "/tmp/\(sandbox.name)-mesh")
        workloads = try EchoServer(in: sandbox.peer, port: 80)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var files = files
        if !files.values.contains(where: { $0.contains("kind: PeerAuthentication") }) {
            files["plaintext-mesh.yaml"] = MeshDocuments.peerAuthentication(mode: "DISABLE")
        }
        for (name, text) in files { try write(name, text) }
        try sandbox.initialize()
    }

    deinit {
        proxy?.stop()
        controlPlane?.stop()
        try? FileManager.default.removeItem(at: directory)
        try? FileManager.default.removeItem(atPath: "\(directory.path).log")
    }

    public func write(_ name: String, _ text: String) throws {
        // Written whole and renamed into place, as an editor or a ConfigMap update does.
        let temporary = directory.appendingPathComponent(".\(name).tmp")
        try text.write(to: temporary, atomically: false, encoding: .utf8)
        guard rename(temporary.path, directory.appendingPathComponent(name).path) == 0 else {
            throw SandboxError("cannot rename \(temporary.path): errno \(errno)")
        }
    }

    public func startControlPlane() throws {
        let process = try NamespacedProcess(capstan: ["control-plane", "--config-dir", directory.path, "--xds-address", MeshSandbox.xdsAddress],
                                            in: sandbox.peer, logPath: "\(directory.path).log")
        guard process.waitUntil(seconds: 10, { process.log.contains("serving ADS") }) else {
            process.stop()
            throw SandboxError("control plane did not start: \(process.log)")
        }
        controlPlane = process
    }

    /// The pod's proxy, bootstrapped to `server`, with `arguments` besides its bootstrap (`--concurrency 1`).
    /// `locality`: the proxy node's `region/zone/subzone`, as a bootstrap gives it (none when nil);
    /// `namespace`: the pod's namespace in the node id (what `exportTo` is decided by).
    public func startProxy(server: String = MeshSandbox.xdsAddress, arguments: [String] = [], locality: String? = nil,
                           namespace: String = "shop") throws {
        let file = directory.deletingLastPathComponent().appendingPathComponent("\(sandbox.name)-bootstrap.json")
        try MeshDocuments.bootstrap(server: server, locality: locality, namespace: namespace).write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        proxy = try ProxyProcess(in: sandbox.pod, arguments: ["--config", file.path] + arguments)
    }

    /// Which workload answered a connection to the service.
    public func connect() throws -> String {
        try EchoExchange.run(to: SocketAddress(MeshSandbox.serviceVIP, MeshSandbox.servicePort),
                             from: sandbox.pod, payload: [1, 2, 3]).serverAddress
    }

    public func stat(_ name: String) throws -> String? {
        try proxy?.admin("GET", "/stats").body.split(separator: "\n").first { $0.hasPrefix("\(name): ") }
            .map { String($0.dropFirst(name.count + 2)) }
    }

    /// Waits until the proxy has accepted LDS `updates` times.
    public func waitForListenerUpdates(_ updates: Int, seconds: Double = 5) -> Bool {
        proxy?.waitUntil(seconds: seconds) { (try? stat("listener_manager.lds.update_success")) == String(updates) } ?? false
    }
}
