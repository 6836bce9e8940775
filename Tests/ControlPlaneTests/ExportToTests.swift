@testable import ControlPlane
import SwiftProtobuf
import Testing
import XDS

/// `exportTo` on ServiceEntries, VirtualServices and DestinationRules, and the mesh config's defaults:
/// what the sidecars of each namespace are sent, as istiod's push context decides it.
@Suite struct ExportToTests {
    /// An HTTP service `name` in `namespace` at 198.51.100.`octet`, port 90`octet`, one endpoint at
    /// 192.0.2.`octet`; `exportTo` as YAML (nil: not given).
    static func service(_ name: String, octet: Int, namespace: String = "shop", exportTo: String? = nil) -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: \(name), namespace: \(namespace)}
        spec:
          hosts: [\(name)]
          addresses: [198.51.100.\(octet)]
          ports: [{number: \(9000 + octet), name: http}]
          resolution: STATIC
          endpoints: [{address: 192.0.2.\(octet)}]
        \(exportTo.map { "  exportTo: \($0)" } ?? "")
        """
    }

    static func meshConfig(_ lines: String) -> String {
        """
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: istio, namespace: istio-system}
        data:
          mesh: |-
        \(lines.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
        """
    }

    static func config(_ documents: [String]) throws -> MeshConfig {
        let reading = MeshConfigReader.read([("mesh.yaml", documents.joined(separator: "\n---\n"))])
        return try #require(reading.config, "\(reading.problems)")
    }

    /// What the sidecars of `namespace` are sent of each service, by short name: its outbound cluster,
    /// its HTTP listener, its route configuration's virtual host and its NDS entry, each checked to agree.
    static func seen(_ config: MeshConfig, in namespace: String) throws -> Set<String> {
        let resources = try ProxyConfigGenerator().resources(for: config, namespace: namespace)
        func name(_ host: String) -> String { String(host.split(separator: ".")[0]) }
        let clusters = Set(resources.clusters.map(\.name).filter { $0.hasPrefix("outbound|") }.map { name(String($0.split(separator: "|", omittingEmptySubsequences: false)[3])) })
        var routed: Set<String> = []
        for route in resources.routes {
            let configuration = try Envoy_Config_Route_V3_RouteConfiguration(serializedBytes: [UInt8](route.resource.value))
            routed.formUnion(configuration.virtualHosts.filter { $0.name != "allow_any" }.map { name($0.name) })
        }
        let listeners = resources.outboundListeners.count - 1
        let table = try Istio_Networking_Nds_V1_NameTable(serializedBytes: [UInt8](resources.nameTables.packed(autoAllocate: false).value))
        let named = Set(table.table.keys.map(name))
        #expect(clusters == routed && clusters == named && listeners == clusters.count, "\(namespace): \(clusters) \(routed) \(named) \(listeners)")
        return clusters
    }

    static let services = [
        service("everyone", octet: 1, exportTo: "['*']"),
        service("local", octet: 2, exportTo: "['.']"),
        service("hidden", octet: 3, exportTo: "['~']"),
        service("webonly", octet: 4, exportTo: "[web]"),
        service("listed", octet: 5, exportTo: "[shop, web]"),
        service("unset", octet: 6),
    ]

    @Test func servicesAreSentWhereTheirExportToSays() throws {
        let config = try Self.config(Self.services)
        #expect(try Self.seen(config, in: "shop") == ["everyone", "local", "listed", "unset"])
        #expect(try Self.seen(config, in: "web") == ["everyone", "webonly", "listed", "unset"])
        #expect(try Self.seen(config, in: "other") == ["everyone", "unset"])
        #expect(try Self.seen(config, in: MeshConfig.rootNamespace) == ["everyone", "unset"])
        // A service no namespace sees still makes its workloads' inbound side, in every namespace's resources.
        for namespace in ["shop", "web", "other"] {
            let resources = try ProxyConfigGenerator().resources(for: config, namespace: namespace)
            #expect(resources.clusters.contains { $0.name == "inbound|9003||" })
            #expect(resources.inbound(ip: "192.0.2.3", namespace: "shop").ports == [9003])
        }
        // Without a namespace (what gateways are sent), every service is there.
        let shared = try ProxyConfigGenerator().resources(for: config)
        #expect(shared.clusters.filter { $0.name.hasPrefix("outbound|") }.count == 6)
        #expect(shared.namespaceViews != nil)
    }

    @Test(arguments: [
        ("['.']", ["shop"]),
        ("['~']", []),
        ("[web]", ["web"]),
        ("['*']", ["shop", "web", "other"]),
        ("[web, '.']", ["shop", "web"]),
    ])
    func theMeshDefaultGoesToServicesWithoutExportTo(defaultExportTo: String, namespaces: [String]) throws {
        let config = try Self.config([Self.service("unset", octet: 6), Self.service("everyone", octet: 1, exportTo: "['*']"),
                                      Self.meshConfig("defaultServiceExportTo: \(defaultExportTo)")])
        for namespace in ["shop", "web", "other"] {
            #expect(try Self.seen(config, in: namespace) == (namespaces.contains(namespace) ? ["everyone", "unset"] : ["everyone"]), "\(namespace)")
        }
    }

    /// The route `namespace`'s sidecars are sent for payments on 9080: the cluster of its first route.
    static func paymentsRoute(_ config: MeshConfig, in namespace: String) throws -> String {
        let resources = try ProxyConfigGenerator().resources(for: config, namespace: namespace)
        let route = try #require(resources.routes.first { $0.name == "9080" })
        let configuration = try Envoy_Config_Route_V3_RouteConfiguration(serializedBytes: [UInt8](route.resource.value))
        let host = try #require(configuration.virtualHosts.first { $0.name == "payments.shop.svc.cluster.local:9080" })
        return host.routes.first?.route.cluster ?? "?"
    }

    static let toV2 = "      - route: [{destination: {host: payments, subset: v2}}]"
    static let v2 = "outbound|9080|v2|payments.shop.svc.cluster.local"
    static let plain = "outbound|9080||payments.shop.svc.cluster.local"

    @Test(arguments: [
        ("  exportTo: ['.']", nil, ["shop"]),
        ("  exportTo: [web]", nil, ["web"]),
        ("  exportTo: ['*']", "defaultVirtualServiceExportTo: ['.']", ["shop", "web", "other"]),
        ("", "defaultVirtualServiceExportTo: ['.']", ["shop"]),
        ("", "defaultVirtualServiceExportTo: [other]", ["other"]),
        ("", nil, ["shop", "web", "other"]),
    ] as [(String, String?, [String])])
    func virtualServicesRouteOnlyTheSidecarsTheyAreExportedTo(exportTo: String, meshDefault: String?, namespaces: [String]) throws {
        let virtualService = HTTPDocuments.virtualService(Self.toV2) + "\n" + exportTo
        let config = try Self.config([HTTPDocuments.mesh([virtualService])] + (meshDefault.map { [Self.meshConfig($0)] } ?? []))
        for namespace in ["shop", "web", "other"] {
            #expect(try Self.paymentsRoute(config, in: namespace) == (namespaces.contains(namespace) ? Self.v2 : Self.plain), "\(namespace)")
        }
    }

    static func destinationRule(namespace: String, balancer: String, exportTo: String?) -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: payments, namespace: \(namespace)}
        spec:
          host: payments.shop.svc.cluster.local
          trafficPolicy: {loadBalancer: \(balancer)}
        \(exportTo.map { "  exportTo: \($0)" } ?? "")
        """
    }

    /// The service's rule (ROUND_ROBIN), the client namespace web's (RANDOM) and the root namespace's
    /// (RING_HASH): which one each namespace's sidecars take, in istiod's order (none: istiod's default,
    /// LEAST_REQUEST).
    @Test(arguments: [
        // No exportTo: the own namespace's, else the service's.
        (nil, nil, nil, nil, ["shop": "ROUND_ROBIN", "web": "RANDOM", "other": "ROUND_ROBIN", "istio-system": "ROUND_ROBIN"]),
        // The service's kept home: others fall to the root namespace's.
        ("['.']", "['.']", nil, nil, ["shop": "ROUND_ROBIN", "web": "RANDOM", "other": "RING_HASH", "istio-system": "RING_HASH"]),
        // The service's exported to `other` only: not even its own namespace takes it.
        ("[other]", nil, nil, nil, ["shop": "RING_HASH", "web": "RANDOM", "other": "ROUND_ROBIN", "istio-system": "RING_HASH"]),
        // The root's kept home too: only the root namespace's sidecars take it.
        ("['.']", "['.']", "['.']", nil, ["shop": "ROUND_ROBIN", "web": "RANDOM", "other": "LEAST_REQUEST", "istio-system": "RING_HASH"]),
        // web's rule exported elsewhere is not web's own.
        (nil, "[shop]", nil, nil, ["shop": "ROUND_ROBIN", "web": "ROUND_ROBIN", "other": "ROUND_ROBIN", "istio-system": "ROUND_ROBIN"]),
        // The mesh default `.`: rules without exportTo stay home.
        (nil, nil, nil, "['.']", ["shop": "ROUND_ROBIN", "web": "RANDOM", "other": "LEAST_REQUEST", "istio-system": "RING_HASH"]),
        // istiod honours only `.` of the default: anything else leaves them exported everywhere.
        (nil, nil, nil, "[web]", ["shop": "ROUND_ROBIN", "web": "RANDOM", "other": "ROUND_ROBIN", "istio-system": "ROUND_ROBIN"]),
    ] as [(String?, String?, String?, String?, [String: String])])
    func destinationRulesAreLookedUpInIstiodsOrder(service: String?, client: String?, root: String?, meshDefault: String?,
                                                   expected: [String: String]) throws {
        let documents = [HTTPDocuments.serviceEntry, HTTPDocuments.workload("payments-v1", "198.51.100.10", "v1"),
                         Self.destinationRule(namespace: "shop", balancer: "{simple: ROUND_ROBIN}", exportTo: service),
                         Self.destinationRule(namespace: "web", balancer: "{simple: RANDOM}", exportTo: client),
                         Self.destinationRule(namespace: "istio-system", balancer: "{consistentHash: {useSourceIp: true}}", exportTo: root)]
            + (meshDefault.map { [Self.meshConfig("defaultDestinationRuleExportTo: \($0)")] } ?? [])
        let config = try Self.config(documents)
        var taken: [String: String] = [:]
        for namespace in expected.keys {
            let resources = try ProxyConfigGenerator().resources(for: config, namespace: namespace)
            let cluster = try Envoy_Config_Cluster_V3_Cluster(serializedBytes: [UInt8](try #require(
                resources.clusters.first { $0.name == Self.plain }).resource.value))
            switch cluster.lbPolicy {
            case .roundRobin: taken[namespace] = "ROUND_ROBIN"
            case .leastRequest: taken[namespace] = "LEAST_REQUEST"
            case .random: taken[namespace] = "RANDOM"
            case .ringHash: taken[namespace] = "RING_HASH"
            default: taken[namespace] = "\(cluster.lbPolicy)"
            }
        }
        #expect(taken == expected)
    }

    @Test func whenEverythingIsExportedEverywhereEverySidecarSharesOneSetOfResources() throws {
        let base = HTTPDocuments.mesh([HTTPDocuments.canary])
        #expect(try Self.config([base]).dependsOnNamespace == false)
        #expect(try ProxyConfigGenerator().resources(for: Self.config([base])).namespaceViews == nil)
        // `*` written out, and a rule in the root namespace, change nothing either.
        let written = base.replacingOccurrences(of: "  hosts: [payments]\n", with: "  hosts: [payments]\n  exportTo: ['*']\n")
        #expect(written != base)
        let rootRule = Self.destinationRule(namespace: "istio-system", balancer: "{simple: RANDOM}", exportTo: nil)
            .replacingOccurrences(of: "payments.shop", with: "ledger.billing")
        #expect(try Self.config([written, rootRule]).dependsOnNamespace == false)
        // Any of these makes namespaces see the mesh differently.
        let restricting = [
            base.replacingOccurrences(of: "  hosts: [payments]\n  http:", with: "  hosts: [payments]\n  exportTo: ['.']\n  http:"),
            base + "\n---\n" + Self.meshConfig("defaultServiceExportTo: ['.']"),
            base + "\n---\n" + Self.destinationRule(namespace: "web", balancer: "{simple: RANDOM}", exportTo: nil)
                .replacingOccurrences(of: "payments.shop.svc.cluster.local", with: "ledger.billing.svc.cluster.local"),
            base + "\n---\n" + Self.meshConfig("defaultDestinationRuleExportTo: ['.']"),
        ]
        for documents in restricting {
            #expect(try ProxyConfigGenerator().resources(for: Self.config([documents])).namespaceViews != nil, "\(documents)")
        }
    }

    /// The store makes a namespace's resources on its first proxy's request and keeps them for the
    /// generation; a change to an `exportTo` moves the versions of what it changes.
    @Test func theStoreSendsEachNamespaceItsOwnViewAndMovesVersionsWhenExportToChanges() throws {
        func node(_ namespace: String) -> Envoy_Config_Core_V3_Node {
            var node = Envoy_Config_Core_V3_Node()
            node.id = "sidecar~192.0.2.40~client.\(namespace)~\(namespace).svc.cluster.local"
            return node
        }
        func clusters(_ store: MeshSnapshotStore, _ namespace: String) -> [String] {
            store.snapshot(for: node(namespace)).types[.cluster]?.resources.map(\.name).filter { $0.hasPrefix("outbound|") } ?? []
        }
        let store = MeshSnapshotStore()
        let local = Self.service("local", octet: 2, exportTo: "['.']")
        store.update(try ProxyConfigGenerator().resources(for: Self.config([local, Self.service("everyone", octet: 1)])))
        #expect(clusters(store, "shop") == ["outbound|9002||local.shop.svc.cluster.local", "outbound|9001||everyone.shop.svc.cluster.local"])
        #expect(clusters(store, "web") == ["outbound|9001||everyone.shop.svc.cluster.local"])
        let versions = store.snapshot(for: node("web")).types.mapValues(\.version)
        // Exported to web instead: web's sidecars get it, with new versions.
        let changed = store.update(try ProxyConfigGenerator().resources(for: Self.config([
            Self.service("local", octet: 2, exportTo: "[web]"), Self.service("everyone", octet: 1)])))
        #expect(Set(changed).isSuperset(of: [.cluster, .endpoint, .listener, .route, .nameTable]))
        #expect(clusters(store, "web") == ["outbound|9002||local.shop.svc.cluster.local", "outbound|9001||everyone.shop.svc.cluster.local"])
        #expect(clusters(store, "shop") == ["outbound|9001||everyone.shop.svc.cluster.local"])
        #expect(store.snapshot(for: node("web")).types[.cluster]?.version != versions[.cluster])
        // The same again: nothing to push.
        #expect(store.update(try ProxyConfigGenerator().resources(for: Self.config([
            Self.service("local", octet: 2, exportTo: "[web]"), Self.service("everyone", octet: 1)]))).isEmpty)
    }

    @Test func aDelegateNotExportedToTheRootsNamespaceIsLeftOut() throws {
        let root = HTTPDocuments.virtualService("      - delegate: {name: team, namespace: team}")
        let delegate = """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: team, namespace: team}
            spec:
              http: [{route: [{destination: {host: payments.shop.svc.cluster.local, subset: v2}}]}]
            """
        let exported = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([root, delegate + "\n  exportTo: [shop]"]))])
        #expect(try #require(exported.config).virtualServices.first?.http.count == 1)
        let kept = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([root, delegate + "\n  exportTo: ['.']"]))])
        #expect(try #require(kept.config).virtualServices.first?.http.isEmpty == true)
        #expect(kept.warnings.contains { $0.hasSuffix("VirtualService shop/payments: spec.http[0].delegate: VirtualService team/team is not exported to namespace shop (its exportTo [\".\"]): this route is left out, as istiod leaves it") },
                "\(kept.warnings)")
    }

    @Test(arguments: [
        (service("local", octet: 2, exportTo: "['~', web]"),
         "ServiceEntry shop/local: spec.exportTo: \"~\" (no namespace) cannot be listed with other entries"),
        (service("local", octet: 2, exportTo: "['']"),
         "ServiceEntry shop/local: spec.exportTo[0]: \"\" is not \".\", \"*\", \"~\" or a namespace name (a DNS-1123 label)"),
        (service("local", octet: 2, exportTo: "[Web]"),
         "ServiceEntry shop/local: spec.exportTo[0]: \"Web\" is not \".\", \"*\", \"~\" or a namespace name (a DNS-1123 label)"),
        (service("local", octet: 2, exportTo: "['.', shop]"),
         "ServiceEntry shop/local: spec.exportTo[1]: \".\" and \"shop\" (the resource's own namespace) are the same entry, listed twice"),
        (HTTPDocuments.virtualService(toV2) + "\n  exportTo: ['~']",
         "VirtualService shop/payments: spec.exportTo[0]: \"~\" (no namespace) is allowed on ServiceEntries only, as Istio validates exportTo"),
        (HTTPDocuments.virtualService(toV2) + "\n  exportTo: ['*', web]",
         "VirtualService shop/payments: spec.exportTo: \"*\" (every namespace) cannot be listed with other entries"),
        (HTTPDocuments.virtualService(toV2) + "\n  exportTo: ['-web']",
         "VirtualService shop/payments: spec.exportTo[0]: \"-web\" is not \".\", \"*\" or a namespace name (a DNS-1123 label)"),
        (destinationRule(namespace: "web", balancer: "{simple: RANDOM}", exportTo: "[shop, shop]"),
         "DestinationRule web/payments: spec.exportTo[1]: \"shop\" is listed twice"),
        (destinationRule(namespace: "web", balancer: "{simple: RANDOM}", exportTo: "[shop]") + "\n  workloadSelector: {matchLabels: {app: web}}",
         "DestinationRule web/payments: spec.exportTo: a DestinationRule with a workloadSelector is exported to its own namespace only (\".\"), as Istio validates it"),
        (meshConfig("defaultServiceExportTo: ['.', 'a.b']"),
         "ConfigMap istio-system/istio: data.mesh.defaultServiceExportTo[1]: \"a.b\" is not \".\", \"*\", \"~\" or a namespace name (a DNS-1123 label)"),
    ])
    func exportToIsCheckedAsIstioChecksIt(document: String, message: String) {
        let reading = MeshConfigReader.read([("base.yaml", HTTPDocuments.mesh()), ("bad.yaml", document)])
        #expect(reading.config == nil)
        #expect(reading.problems.map(\.description) == ["bad.yaml: document 1 (line 1): " + message])
    }

    @Test func whatIsAcceptedButNotActedOnIsSaid() throws {
        let rule = Self.destinationRule(namespace: "web", balancer: "{simple: RANDOM}", exportTo: "['.']") + "\n  workloadSelector: {matchLabels: {app: web}}"
        let gatewayBound = HTTPDocuments.virtualService(Self.toV2).replacingOccurrences(of: "  hosts: [payments]\n", with: "  hosts: [payments]\n  gateways: [mesh, shop/ingress]\n")
            + "\n  exportTo: ['.']"
        let reading = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([rule, gatewayBound, Self.meshConfig("defaultDestinationRuleExportTo: [web]")]))])
        #expect(reading.config != nil, "\(reading.problems)")
        // Without exportTo, a rule with a workloadSelector stays in its namespace, as istiod keeps it.
        let unexported = rule.replacingOccurrences(of: "  exportTo: ['.']\n", with: "")
        #expect(unexported != rule)
        let selecting = MeshConfigReader.read([("mesh.yaml", HTTPDocuments.mesh([unexported]))])
        #expect(try #require(selecting.config).destinationRules.first { $0.namespace == "web" }?.exportTo == ExportTo(["."]))
        for suffix in ["DestinationRule web/payments: spec.workloadSelector: not acted on: the rule applies to every proxy it is exported to, not only the workloads selected",
                       "ConfigMap istio-system/istio: data.mesh.defaultDestinationRuleExportTo: [\"web\"] acts as [\"*\"]: istiod honours only \".\" in this default (a DestinationRule without exportTo is otherwise exported everywhere)"] {
            #expect(reading.warnings.contains { $0.hasSuffix(suffix) }, "\(suffix)\n\(reading.warnings)")
        }
        // A gateway-bound VirtualService's exportTo is acted on for gateways too: nothing to say.
        #expect(!reading.warnings.contains { $0.contains("VirtualService shop/payments: spec.exportTo") }, "\(reading.warnings)")
    }
}
