import Configuration
import Foundation
import HTTPTypes
import Routing
import SwiftProtobuf
import Testing
import XDS

/// Every route configuration istiod 1.20.8 sent a sidecar and an ingress gateway (`../shared/istio-config/`,
/// read by path, never copied) compiles without a refusal, and requests go where Envoy sent them.
struct IstioRouteConfigurationTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../../shared/istio-config/").standardized.path

    /// The `route_config`s of a config dump's RoutesConfigDump (dynamic and static), each with the
    /// fields of its JSON that Capstan's proto subset does not have.
    static func routeConfigurations(in file: String) throws
        -> [(proto: Envoy_Config_Route_V3_RouteConfiguration, dynamic: Bool, unknown: [String])] {
        // Foundation's JSONSerialization finds the route configurations in milliseconds; the Codable walk of a
        // whole dump takes seconds in a debug build and starves the timing-sensitive tests beside it.
        let dump = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(file)"))) as? [String: Any]
        let configs = dump?["configs"] as? [[String: Any]] ?? []
        var found: [(Envoy_Config_Route_V3_RouteConfiguration, Bool, [String])] = []
        var options = JSONDecodingOptions()
        options.ignoreUnknownFields = true
        for config in configs where config["@type"] as? String == "type.googleapis.com/envoy.admin.v3.RoutesConfigDump" {
            for list in ["static_route_configs", "dynamic_route_configs"] {
                for entry in config[list] as? [[String: Any]] ?? [] {
                    guard var fields = entry["route_config"] as? [String: Any] else { continue }
                    fields["@type"] = nil
                    let original = try ConfigValue.parse(json: String(decoding: try JSONSerialization.data(withJSONObject: fields), as: UTF8.self))
                    let proto = try Envoy_Config_Route_V3_RouteConfiguration(jsonString: original.jsonText(), options: options)
                    var encoding = JSONEncodingOptions()
                    encoding.preserveProtoFieldNames = true
                    let known = try ConfigValue.parse(json: proto.jsonString(options: encoding))
                    found.append((proto, list == "dynamic_route_configs", Self.fieldsMissing(from: known, in: original)))
                }
            }
        }
        return found
    }

    /// Paths of object keys in `original` that `known` lacks: what protobuf's JSON reading dropped. A key
    /// with a default value (false, 0, "", empty) is not counted: protobuf's JSON leaves those out anyway.
    static func fieldsMissing(from known: ConfigValue, in original: ConfigValue, path: String = "") -> [String] {
        switch (original, known) {
        case (.object(let fields), .object(let knownFields)):
            return fields.keys.sorted().flatMap { key -> [String] in
                let child = path.isEmpty ? key : "\(path).\(key)"
                guard let knownChild = knownFields[key] else { return isDefault(fields[key]!) ? [] : [child] }
                return fieldsMissing(from: knownChild, in: fields[key]!, path: child)
            }
        case (.array(let items), .array(let knownItems)):
            return zip(items, knownItems).enumerated().flatMap { index, pair in
                fieldsMissing(from: pair.1, in: pair.0, path: "\(path)[\(index)]")
            }
        default:
            return []
        }
    }

    static func isDefault(_ value: ConfigValue) -> Bool {
        switch value {
        case .bool(false), .number(0), .string(""), .null: true
        case .array(let items): items.isEmpty
        case .object(let fields): fields.isEmpty
        default: false
        }
    }

    /// Compiles every route configuration of the dump (a refusal fails the test) and returns the dynamic
    /// ones (RDS) by name. Prints the fields outside the subset, and how often each kind of field is
    /// accepted but not acted on.
    static func tables(in file: String) throws -> [String: RouteTable] {
        var tables: [String: RouteTable] = [:]
        var notActedOn: [String: Int] = [:]
        for (index, (proto, dynamic, unknown)) in try routeConfigurations(in: file).enumerated() {
            let table = try RouteTable(proto, path: "\(file) route_config[\(index)] \"\(proto.name)\"")
            if !unknown.isEmpty { print("\(file): route_config \"\(proto.name)\": fields outside the subset: \(unknown)") }
            for field in table.fieldsNotActedOn {
                notActedOn[String(field.path.split(separator: ".").last!), default: 0] += 1
            }
            if dynamic { tables[proto.name] = table }
        }
        print("\(file): accepted, not acted on: \(notActedOn.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))")
        return tables
    }

    /// (Istio 1.18's 2.4 MB DeathStarBench dump compiled too when tried, but reading it costs seconds of CPU
    /// in a debug build, which starves the timing-sensitive unit tests running beside it.)
    @Test(arguments: ["sidecar-istio1.20.8-hello-openshift.config_dump.json", "ingressgateway-istio1.20.8.config_dump.json"])
    func everyRouteConfigurationCompiles(file: String) throws {
        let configurations = try Self.routeConfigurations(in: file)
        #expect(!configurations.isEmpty)
        _ = try Self.tables(in: file)
    }

    @Test func sidecarRoutesCompileAndRouteAsEnvoyDid() throws {
        let tables = try Self.tables(in: "sidecar-istio1.20.8-hello-openshift.config_dump.json")
        #expect(tables.count == 9)  // and 6 static ones, in listeners, compiled as well
        let port80 = try #require(tables["80"])
        // The VirtualService hello-openshift-internal-rules: only `/` exactly, with its header.
        let decision = try #require(port80.route(request("hello-openshift.vanilla-playground.svc.cluster.local", "/"), randomValue: 0))
        #expect(decision.virtualHost == "hello-openshift.vanilla-playground.svc.cluster.local:80")
        #expect(decision.cluster == "outbound|8080||hello-openshift.vanilla-playground.svc.cluster.local")
        #expect(decision.includesRequestAttemptCount)
        guard case .forward(let forwarding) = decision.action else { Issue.record("not forwarded"); return }
        #expect(forwarding.timeout == nil)  // Istio's 0s
        #expect(forwarding.retryPolicy?.retries == 2)
        #expect(forwarding.retryPolicy?.retriableStatusCodes == [503])
        var headers = HTTPFields()
        forwarding.requestHeaders.apply(to: &headers)
        #expect(headers[HTTPField.Name("x-internal-mesh-route")!] == "applied")
        // Other paths of that host match no route: Envoy answers 404 (NR).
        #expect(port80.route(request("hello-openshift.vanilla-playground.svc.cluster.local", "/other"), randomValue: 0) == nil)
        // ignore_port_in_host_matching: Istio sets it, so the port in the authority does not matter.
        #expect(port80.cluster(request("istio-egressgateway.istio-system:80", "/x")) == "outbound|80||istio-egressgateway.istio-system.svc.cluster.local")
        #expect(port80.cluster(request("172.30.113.243", "/")) == "outbound|80||istio-ingressgateway.istio-system.svc.cluster.local")
        // Anything else leaves through allow_any.
        let passthrough = try #require(port80.route(request("example.org", "/anything"), randomValue: 0))
        #expect(passthrough.virtualHost == "allow_any")
        #expect(passthrough.routeName == "allow_any")
        #expect(passthrough.cluster == "PassthroughCluster")

        let grafana = try #require(tables["3000"])
        #expect(grafana.cluster(request("grafana.istio-system.svc.cluster.local:3000", "/d/x")) == "outbound|3000||grafana.istio-system.svc.cluster.local")
        let inbound = try #require(tables["hello-openshift.vanilla-playground.svc.cluster.local:8080"])
        #expect(inbound.cluster(request("anything", "/")) == "outbound|8080||hello-openshift.vanilla-playground.svc.cluster.local")
    }

    @Test func ingressGatewayRoutesCompileAndRouteAsEnvoyDid() throws {
        let tables = try Self.tables(in: "ingressgateway-istio1.20.8.config_dump.json")
        let http8080 = try #require(tables["http.8080"])
        #expect(http8080.cluster(request("shop.example.com:8080", "/dani")) == "outbound|8080||hello-openshift.vanilla-playground.svc.cluster.local")
        #expect(http8080.cluster(request("shop.example.com", "/dani/more")) == nil)
        // The two static route configurations (health and Prometheus) have no name.
        let healthAndStats = try Self.routeConfigurations(in: "ingressgateway-istio1.20.8.config_dump.json")
            .filter { !$0.dynamic }
            .map { try RouteTable($0.proto, path: "static_route_config") }
        #expect(healthAndStats.compactMap { $0.cluster(request("any", "/healthz/ready")) }.contains("agent"))
        #expect(healthAndStats.compactMap { $0.cluster(request("any", "/stats/prometheus")) }.contains("prometheus_stats"))
    }
}
