@testable import ControlPlane
import FoundationEssentials
import Glibc
import Testing

/// Istio-style documents for mutual TLS: the payments service of ``Documents`` with workloads that run
/// a sidecar, PeerAuthentications and a DestinationRule with `tls` settings.
enum MutualTLSDocuments {
    /// A WorkloadEntry; `sidecar` adds Istio's `security.istio.io/tlsMode: istio` label.
    static func workload(_ name: String, _ address: String, _ version: String, serviceAccount: String? = nil,
                         sidecar: Bool = true) -> String {
        let labels = "app: payments, version: \(version)" + (sidecar ? ", security.istio.io/tlsMode: istio" : "")
        return """
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: \(name), namespace: shop}
            spec: {address: \(address), labels: {\(labels)}, ports: {tcp-payments: 8080}\(serviceAccount.map { ", serviceAccount: \($0)" } ?? "")}
            """
    }

    /// The payments DestinationRule with subsets v1 and v2; `tls` and `v2TLS` set `tls.mode` on the
    /// rule and on subset v2 (a document without `mode` when given "").
    static func destinationRule(tls: String? = nil, v2TLS: String? = nil) -> String {
        func policy(_ mode: String) -> String { mode.isEmpty ? "{tls: {}}" : "{tls: {mode: \(mode)}}" }
        return """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: payments, namespace: shop}
            spec:
              host: payments
            \(tls.map { "  trafficPolicy: \(policy($0))\n" } ?? "")  subsets:
              - {name: v1, labels: {version: v1}}
              - {name: v2, labels: {version: v2}\(v2TLS.map { ", trafficPolicy: \(policy($0))" } ?? "")}
            """
    }

    /// A PeerAuthentication; `selector` and `portLevel` are flow mappings (`{version: v1}`,
    /// `{8080: {mode: DISABLE}}`), `mode` nil for no `mtls`.
    static func peerAuthentication(_ name: String, namespace: String, mode: String?, selector: String? = nil,
                                   portLevel: String? = nil, apiVersion: String = "security.istio.io/v1") -> String {
        let fields = [selector.map { "selector: {matchLabels: \($0)}" }, mode.map { "mtls: {mode: \($0)}" },
                      portLevel.map { "portLevelMtls: \($0)" }].compactMap { $0 }
        return """
            apiVersion: \(apiVersion)
            kind: PeerAuthentication
            metadata: {name: \(name), namespace: \(namespace)}
            spec: {\(fields.joined(separator: ", "))}
            """
    }

    /// Service, two sidecar workloads (v1 with service account `payments-v1`, v2 with none) and the rule.
    static func mesh(tls: String? = nil, v2TLS: String? = nil, sidecars: Bool = true) -> [String] {
        [Documents.serviceEntry,
         workload("payments-v1", "198.51.100.10", "v1", serviceAccount: "payments-v1", sidecar: sidecars),
         workload("payments-v2", "198.51.100.99", "v2", sidecar: sidecars),
         destinationRule(tls: tls, v2TLS: v2TLS)]
    }
}

@Suite struct MutualTLSReadingTests {
    @Test func peerAuthenticationsReadWithTheirScopeModeAndPorts() throws {
        let text = (MutualTLSDocuments.mesh() + [
            MutualTLSDocuments.peerAuthentication("default", namespace: "istio-system", mode: "STRICT", apiVersion: "security.istio.io/v1beta1"),
            MutualTLSDocuments.peerAuthentication("default", namespace: "shop", mode: "PERMISSIVE"),
            MutualTLSDocuments.peerAuthentication("v1", namespace: "shop", mode: "UNSET", selector: "{version: v1}",
                                                  portLevel: "{8080: {mode: DISABLE}, 9090: {mode: UNSET}}"),
            // Istio reads an empty selector as none: this one is namespace-wide.
            MutualTLSDocuments.peerAuthentication("default", namespace: "billing", mode: "DISABLE", selector: "{}"),
        ]).joined(separator: "\n---\n")
        let reading = MeshConfigReader.read([("mesh.yaml", text)])
        #expect(reading.problems.isEmpty, "\(reading.problems)")
        let policies = try #require(reading.config?.peerAuthentications)
        #expect(policies.map(\.origin.name) == ["istio-system/default", "shop/default", "shop/v1", "billing/default"])
        #expect(policies.map(\.isMeshWide) == [true, false, false, false])
        #expect(policies.map(\.mode) == [.strict, .permissive, nil, .disable])
        #expect(policies.map(\.selector) == [nil, nil, ["version": "v1"], nil])
        #expect(policies[2].portLevelModes == [8080: .disable])
        #expect(policies[2].origin.description == "mesh.yaml: document 7 (line 39)")
        #expect(!reading.warnings.contains { $0.contains("PeerAuthentication") }, "\(reading.warnings)")
    }

