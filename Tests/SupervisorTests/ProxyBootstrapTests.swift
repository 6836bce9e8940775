import Foundation
import Supervisor
import Testing

/// The bootstrap the agent writes for its proxy child: Istio's shape, within what `capstan proxy` reads.
@Suite struct ProxyBootstrapTests {
    static func settings() throws -> AgentSettings {
        var settings = try AgentSettings(environment: [
            "POD_NAME": "reviews-v1-7d9f", "POD_NAMESPACE": "bookinfo", "INSTANCE_IP": "10.1.2.3,fd00::3",
            "SERVICE_ACCOUNT": "reviews", "ISTIO_META_INTERCEPTION_MODE": "TPROXY", "ISTIO_META_NAME": "given-name",
        ])
        settings.socketDirectory = "/tmp/capstan-agent"
        return settings
    }

    func object(_ value: Any?) -> [String: Any] { value as? [String: Any] ?? [:] }
    func list(_ value: Any?) -> [Any] { value as? [Any] ?? [] }

    /// The one endpoint of a static cluster, as a pipe path.
    func pipePath(of cluster: [String: Any]) -> String? {
        let endpoints = list(object(cluster["load_assignment"])["endpoints"])
        let lbEndpoints = list(object(endpoints.first)["lb_endpoints"])
        let address = object(object(object(lbEndpoints.first)["endpoint"])["address"])
        return object(address["pipe"])["path"] as? String
    }

    @Test func theNodesLocalityComesFromThePodsLocalityLabel() throws {
        var metadata = NodeMetadata(settings: try Self.settings())
        func locality() throws -> [String: Any] {
            let root = object(try JSONSerialization.jsonObject(with: Data(ProxyBootstrap(settings: try Self.settings(), metadata: metadata).json.utf8)))
            return object(object(root["node"])["locality"])
        }
        #expect(try locality().isEmpty)
        metadata.fields["LABELS"] = .object(["app": .string("reviews"), "istio-locality": .string("us-east1.us-east1-b")])
        #expect(try locality() as? [String: String] == ["region": "us-east1", "zone": "us-east1-b", "sub_zone": ""])
        metadata.fields["LABELS"] = .object(["topology.istio.io/locality": .string("eu/west/rack1"), "istio-locality": .string("us.a")])
        #expect(try locality() as? [String: String] == ["region": "eu", "zone": "west", "sub_zone": "rack1"])
    }

    @Test func hasIstiosShape() throws {
        let bootstrap = ProxyBootstrap(settings: try Self.settings(), metadata: NodeMetadata(settings: try Self.settings()))
        let root = object(try JSONSerialization.jsonObject(with: Data(bootstrap.json.utf8)))
        #expect(Set(root.keys) == ["node", "admin", "static_resources", "dynamic_resources"])

        let node = object(root["node"])
        #expect(node["id"] as? String == "sidecar~10.1.2.3~reviews-v1-7d9f.bookinfo~bookinfo.svc.cluster.local")
        #expect(node["cluster"] as? String == "istio-proxy")
        let metadata = object(node["metadata"])
        #expect(metadata["INTERCEPTION_MODE"] as? String == "TPROXY")
        #expect(metadata["NAME"] as? String == "given-name")  // ISTIO_META_* wins over derived
        #expect(metadata["NAMESPACE"] as? String == "bookinfo")
        #expect(metadata["INSTANCE_IPS"] as? String == "10.1.2.3,fd00::3")
        #expect(metadata["SERVICE_ACCOUNT"] as? String == "reviews")
        #expect(metadata["CLUSTER_ID"] as? String == "Kubernetes")

        let admin = object(object(object(root["admin"])["address"])["socket_address"])
        #expect(admin["address"] as? String == "127.0.0.1")
        #expect(admin["port_value"] as? Int == 15000)

        let clusters = list(object(root["static_resources"])["clusters"]).map { object($0) }
        #expect(clusters.map { $0["name"] as? String } == ["xds-grpc", "sds-grpc"])
        #expect(clusters.allSatisfy { $0["type"] as? String == "STATIC" })
        #expect(clusters.map { pipePath(of: $0) } == ["/tmp/capstan-agent/XDS", "/tmp/capstan-agent/SDS"])

        let dynamic = object(root["dynamic_resources"])
        for key in ["lds_config", "cds_config"] {
            #expect(object(dynamic[key])["ads"] is [String: Any], "\(key) is ADS")
        }
        let ads = object(dynamic["ads_config"])
        #expect(ads["api_type"] as? String == "GRPC")
        let service = object(list(ads["grpc_services"]).first)
        #expect(object(service["envoy_grpc"])["cluster_name"] as? String == "xds-grpc")
    }

    @Test func writesAReadableFileAtomically() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-bootstrap-\(getpid())-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let bootstrap = ProxyBootstrap(settings: try Self.settings(), metadata: NodeMetadata(settings: try Self.settings()))
        let oldMask = umask(0o077)
        defer { umask(oldMask) }
        let path = try bootstrap.write(toDirectory: directory)
        #expect(path == directory + "/envoy-rev.json")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == bootstrap.json)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o644)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["envoy-rev.json"])
        // Written again, it is replaced.
        var changed = bootstrap
        changed.adminPort = 16000
        try changed.write(toDirectory: directory)
        #expect(try String(contentsOfFile: path, encoding: .utf8).contains("16000"))
    }

    @Test func refusesADirectoryThatIsNotThere() throws {
        let bootstrap = ProxyBootstrap(settings: try Self.settings(), metadata: NodeMetadata(settings: try Self.settings()))
        #expect(throws: ProxyBootstrapError.self) { try bootstrap.write(toDirectory: "/nonexistent-capstan-dir") }
        do {
            try bootstrap.write(toDirectory: "/nonexistent-capstan-dir")
        } catch {
            #expect(error.description == "cannot write the proxy bootstrap /nonexistent-capstan-dir/envoy-rev.json.tmp: No such file or directory")
        }
    }
}
