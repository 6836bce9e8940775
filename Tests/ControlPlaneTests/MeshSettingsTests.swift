@testable import ControlPlane
import Testing

/// Istio's mesh config, read from the `istio` ConfigMap as `kubectl get configmap istio -o yaml` prints
/// it: what is acted on, what is said to be ignored, and the refusals, each naming its field.
@Suite struct MeshSettingsTests {
    static func configMap(_ mesh: String, name: String = "istio") -> String {
        """
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: \(name), namespace: istio-system}
        data:
          mesh: |-
        \(mesh.split(separator: "\n", omittingEmptySubsequences: false).map { "    " + $0 }.joined(separator: "\n"))
        """
    }

    func read(_ documents: [String]) -> MeshConfigReading {
        MeshConfigReader.read([("istio.yaml", documents.joined(separator: "\n---\n"))])
    }

    @Test func defaultsWithoutAConfigMap() throws {
        let config = try #require(read([]).config)
        #expect(config.mesh == MeshSettings())
        #expect(config.mesh.outboundTrafficPolicy == .allowAny)
    }

    @Test func outboundPolicyAndProvidersAreRead() throws {
        let reading = read([Self.configMap("""
            outboundTrafficPolicy: {mode: REGISTRY_ONLY}
            accessLogFile: /dev/stdout
            enableFancyThings: true
            extensionProviders:
            - name: authz
              envoyExtAuthzGrpc:
                service: shop/ext-authz.shop.svc.cluster.local
                port: 9191
                timeout: 0.5s
                failOpen: true
                statusOnError: "503"
                includeRequestBodyInCheck: {maxRequestBytes: 4096, packAsBytes: true}
            """)])
        let mesh = try #require(reading.config, "\(reading.problems)").mesh
        #expect(mesh.outboundTrafficPolicy == .registryOnly)
        let provider = try #require(mesh.extensionProvider(named: "authz")).externalAuthorization
        #expect(provider.service == "ext-authz.shop.svc.cluster.local")
        #expect(provider.port == 9191 && provider.timeout == .milliseconds(500) && provider.failOpen && provider.statusOnError == 503)
        #expect(provider.requestBody == .init(maxRequestBytes: 4096, allowPartialMessage: false, packAsBytes: true))
        #expect(mesh.accessLogFile == "/dev/stdout" && mesh.accessLogFormat == nil)
        #expect(reading.warnings.contains { $0.contains("data.mesh.accessLogFile: acted on for HTTP connection managers") }, "\(reading.warnings)")
        #expect(reading.warnings.contains { $0.contains("data.mesh.enableFancyThings: not a mesh config field Capstan knows") }, "\(reading.warnings)")
    }

    @Test func otherConfigMapsAreNotTheMeshConfig() throws {
        let reading = read([Self.configMap("outboundTrafficPolicy: {mode: REGISTRY_ONLY}", name: "istio-canary")])
        #expect(try #require(reading.config).mesh.outboundTrafficPolicy == .allowAny)
        #expect(reading.warnings.contains { $0.contains("only the \"istio\" ConfigMap (the mesh config) is read") })
    }

    @Test(arguments: [
        ("outboundTrafficPolicy: {mode: SOMETIMES}", "data.mesh.outboundTrafficPolicy.mode: \"SOMETIMES\" is not ALLOW_ANY or REGISTRY_ONLY"),
        ("outboundTrafficPolicy: {egressProxy: {host: egress}}", "data.mesh.outboundTrafficPolicy.egressProxy: is not supported"),
        ("rootNamespace: mesh-root", "data.mesh.rootNamespace: \"mesh-root\" is not supported"),
        ("extensionProviders: [{name: a, envoyExtAuthzHttp: {service: a.example.com, port: 80}}]",
         "data.mesh.extensionProviders[0].envoyExtAuthzHttp: is not supported: Capstan's proxy calls external authorizers over gRPC only"),
        ("extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: a.example.com, port: 0}}]",
         "data.mesh.extensionProviders[0].envoyExtAuthzGrpc.port: 0 is out of range"),
        ("extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: a.example.com, port: 80, statusOnError: teapot}}]",
         "data.mesh.extensionProviders[0].envoyExtAuthzGrpc.statusOnError: \"teapot\" is not an HTTP status code"),
        ("extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: a.example.com, port: 80, includeRequestBodyInCheck: {}}}]",
         "data.mesh.extensionProviders[0].envoyExtAuthzGrpc.includeRequestBodyInCheck.maxRequestBytes: is required"),
        ("extensionProviders: [{name: a, zipkin: {service: z, port: 9411}}]", "data.mesh.extensionProviders[0].zipkin: zipkin providers are not supported"),
        ("extensionProviders: [{name: a}]", "data.mesh.extensionProviders[0]: needs exactly one provider kind"),
        ("extensionProviders: [{name: a, envoyExtAuthzGrpc: {service: a.example.com, port: 80}}, {name: a, envoyExtAuthzGrpc: {service: b.example.com, port: 80}}]",
         "data.mesh.extensionProviders[1].name: \"a\" names two extension providers"),
        ("outboundTrafficPolicy: [", "data.mesh: not valid YAML"),
    ])
    func refusalsNameTheField(mesh: String, message: String) {
        let reading = read([Self.configMap(mesh)])
        #expect(reading.config == nil, "nothing is half-applied")
        let problem = reading.problems.first?.description ?? ""
        #expect(problem.contains("ConfigMap istio-system/istio: \(message)"), "\(problem)")
    }

    @Test func twoMeshConfigsAreRefused() {
        let reading = read([Self.configMap("{}"), Self.configMap("{}").replacingOccurrences(of: "namespace: istio-system", with: "namespace: other")])
        #expect(reading.config == nil)
        #expect(reading.problems.first?.description.contains("a second mesh config: the first is istio.yaml: document 1") == true, "\(reading.problems)")
    }
}