    @Test func destinationRuleTLSModesAndSubsetOverrides() throws {
        let reading = MeshConfigReader.read([("mesh.yaml", MutualTLSDocuments.mesh(tls: "ISTIO_MUTUAL", v2TLS: "").joined(separator: "\n---\n"))])
        let rule = try #require(reading.config?.destinationRules.first, "\(reading.problems)")
        #expect(rule.trafficPolicy.tlsMode == .istioMutual)
        #expect(rule.trafficPolicy.overridden(by: rule.subsets[0].trafficPolicy).tlsMode == .istioMutual)
        // `tls: {}` is the proto's zero value, DISABLE, as Istio reads it; said in a warning.
        #expect(rule.trafficPolicy.overridden(by: rule.subsets[1].trafficPolicy).tlsMode == .disable)
        #expect(reading.warnings.contains { $0.hasSuffix("DestinationRule shop/payments: spec.subsets[1].trafficPolicy.tls: no mode: read as DISABLE (plaintext), as Istio reads it") },
                "\(reading.warnings)")
        let plain = MeshConfigReader.read([("mesh.yaml", MutualTLSDocuments.mesh().joined(separator: "\n---\n"))])
        #expect(plain.config?.destinationRules.first?.trafficPolicy.tlsMode == nil)
    }

    static let pa = MutualTLSDocuments.peerAuthentication

    @Test(arguments: [
        (pa("strict", "shop", "STRICTER", nil, nil, "security.istio.io/v1"),
         "bad.yaml: document 1 (line 1): PeerAuthentication shop/strict: spec.mtls.mode: \"STRICTER\" is not a mutual TLS mode (UNSET, DISABLE, PERMISSIVE, STRICT)"),
        (pa("ports", "shop", "STRICT", nil, "{8080: {mode: DISABLE}}", "security.istio.io/v1"),
         "bad.yaml: document 1 (line 1): PeerAuthentication shop/ports: spec.portLevelMtls: needs spec.selector.matchLabels: Istio applies port-level mTLS to selected workloads only, not to a namespace or the mesh"),
        (pa("ports", "istio-system", nil, "{}", "{8080: {mode: DISABLE}}", "security.istio.io/v1"),
         "bad.yaml: document 1 (line 1): PeerAuthentication istio-system/ports: spec.portLevelMtls: needs spec.selector.matchLabels: Istio applies port-level mTLS to selected workloads only, not to a namespace or the mesh"),
        (pa("ports", "shop", nil, "{version: v1}", "{http: {mode: DISABLE}}", "security.istio.io/v1"),
         "bad.yaml: document 1 (line 1): PeerAuthentication shop/ports: spec.portLevelMtls.http: \"http\" is not a port number 1-65535"),
        (pa("ports", "shop", nil, "{version: v1}", "{8080: {mode: OFF}}", "security.istio.io/v1"),
         "bad.yaml: document 1 (line 1): PeerAuthentication shop/ports: spec.portLevelMtls.8080.mode: \"OFF\" is not a mutual TLS mode (UNSET, DISABLE, PERMISSIVE, STRICT)"),
        (pa("strict", "shop", "STRICT", nil, nil, "networking.istio.io/v1"),
         "bad.yaml: document 1 (line 1): PeerAuthentication shop/strict: apiVersion: \"networking.istio.io/v1\" does not serve PeerAuthentication (security.istio.io/v1, security.istio.io/v1beta1)"),
        (MutualTLSDocuments.destinationRule(tls: "MUTUAL"),
         "bad.yaml: document 1 (line 1): DestinationRule shop/payments: spec.trafficPolicy.tls.clientCertificate: is required for mode MUTUAL (a file path)"),
        (MutualTLSDocuments.destinationRule(v2TLS: "MUTUAL"),
         "bad.yaml: document 1 (line 1): DestinationRule shop/payments: spec.subsets[1].trafficPolicy.tls.clientCertificate: is required for mode MUTUAL (a file path)"),
        (MutualTLSDocuments.destinationRule(tls: "ISTIO"),
         "bad.yaml: document 1 (line 1): DestinationRule shop/payments: spec.trafficPolicy.tls.mode: \"ISTIO\" is not a TLS mode (DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL)"),
        (MutualTLSDocuments.workload("payments-v1", "198.51.100.10", "v1", serviceAccount: "Payments_V1"),
         "bad.yaml: document 1 (line 1): WorkloadEntry shop/payments-v1: spec.serviceAccount: \"Payments_V1\" is not a Kubernetes service account name (DNS-1123)"),
        // Istio keeps the older of two policies for one scope; files have no age, so Capstan refuses.
        ([pa("first", "shop", "STRICT", nil, nil, "security.istio.io/v1"), pa("second", "shop", "DISABLE", "{}", nil, "security.istio.io/v1")]
            .joined(separator: "\n---\n"),
         "bad.yaml: document 2 (line 5): PeerAuthentication shop/second: spec.selector: namespace shop already has PeerAuthentication shop/first (bad.yaml: document 1 (line 1)); give this one a selector or remove one"),
        ([pa("first", "istio-system", "STRICT", nil, nil, "security.istio.io/v1"), pa("second", "istio-system", nil, nil, nil, "security.istio.io/v1beta1")]
            .joined(separator: "\n---\n"),
         "bad.yaml: document 2 (line 5): PeerAuthentication istio-system/second: spec.selector: the mesh already has PeerAuthentication istio-system/first (bad.yaml: document 1 (line 1)); give this one a selector or remove one"),
        ([pa("first", "shop", "STRICT", "{app: payments}", nil, "security.istio.io/v1"), pa("second", "shop", "DISABLE", "{version: v1}", nil, "security.istio.io/v1")]
            .joined(separator: "\n---\n"),
         "bad.yaml: document 2 (line 5): PeerAuthentication shop/second: spec.selector.matchLabels: selects WorkloadEntry shop/payments-v1, which PeerAuthentication shop/first (bad.yaml: document 1 (line 1)) also selects"),
    ])
    func problemsNameFileDocumentLineResourceAndField(bad: String, message: String) {
        // The resource under test replaces its namesakes, if any, so only the intended problem shows.
        let kind = bad.split(separator: "\n").first { $0.hasPrefix("kind:") }.map(String.init) ?? ""
        let base = MutualTLSDocuments.mesh().filter { !$0.contains(kind) }
        let reading = MeshConfigReader.read([("base.yaml", base.joined(separator: "\n---\n")), ("bad.yaml", bad)])
        #expect(reading.config == nil)
        #expect(reading.problems.map(\.description) == [message])
    }

    @Test func aWorkloadPolicyThatSelectsNothingIsAWarning() throws {
        let text = (MutualTLSDocuments.mesh() + [MutualTLSDocuments.peerAuthentication("v3", namespace: "shop", mode: "STRICT", selector: "{version: v3}")])
            .joined(separator: "\n---\n")
        let reading = MeshConfigReader.read([("mesh.yaml", text)])
        #expect(reading.config?.peerAuthentications.count == 1, "\(reading.problems)")
        #expect(reading.warnings.contains { $0.hasSuffix("PeerAuthentication shop/v3: spec.selector.matchLabels: selects no WorkloadEntry in namespace shop") },
                "\(reading.warnings)")
    }

    /// What `capstan control-plane --validate DIR` and the server read: every file of a directory.
    @Test func aDirectoryWithSecurityResourcesReadsAndABadOneIsReportedWithItsPath() throws {
        var template = Array("/tmp/capstan-mtls-XXXXXX".utf8CString)
        let directory = try #require(template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) })
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func write(_ name: String, _ text: String) throws {
            try Data(text.utf8).write(to: URL(fileURLWithPath: "\(directory)/\(name)"))
        }
        try write("mesh.yaml", (MutualTLSDocuments.mesh(tls: "ISTIO_MUTUAL") + [Documents.virtualService(90, 10)]).joined(separator: "\n---\n"))
        try write("security.yaml", [MutualTLSDocuments.peerAuthentication("default", namespace: "istio-system", mode: "STRICT"),
                                    MutualTLSDocuments.peerAuthentication("v1", namespace: "shop", mode: "PERMISSIVE", selector: "{version: v1}",
                                                                          portLevel: "{8080: {mode: STRICT}}")].joined(separator: "\n---\n"))
        // An editor's temporary file, as a ConfigMap's `..data`: hidden, not read.
        try write(".security.yaml.swp", "kind: [unclosed\n")
        let reading = MeshConfigReader.read(directory: directory)
        #expect(reading.problems.isEmpty, "\(reading.problems)")
        #expect(reading.files == 2)
        #expect(reading.config?.peerAuthentications.map(\.origin.name) == ["istio-system/default", "shop/v1"])
        #expect(reading.config?.destinationRules.first?.trafficPolicy.tlsMode == .istioMutual)

        try write("z-security.yaml", MutualTLSDocuments.peerAuthentication("lax", namespace: "istio-system", mode: "LAX"))
        let invalid = MeshConfigReader.read(directory: directory)
        #expect(invalid.config == nil)
        #expect(invalid.problems.map(\.description) == [
            "\(directory)/z-security.yaml: document 1 (line 1): PeerAuthentication istio-system/lax: spec.mtls.mode: \"LAX\" is not a mutual TLS mode (UNSET, DISABLE, PERMISSIVE, STRICT)",
        ])
    }
}
