import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// The proxy configured over ADS: by `capstan control-plane` from Istio-style YAML, and by an xDS
/// server we did not write. The pod's outbound traffic is captured by `capstan init`; the services'
/// workloads are the peer's echo servers (v1 at 198.51.100.10, v2 at 198.51.100.99); the control plane
/// runs in the peer namespace on 192.0.2.2:15010, which the proxy (uid 1337) reaches uncaptured.
@Suite(.serialized) struct ControlPlaneTests {
    static let serviceVIP = IPAddress("198.51.100.200")!
    static let servicePort: UInt16 = 9080
    static let xdsAddress = "192.0.2.2:15010"

    static let workloads = """
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

    /// Istio's canary example, for TCP: weights between subsets v1 and v2.
    static func canary(v1: Int, v2: Int) -> String {
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

    /// The proxy's bootstrap: ADS through the static `xds-grpc` cluster, as Istio's bootstrap has it.
    static func bootstrap(server: String) -> String {
        let parts = server.split(separator: ":")
        return """
            {"node": {"id": "sidecar~192.0.2.1~client-7d9f.shop~shop.svc.cluster.local", "cluster": "client.shop",
                      "metadata": {"NAMESPACE": "shop", "INTERCEPTION_MODE": "REDIRECT"}},
             "dynamic_resources": {"lds_config": {"ads": {}, "resource_api_version": "V3"},
                                   "cds_config": {"ads": {}, "resource_api_version": "V3"},
                                   "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                                                  "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}},
             "static_resources": {"clusters": [{"name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
               "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address":
                 {"socket_address": {"address": "\(parts[0])", "port_value": \(parts[1])}}}}]}]}}]}}
            """
    }

    /// A captured pod, its proxy, a control plane serving `directory`, and the two workloads.
    final class Mesh {
        let sandbox: Sandbox
        let directory: URL
        var controlPlane: NamespacedProcess?
        var proxy: ProxyProcess?
        let workloads: EchoServer

        init(_ sandbox: Sandbox, files: [String: String]) throws {
            self.sandbox = sandbox
            directory = URL(fileURLWithPath: "/tmp/\(sandbox.name)-mesh")
            workloads = try EchoServer(in: sandbox.peer, port: 80)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            for (name, text) in files { try write(name, text) }
            try sandbox.initialize()
        }

        deinit {
            proxy?.stop()
            controlPlane?.stop()
            try? FileManager.default.removeItem(at: directory)
            try? FileManager.default.removeItem(atPath: "\(directory.path).log")
        }

        func write(_ name: String, _ text: String) throws {
            // Written whole and renamed into place, as an editor or a ConfigMap update does.
            let temporary = directory.appendingPathComponent(".\(name).tmp")
            try text.write(to: temporary, atomically: false, encoding: .utf8)
            guard rename(temporary.path, directory.appendingPathComponent(name).path) == 0 else {
                throw SandboxError("cannot rename \(temporary.path): errno \(errno)")
            }
        }

        func startControlPlane() throws {
            let process = try NamespacedProcess(capstan: ["control-plane", "--config-dir", directory.path, "--xds-address", ControlPlaneTests.xdsAddress],
                                                in: sandbox.peer, logPath: "\(directory.path).log")
            guard process.waitUntil(seconds: 10, { process.log.contains("serving ADS") }) else {
                process.stop()
                throw SandboxError("control plane did not start: \(process.log)")
            }
            controlPlane = process
        }

        func startProxy(server: String = ControlPlaneTests.xdsAddress) throws {
            let file = directory.deletingLastPathComponent().appendingPathComponent("\(sandbox.name)-bootstrap.json")
            try ControlPlaneTests.bootstrap(server: server).write(to: file, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: file) }
            proxy = try ProxyProcess(in: sandbox.pod, arguments: ["--config", file.path])
        }

        /// Which workload answered a connection to the service.
        func connect() throws -> String {
            try EchoExchange.run(to: SocketAddress(ControlPlaneTests.serviceVIP, ControlPlaneTests.servicePort),
                                 from: sandbox.pod, payload: [1, 2, 3]).serverAddress
        }

        func stat(_ name: String) throws -> String? {
            try proxy?.admin("GET", "/stats").body.split(separator: "\n").first { $0.hasPrefix("\(name): ") }
                .map { String($0.dropFirst(name.count + 2)) }
        }

        /// Waits until the proxy has accepted LDS `updates` times.
        func waitForListenerUpdates(_ updates: Int, seconds: Double = 5) -> Bool {
            proxy?.waitUntil(seconds: seconds) { (try? stat("listener_manager.lds.update_success")) == String(updates) } ?? false
        }
    }

    static let v1 = "198.51.100.10:80"
    static let v2 = "198.51.100.99:80"

    @Test func ninetyTenSplitFromTheControlPlane() throws {
        try withSandbox { sandbox in
            let mesh = try Mesh(sandbox, files: ["workloads.yaml": Self.workloads, "canary.yaml": Self.canary(v1: 90, v2: 10)])
            try mesh.startControlPlane()
            try mesh.startProxy()
            var answeredBy: [String: Int] = [:]
            for _ in 0..<1000 { answeredBy[try mesh.connect(), default: 0] += 1 }
            #expect(answeredBy[Self.v1, default: 0] + answeredBy[Self.v2, default: 0] == 1000, "\(answeredBy)")
            #expect((870...930).contains(answeredBy[Self.v1, default: 0]), "\(answeredBy)")
            let dump = try #require(mesh.proxy).admin("GET", "/config_dump").body
            #expect(dump.contains("outbound|9080|v1|payments.shop.svc.cluster.local"))
            #expect(dump.contains("\"dynamic_active_clusters\""))
            #expect(try mesh.stat("cluster_manager.cds.update_success") == "1")
            #expect(try mesh.stat("control_plane.connected_state") == "1")
        }
    }

    @Test func aChangeAppliesToNewConnectionsWhileAnOpenOneFinishesOnTheOld() throws {
        try withSandbox { sandbox in
            let mesh = try Mesh(sandbox, files: ["workloads.yaml": Self.workloads, "canary.yaml": Self.canary(v1: 100, v2: 0)])
            try mesh.startControlPlane()
            try mesh.startProxy()
            let long = try ProbeSocket.tcp(.ipv4, in: sandbox.pod, uid: 1000, gid: 1000)
            try long.connect(to: SocketAddress(Self.serviceVIP, Self.servicePort), timeoutMilliseconds: 2000)
            let expected = "peer=\(Sandbox.podV4) local=\(Self.v1)\n"
            let greeting = String(decoding: try long.receive(count: expected.utf8.count, timeoutMilliseconds: 2000), as: UTF8.self)
            #expect(greeting == expected)

            try mesh.write("canary.yaml", Self.canary(v1: 0, v2: 100))
            #expect(mesh.waitForListenerUpdates(2), "\(mesh.controlPlane?.log ?? "")")
            for _ in 0..<5 { #expect(try mesh.connect() == Self.v2) }
            // The connection opened before the change still talks to v1.
            try long.sendAll(Array("still here".utf8))
            #expect(try long.receive(count: 10, timeoutMilliseconds: 2000) == Array("still here".utf8))
            #expect(try mesh.stat("listener_manager.lds.update_rejected") == "0")
        }
    }

    @Test func anInvalidChangeIsReportedAndTheLastGoodConfigurationKeepsServing() throws {
        try withSandbox { sandbox in
            let mesh = try Mesh(sandbox, files: ["workloads.yaml": Self.workloads, "canary.yaml": Self.canary(v1: 100, v2: 0)])
            try mesh.startControlPlane()
            try mesh.startProxy()
            try mesh.write("canary.yaml", Self.canary(v1: 70, v2: 10))
            let controlPlane = try #require(mesh.controlPlane)
            let message = "canary.yaml: document 1 (line 1): VirtualService shop/payments: spec.tcp[0].route: weights add up to 80, not 100"
            #expect(controlPlane.waitUntil(seconds: 5) { controlPlane.log.contains(message) }, "\(controlPlane.log)")
            try mesh.write("broken.yaml", "kind: [unclosed\n")
            #expect(controlPlane.waitUntil(seconds: 5) { controlPlane.log.contains("broken.yaml: line 2: not valid YAML") }, "\(controlPlane.log)")
            for _ in 0..<5 { #expect(try mesh.connect() == Self.v1) }
            #expect(try mesh.stat("listener_manager.lds.update_success") == "1")
        }
    }

    @Test func theProxyKeepsServingWithoutTheControlPlaneAndResyncsWhenItReturns() throws {
        try withSandbox { sandbox in
            let mesh = try Mesh(sandbox, files: ["workloads.yaml": Self.workloads, "canary.yaml": Self.canary(v1: 100, v2: 0)])
            try mesh.startControlPlane()
            try mesh.startProxy()
            mesh.controlPlane?.stop()
            #expect(mesh.proxy?.waitUntil(seconds: 5) { (try? mesh.stat("control_plane.connected_state")) == "0" } == true)
            for _ in 0..<5 { #expect(try mesh.connect() == Self.v1) }
            // Changed while the control plane was away: the proxy gets it when the stream is back.
            try mesh.write("canary.yaml", Self.canary(v1: 0, v2: 100))
            try mesh.startControlPlane()
            #expect(mesh.proxy?.waitUntil(seconds: 10) { (try? mesh.connect()) == Self.v2 } == true)
            #expect(try mesh.stat("control_plane.connected_state") == "1")
        }
    }

    @Test func anADSServerWeDidNotWriteConfiguresTheProxyAndGetsANACKForAnUnsupportedFilter() throws {
        try withSandbox { sandbox in
            let mesh = try Mesh(sandbox, files: [:])
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers/ads_server.py").path
            let requests = "/tmp/\(sandbox.name)-ads-requests.log"
            defer { try? FileManager.default.removeItem(atPath: requests) }
            let server = try NamespacedProcess(["/usr/bin/env", "python3", script, Self.xdsAddress, requests, "198.51.100.200", "9080", "198.51.100.99", "80"],
                                               in: sandbox.peer, logPath: "/tmp/\(sandbox.name)-ads-server.log")
            defer { server.stop(); try? FileManager.default.removeItem(atPath: server.logPath) }
            #expect(server.waitUntil(seconds: 10) { server.log.contains("serving") }, "\(server.log)")
            try mesh.startProxy()
            func logged() -> [[String: Any]] {
                ((try? String(contentsOfFile: requests, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
                    try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
                }
            }
            let listenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
            // The NACK of version 2 names version 1, the one still in force, and says why.
            #expect(server.waitUntil(seconds: 10) {
                logged().contains { $0["type_url"] as? String == listenerType && ($0["error"] as? String ?? "").contains("http_connection_manager") }
            }, "\(logged())")
            let nack = try #require(logged().last { $0["type_url"] as? String == listenerType })
            #expect(nack["version_info"] as? String == "1")
            #expect(logged().first?["node"] as? String == "sidecar~192.0.2.1~client-7d9f.shop~shop.svc.cluster.local")
            for _ in 0..<3 { #expect(try mesh.connect() == Self.v2) }
            #expect(try mesh.stat("listener_manager.lds.update_rejected") == "1")
        }
    }
}
