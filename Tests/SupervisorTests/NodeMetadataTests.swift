import Configuration
import Foundation
import Supervisor
import Testing

/// The node metadata istiod reads, checked against what a real pilot-agent sent: the bootstrap node of
/// the Istio 1.20.8 sidecar in `../shared/istio-config/` (read by path).
@Suite struct NodeMetadataTests {
    static let dump = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../../shared/istio-config/sidecar-istio1.20.8-hello-openshift.config_dump.json").standardized.path

    /// pilot-agent's node metadata from the dump (found with Foundation's JSONSerialization, which reads the
    /// 335 KB dump in milliseconds where the Codable walk takes seconds in a debug build).
    static func pilotAgentMetadata() throws -> [String: ConfigValue] {
        let root = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dump))) as? [String: Any]
        let bootstrap = ((root?["configs"] as? [Any])?.first as? [String: Any])?["bootstrap"] as? [String: Any]
        guard let metadata = (bootstrap?["node"] as? [String: Any])?["metadata"] else {
            throw DumpError(description: "no configs[0].bootstrap.node.metadata in \(dump)")
        }
        let text = String(decoding: try JSONSerialization.data(withJSONObject: metadata), as: UTF8.self)
        guard case .object(let fields) = try ConfigValue.parse(json: text) else { throw DumpError(description: "metadata is not an object") }
        return fields
    }

    struct DumpError: Error, CustomStringConvertible { var description: String }

    /// A pod like the dump's, with the downward API files the injector mounts.
    static func settings(podInfo: String) throws -> AgentSettings {
        var settings = try AgentSettings(environment: [
            "POD_NAME": "hello-openshift-5b7bcb9b6d-kggwf", "POD_NAMESPACE": "vanilla-playground", "INSTANCE_IP": "10.129.0.60",
            "SERVICE_ACCOUNT": "default", "NODE_NAME": "ip-10-0-11-171.eu-west-1.compute.internal",
            "PROXY_CONFIG": #"{"discoveryAddress": "istiod-basic.istio-system.svc:15012", "concurrency": 2, "proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true", "ISTIO_META_DNS_AUTO_ALLOCATE": "true"}}"#,
            "ISTIO_META_WORKLOAD_NAME": "hello-openshift", "ISTIO_META_APP_CONTAINERS": "hello-openshift",
            "ISTIO_META_OWNER": "kubernetes://apis/apps/v1/namespaces/vanilla-playground/deployments/hello-openshift",
            "ISTIO_META_INTERCEPTION_MODE": "REDIRECT", "ISTIO_META_MESH_ID": "cluster.local", "ISTIO_META_CLUSTER_ID": "Kubernetes",
            "ISTIO_META_POD_PORTS": #"[{"containerPort":8080,"protocol":"TCP"}]"#,
        ])
        settings.podInfoDirectory = podInfo
        return settings
    }

    func withPodInfo<T>(labels: String, annotations: String, _ body: (String) throws -> T) throws -> T {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-podinfo-\(getpid())-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try labels.write(toFile: "\(directory)/labels", atomically: false, encoding: .utf8)
        try annotations.write(toFile: "\(directory)/annotations", atomically: false, encoding: .utf8)
        return try body(directory)
    }

    static func kind(_ value: ConfigValue) -> String {
        switch value {
        case .object: "object"
        case .array: "array"
        case .string: "string"
        case .number: "number"
        case .bool: "bool"
        case .null: "null"
        }
    }

    /// Every key istiod reads that pilot-agent sent is there, with pilot-agent's JSON type.
    @Test func hasPilotAgentsKeysWithTheirJSONTypes() throws {
        let reference = try Self.pilotAgentMetadata()
        let labels = #"app="hello-openshift"\#nsecurity.istio.io/tlsMode="istio"\#nservice.istio.io/canonical-name="hello-openshift""#
        let annotations = #"sidecar.istio.io/status="{\"containers\":[\"istio-proxy\"]}"\#nprometheus.io/port="15020""#
        let metadata = try withPodInfo(labels: labels, annotations: annotations) { NodeMetadata(settings: try Self.settings(podInfo: $0)) }
        #expect(metadata.warnings.isEmpty, "\(metadata.warnings)")
        // What Envoy's build and Istio's image add (ISTIO_PROXY_SHA, ISTIO_PROXY_VERSION) has no meaning for Capstan.
        let notSent: Set<String> = ["ISTIO_PROXY_SHA", "ISTIO_PROXY_VERSION"]
        for (key, value) in reference where !notSent.contains(key) {
            let ours = try #require(metadata.fields[key], "missing \(key)")
            #expect(Self.kind(ours) == Self.kind(value), "\(key): ours \(Self.kind(ours)), pilot-agent's \(Self.kind(value))")
        }
        #expect(metadata.fields["LABELS"]?["app"] == .string("hello-openshift"))
        #expect(metadata.fields["ANNOTATIONS"]?["sidecar.istio.io/status"] == .string(#"{"containers":["istio-proxy"]}"#))
        #expect(metadata.fields["PILOT_SAN"] == .array([.string("istiod-basic.istio-system.svc")]))
        #expect(metadata.fields["ENVOY_STATUS_PORT"] == reference["ENVOY_STATUS_PORT"])
        #expect(metadata.fields["ENVOY_PROMETHEUS_PORT"] == reference["ENVOY_PROMETHEUS_PORT"])
        #expect(metadata.fields["DNS_CAPTURE"] == .string("true"))
        #expect(metadata.fields["ISTIO_VERSION"] == reference["ISTIO_VERSION"])
        #expect(metadata.fields["PROXY_CONFIG"]?["concurrency"] == .number(2))
    }

    @Test func metaJSONVariablesWinAndBadJSONIsRefusedByName() throws {
        let settings = try AgentSettings(environment: [
            "POD_NAME": "a", "POD_NAMESPACE": "b", "INSTANCE_IP": "10.0.0.1", "ISTIO_META_LABELS": "plain",
            "ISTIO_METAJSON_LABELS": #"{"app": "x"}"#,
        ])
        #expect(NodeMetadata(settings: settings).fields["LABELS"] == .object(["app": .string("x")]))
        let error = #expect(throws: AgentSettingsError.self) {
            try AgentSettings(environment: ["POD_NAME": "a", "POD_NAMESPACE": "b", "INSTANCE_IP": "10.0.0.1",
                                            "ISTIO_METAJSON_LABELS": "{not json"])
        }
        #expect(error?.variable == "ISTIO_METAJSON_LABELS")
    }

    /// An unreadable labels file is said, and the rest is sent: the pod still starts.
    @Test func anUnreadableLabelsFileIsAWarning() throws {
        let metadata = try withPodInfo(labels: "app=unquoted", annotations: "") { NodeMetadata(settings: try Self.settings(podInfo: $0)) }
        #expect(metadata.fields["LABELS"] == nil)
        #expect(metadata.warnings.count == 1 && metadata.warnings[0].contains("labels:1"), "\(metadata.warnings)")
        #expect(metadata.fields["NAME"] == .string("hello-openshift-5b7bcb9b6d-kggwf"))
    }
}
