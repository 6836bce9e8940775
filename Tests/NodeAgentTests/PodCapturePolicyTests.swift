import Capture
import Configuration
import Netfilter
@testable import NodeAgent
import Testing

@Suite struct PodCapturePolicyTests {
    let policy = PodCapturePolicy(defaults: NodeDefaults())

    func spec(_ annotations: [String: String], defaults: NodeDefaults = NodeDefaults()) throws -> CaptureSpec? {
        guard case .capture(let spec) = try PodCapturePolicy(defaults: defaults)
            .decide(for: PodMetadata(namespace: "shop", name: "cart", annotations: annotations)) else { return nil }
        return spec
    }

    @Test func annotationsShapeTheSpecAsTheInjectorDoes() throws {
        let spec = try #require(try spec([
            "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.96.0.0/12",
            "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.1/32",
            "traffic.sidecar.istio.io/includeInboundPorts": "8080,9090",
            "traffic.sidecar.istio.io/excludeInboundPorts": "9090",
            "traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
            "sidecar.istio.io/interceptionMode": "TPROXY",
        ]))
        #expect(spec.interceptionMode == .tproxy)
        #expect(spec.inboundPorts == .only([8080, 9090]))
        // The agent's and proxy's own ports stay excluded whatever the annotation says.
        #expect(spec.inboundExcludePorts == [9090, 15020, 15021, 15090])
        #expect(spec.outboundExcludePorts == [5432])
        #expect(spec.outboundExcludeCIDRs.map(\.cidrText) == ["10.96.0.1/32"])
        #expect(spec.outboundDestinations != .all)
    }

    @Test func podsWithoutAnnotationsGetTheNodeDefaults() throws {
        let defaults = try NodeDefaults(json: #"{"capture": {"redirect-dns": "true", "dns-servers": "10.96.0.10"}}"#)
        let spec = try #require(try spec([:], defaults: defaults))
        #expect(spec.dns == .nameservers([IPAddress("10.96.0.10")!]))
        #expect(spec == (try CaptureSpec(options: [.redirectDNS: "true", .dnsServers: "10.96.0.10"])))
    }

    @Test func skipsWhatIstioSkips() throws {
        let decide = { (pod: PodMetadata) in try self.policy.decide(for: pod) }
        #expect(try decide(PodMetadata(namespace: "kube-system", name: "coredns")) == .skip(reason: "namespace kube-system is excluded on this node"))
        #expect(try decide(PodMetadata(namespace: "a", name: "b", hostNetwork: true)) == .skip(reason: "the pod uses the node's network"))
        #expect(try decide(PodMetadata(namespace: "a", name: "b", annotations: ["sidecar.istio.io/inject": "false"]))
                == .skip(reason: "sidecar.istio.io/inject is false"))
        #expect(try decide(PodMetadata(namespace: "a", name: "b", labels: ["sidecar.istio.io/inject": "False"]))
                == .skip(reason: "sidecar.istio.io/inject is false"))
    }

    @Test func aBadAnnotationIsRefusedByName() {
        #expect {
            try spec(["traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.0.0.0/33"])
        } throws: { error in
            "\(error)".contains("annotation traffic.sidecar.istio.io/excludeOutboundIPRanges") && "\(error)".contains("10.0.0.0/33")
        }
    }

    @Test func nodeDefaultsAreValidatedWithTheirPath() {
        for (text, named) in [(#"{"capture": {"envoy-port": "x"}}"#, "envoy-port"),
                              (#"{"capture": {"no-such-flag": "1"}}"#, "capture.no-such-flag"),
                              (#"{"exclude_namespaces": "kube-system"}"#, "exclude_namespaces"),
                              (#"{"excludeNamespaces": []}"#, "excludeNamespaces")] {
            #expect(throws: ConfigError.self) { try NodeDefaults(json: text) }
            do { _ = try NodeDefaults(json: text) } catch { #expect(error.description.contains(named), "\(error)") }
        }
    }

    @Test func podMetadataReadsAPodObject() throws {
        let pod = try PodMetadata(pod: ConfigReader(ConfigValue.parse(json: """
            {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "cart", "namespace": "shop", "annotations": {"a": "1"}, "labels": {"app": "cart"}},
             "spec": {"hostNetwork": true, "containers": []}}
            """)))
        #expect(pod == PodMetadata(namespace: "shop", name: "cart", annotations: ["a": "1"], labels: ["app": "cart"], hostNetwork: true))
    }
}
