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
        ])
        settings.socketDirectory = "/tmp/capstan-agent"
        let written = ProxyBootstrap(settings: settings)
        let config = try BootstrapConfig.parse(written.json, format: BootstrapConfig.Format(path: ProxyBootstrap.fileName, text: written.json))
        #expect(config.warnings.isEmpty)
        #expect(config.allFieldsNotActedOn.isEmpty)
        #expect(config.adminPort == written.adminPort)
        #expect(config.dynamicResources?.server == .unixSocket(path: written.xdsSocketPath))
        #expect(config.dynamicResources?.node.id == written.nodeID)
        #expect(config.dynamicResources?.nodeOnEveryRequest == false)
        #expect(config.clusters.map(\.name) == [ProxyBootstrap.xdsClusterName, ProxyBootstrap.sdsClusterName])
    }
}
