import Configuration
import Foundation
import SwiftProtobuf
import XDS

/// istiod 1.20.8's configuration of a sidecar and an ingress gateway, as their Envoys dumped it
/// (`../shared/istio-config/`, read by path, never copied). Read with JSONSerialization, which finds the
/// resources in milliseconds; each is then read into Capstan's messages with protobuf's JSON mapping,
/// fields outside the subset left out.
enum IstioDumps {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../../shared/istio-config/").standardized.path
    static let sidecar = "sidecar-istio1.20.8-hello-openshift.config_dump.json"
    static let gateway = "ingressgateway-istio1.20.8.config_dump.json"
    static let files = [sidecar, gateway]

    /// A resource of a dump, as JSON, and whether it is static (from the bootstrap).
    struct Resource {
        var json: [String: Any]
        var isStatic: Bool
    }

    static func configs(_ file: String) throws -> [[String: Any]] {
        let dump = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(file)"))) as? [String: Any]
        return dump?["configs"] as? [[String: Any]] ?? []
    }

    private static func dump(_ file: String, type: String) throws -> [String: Any] {
        try configs(file).first { $0["@type"] as? String == "type.googleapis.com/envoy.admin.v3.\(type)" } ?? [:]
    }

    /// `dynamic_listeners[].active_state.listener` and `static_listeners[].listener`.
    static func listeners(in file: String) throws -> [Resource] {
        let dump = try dump(file, type: "ListenersConfigDump")
        let dynamic = (dump["dynamic_listeners"] as? [[String: Any]] ?? []).compactMap { ($0["active_state"] as? [String: Any])?["listener"] as? [String: Any] }
        let fixed = (dump["static_listeners"] as? [[String: Any]] ?? []).compactMap { $0["listener"] as? [String: Any] }
        return dynamic.map { Resource(json: $0, isStatic: false) } + fixed.map { Resource(json: $0, isStatic: true) }
    }

    /// `dynamic_active_clusters[].cluster` and `static_clusters[].cluster`.
    static func clusters(in file: String) throws -> [Resource] {
        let dump = try dump(file, type: "ClustersConfigDump")
        let dynamic = (dump["dynamic_active_clusters"] as? [[String: Any]] ?? []).compactMap { $0["cluster"] as? [String: Any] }
        let fixed = (dump["static_clusters"] as? [[String: Any]] ?? []).compactMap { $0["cluster"] as? [String: Any] }
        return dynamic.map { Resource(json: $0, isStatic: false) } + fixed.map { Resource(json: $0, isStatic: true) }
    }

    /// `dynamic_route_configs[].route_config`.
    static func routeConfigurations(in file: String) throws -> [[String: Any]] {
        let dump = try dump(file, type: "RoutesConfigDump")
        return (dump["dynamic_route_configs"] as? [[String: Any]] ?? []).compactMap { $0["route_config"] as? [String: Any] }
    }

    /// `json` (a resource with its `@type`) as an `M`.
    static func message<M: SwiftProtobuf.Message>(_ json: [String: Any], as type: M.Type) throws -> M {
        var fields = json
        fields["@type"] = nil
        var options = JSONDecodingOptions()
        options.ignoreUnknownFields = true
        return try M(jsonString: String(decoding: try JSONSerialization.data(withJSONObject: fields), as: UTF8.self), options: options)
    }
}
