import DataPlane
import Supervisor
import Testing

/// The bootstrap the agent writes for its proxy child is one `capstan proxy` reads whole: no field
/// ignored, none accepted without being acted on.
@Suite struct AgentBootstrapTests {
    @Test func theProxyReadsWhatTheAgentWritesWithoutWarnings() throws {
        var settings = try AgentSettings(environment: [
            "POD_NAME": "reviews-v1-7d9f", "POD_NAMESPACE": "bookinfo", "INSTANCE_IP": "10.1.2.3",
            "SERVICE_ACCOUNT": "reviews", "ISTIO_META_INTERCEPTION_MODE": "TPROXY",
            "ISTIO_METAJSON_LABELS": #"{"app": "reviews", "version": "v1"}"#,
            "PROXY_CONFIG": #"{"discoveryAddress": "istiod.istio-system.svc:15012", "concurrency": 2}"#,
        ])
        settings.socketDirectory = "/tmp/capstan-agent"
        settings.podInfoDirectory = "/nonexistent-capstan-podinfo"
        let written = ProxyBootstrap(settings: settings, metadata: NodeMetadata(settings: settings))
        let config = try BootstrapConfig.parse(written.json, format: BootstrapConfig.Format(path: ProxyBootstrap.fileName, text: written.json))
        #expect(config.warnings.isEmpty)
        #expect(config.allFieldsNotActedOn.isEmpty)
        #expect(config.adminPort == written.adminPort)
        #expect(config.dynamicResources?.server == .unixSocket(path: written.xdsSocketPath))
        #expect(config.dynamicResources?.node.id == written.nodeID)
        #expect(config.dynamicResources?.nodeOnEveryRequest == false)
        #expect(config.clusters.map(\.name) == [ProxyBootstrap.xdsClusterName, ProxyBootstrap.sdsClusterName])
        // The node's metadata reaches the proxy with its JSON types, as the proxy sends it to the control plane.
        let metadata = try #require(config.dynamicResources?.node.metadata.fields)
        #expect(metadata["LABELS"]?.structValue.fields["app"]?.stringValue == "reviews")
        #expect(metadata["ENVOY_STATUS_PORT"]?.numberValue == 15021)
        #expect(metadata["PILOT_SAN"]?.listValue.values.map(\.stringValue) == ["istiod.istio-system.svc"])
        #expect(metadata["PROXY_CONFIG"]?.structValue.fields["concurrency"]?.numberValue == 2)
        #expect(metadata["INTERCEPTION_MODE"]?.stringValue == "TPROXY")
    }
}
