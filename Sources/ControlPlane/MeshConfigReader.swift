import Configuration
import FoundationEssentials

/// Something wrong with the configuration, said with where: file, document, line, resource and field.
public struct MeshConfigProblem: Error, Sendable, Equatable, CustomStringConvertible {
    public var origin: String
    public var resource: String?
    public var field: String
    public var message: String

    public var description: String {
        [origin, resource, field.isEmpty ? nil : field].compactMap { $0 }.joined(separator: ": ") + ": " + message
    }
}

/// The result of reading a directory: the configuration if it is valid, else every problem found.
public struct MeshConfigReading: Sendable {
    public var config: MeshConfig?
    public var problems: [MeshConfigProblem]
    /// Fields and kinds that were ignored.
    public var warnings: [String]
    public var files: Int
}

/// Reads Istio-style YAML (multi-document files, as `kubectl apply -f` takes them) into a
/// ``MeshConfig``, checking each resource and then the references between them.
public enum MeshConfigReader {
    /// Istio kinds Capstan does not act on yet: read, reported, not refused.
    static let ignoredKinds: Set<String> = ["Sidecar", "Telemetry", "EnvoyFilter",
                                            "ProxyConfig", "WorkloadGroup"]

    /// Every `*.yaml`, `*.yml` and `*.json` file directly in `directory` (hidden ones, such as a
    /// ConfigMap volume's `..data`, skipped), in name order.
    public static func read(directory: String) -> MeshConfigReading {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            return MeshConfigReading(config: nil, problems: [MeshConfigProblem(origin: directory, resource: nil, field: "",
                                                                               message: "cannot read the directory: \(error)")],
                                     warnings: [], files: 0)
        }
        var sources: [(file: String, text: String)] = []
        var problems: [MeshConfigProblem] = []
        for name in names.sorted() where !name.hasPrefix(".") && [".yaml", ".yml", ".json"].contains(where: name.hasSuffix) {
            let path = directory.hasSuffix("/") ? directory + name : "\(directory)/\(name)"
            guard let data = FileManager.default.contents(atPath: path) else {
                problems.append(MeshConfigProblem(origin: path, resource: nil, field: "", message: "cannot read the file"))
                continue
            }
            sources.append((path, String(decoding: data, as: UTF8.self)))
        }
        var reading = read(sources)
        reading.problems = problems + reading.problems
        if !problems.isEmpty { reading.config = nil }
        return reading
    }

    /// Reads documents from named texts (a file name each).
    public static func read(_ sources: [(file: String, text: String)]) -> MeshConfigReading {
        var builder = Builder()
        for (file, text) in sources {
            let documents: [YAMLDocument]
            do throws(YAMLError) {
                documents = try YAMLDocument.parseAll(text)
            } catch {
                builder.problems.append(MeshConfigProblem(origin: "\(file): line \(error.line)", resource: nil, field: "",
                                                          message: "not valid YAML: column \(error.column): \(error.message)"))
                continue
            }
            for document in documents { builder.add(document, file: file) }
        }
        builder.checkReferences()
        return MeshConfigReading(config: builder.problems.isEmpty ? builder.config : nil, problems: builder.problems,
                                 warnings: builder.warnings, files: sources.count)
    }
}

extension MeshConfigReader {
    /// A `gateways` entry as Istio resolves it: `mesh`, `namespace/name`, a bare name in the
    /// VirtualService's namespace, or the older `name.namespace.svc.cluster.local`.
    static func gatewayReference(_ text: String, namespace: String, path: String) throws(ConfigError) -> String {
        if text == VirtualService.meshGateway { return text }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var gatewayNamespace = namespace
        var name = text
        if parts.count == 2 {
            gatewayNamespace = parts[0]
            name = parts[1]
        } else if parts.count == 1, text.contains(".") {
            let labels = text.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            gatewayNamespace = labels[1]
            name = labels[0]
        } else if parts.count != 1 {
            throw ConfigError(path: path, message: "\"\(text)\" is not a gateway (mesh, namespace/name or name)")
        }
        guard GatewaySecrets.isSecretName(gatewayNamespace), !gatewayNamespace.contains("."), GatewaySecrets.isSecretName(name) else {
            throw ConfigError(path: path, message: "\"\(text)\" is not a gateway (mesh, namespace/name or name)")
        }
        return "\(gatewayNamespace)/\(name)"
    }

    /// Labels (`matchLabels`, a workload's `labels`): numbers and booleans read as their text.
    static func labels(_ reader: ConfigReader) throws(ConfigError) -> [String: String] {
        var labels: [String: String] = [:]
        for (key, value) in try reader.fields() {
            switch value {
            case .string(let text): labels[key] = text
            case .number, .bool: labels[key] = value.jsonText()
            default: throw ConfigError(path: "\(reader.path).\(key)", message: "a label value must be a string")
            }
        }
        return labels
    }
}

/// Collects resources and problems document by document.
extension MeshConfigReader {
    /// A `localityLbSetting` with Istio's validation: a DestinationRule's, or the mesh config's.
    static func localityLoadBalancing(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> LocalityLoadBalancing {
        try Builder.localityLoadBalancing(reader, warnings: &warnings)
    }
}

private struct Builder {
    var config = MeshConfig()
    var problems: [MeshConfigProblem] = []
    var warnings: [String] = []
    private var seen: Set<String> = []

    mutating func add(_ document: YAMLDocument, file: String) {
        let root = ConfigReader(document.value)
        var origin = ResourceOrigin(file: file, document: document.index, line: document.line, kind: "", name: "")
        do throws(ConfigError) {
            let apiVersion = try root.required("apiVersion").string()
            let kind = try root.required("kind").string()
            let metadata = try root.required("metadata")
            let name = try metadata.required("name").string()
            guard Self.isDNSLabel(name) else { throw ConfigError(path: "metadata.name", message: "\"\(name)\" is not a DNS-1123 name") }
            let namespace = try metadata.optional("namespace")?.string() ?? "default"
            guard Self.isDNSLabel(namespace) else {
                throw ConfigError(path: "metadata.namespace", message: "\"\(namespace)\" is not a DNS-1123 label")
            }
            origin.kind = kind
            origin.name = "\(namespace)/\(name)"
            if apiVersion == "v1" && kind == "ConfigMap" {
                try addConfigMap(root, name: name, origin: origin)
                return
            }
            guard apiVersion.hasPrefix("networking.istio.io/") || apiVersion.hasPrefix("security.istio.io/") else {
                throw ConfigError(path: "apiVersion", message: "\"\(apiVersion)\" is not an Istio networking or security API")
            }
            guard seen.insert("\(kind)/\(namespace)/\(name)").inserted else {
                throw ConfigError(path: "metadata.name", message: "\(kind) \(namespace)/\(name) is defined twice")
            }
            var resourceWarnings: [String] = []
            try root.ignoringUnknown(["apiVersion", "kind", "metadata", "spec", "status"], warnings: &resourceWarnings)
            let spec = try root.required("spec")
            switch kind {
            case "ServiceEntry":
                config.serviceEntries.append(try Self.serviceEntry(spec, origin: origin, namespace: namespace, warnings: &resourceWarnings))
            case "WorkloadEntry":
                config.workloadEntries.append(WorkloadEntry(origin: origin, namespace: namespace,
                                                            endpoint: try Self.endpoint(spec, warnings: &resourceWarnings)))
            case "VirtualService":
                let service = try Self.virtualService(spec, origin: origin, namespace: namespace, warnings: &resourceWarnings)
                if service.hosts.isEmpty { config.delegateVirtualServices.append(service) } else { config.virtualServices.append(service) }
            case "DestinationRule":
                config.destinationRules.append(try Self.destinationRule(spec, origin: origin, namespace: namespace, warnings: &resourceWarnings))
            case "PeerAuthentication":
                guard ["security.istio.io/v1", "security.istio.io/v1beta1"].contains(apiVersion) else {
                    throw ConfigError(path: "apiVersion", message: "\"\(apiVersion)\" does not serve PeerAuthentication (security.istio.io/v1, security.istio.io/v1beta1)")
                }
                config.peerAuthentications.append(try Self.peerAuthentication(spec, origin: origin, namespace: namespace,
                                                                              warnings: &resourceWarnings))
            case "AuthorizationPolicy":
                guard ["security.istio.io/v1", "security.istio.io/v1beta1"].contains(apiVersion) else {
                    throw ConfigError(path: "apiVersion", message: "\"\(apiVersion)\" does not serve AuthorizationPolicy (security.istio.io/v1, security.istio.io/v1beta1)")
                }
                config.authorizationPolicies.append(try AuthorizationPolicyReader.read(spec, metadata: metadata, origin: origin, namespace: namespace,
                                                                                       name: name, warnings: &resourceWarnings))
            case "Gateway":
                config.gateways.append(try GatewayReader.read(spec, origin: origin, namespace: namespace, name: name, warnings: &resourceWarnings))
            case "RequestAuthentication":
                guard ["security.istio.io/v1", "security.istio.io/v1beta1"].contains(apiVersion) else {
                    throw ConfigError(path: "apiVersion", message: "\"\(apiVersion)\" does not serve RequestAuthentication (security.istio.io/v1, security.istio.io/v1beta1)")
                }
                config.requestAuthentications.append(try RequestAuthenticationReader.read(spec, origin: origin, namespace: namespace, name: name))
            case let other where MeshConfigReader.ignoredKinds.contains(other):
                resourceWarnings.append("kind \(other) is not acted on by Capstan yet, ignored")
            default:
                throw ConfigError(path: "kind", message: "\"\(kind)\" is not a kind Capstan reads (ServiceEntry, WorkloadEntry, VirtualService, DestinationRule, Gateway, PeerAuthentication, AuthorizationPolicy, RequestAuthentication)")
            }
            warnings += resourceWarnings.map { "\(origin): \(kind) \(origin.name): \($0)" }
        } catch {
            problems.append(MeshConfigProblem(origin: origin.description, resource: origin.kind.isEmpty ? nil : "\(origin.kind) \(origin.name)",
                                              field: error.path, message: error.message))
        }
    }

    /// A ConfigMap: Istio's `istio` one holds the mesh config; any other is not the control plane's.
    private mutating func addConfigMap(_ root: ConfigReader, name: String, origin: ResourceOrigin) throws(ConfigError) {
        guard name == MeshSettingsReader.configMapName else {
            warnings.append("\(origin): ConfigMap \(origin.name): only the \"\(MeshSettingsReader.configMapName)\" ConfigMap (the mesh config) is read, ignored")
            return
        }
        if let earlier = config.mesh.origin {
            throw ConfigError(path: "metadata.name", message: "a second mesh config: the first is \(earlier)")
        }
        var resourceWarnings: [String] = []
        config.mesh = try MeshSettingsReader.read(configMap: root, origin: origin, warnings: &resourceWarnings)
        warnings += resourceWarnings.map { "\(origin): ConfigMap \(origin.name): \($0)" }
    }

    // MARK: Kinds

    static func serviceEntry(_ spec: ConfigReader, origin: ResourceOrigin, namespace: String,
                             warnings: inout [String]) throws(ConfigError) -> ServiceEntry {
        try spec.ignoringUnknown(["hosts", "addresses", "ports", "location", "resolution", "endpoints", "workloadSelector",
                                  "exportTo"], warnings: &warnings)
        let hosts = try strings(spec.required("hosts"), nonEmpty: true).map { MeshConfig.qualified($0, namespace: namespace) }
        let addressesReader = try spec.optional("addresses")
        let addresses = try addressesReader.map { reader throws(ConfigError) in try strings(reader, nonEmpty: false) } ?? []
        for (index, address) in addresses.enumerated() where IPNetwork(address) == nil {
            throw ConfigError(path: "spec.addresses[\(index)]", message: "\"\(address)\" is not an IP address or CIDR")
        }
        var ports: [ServiceEntry.Port] = []
        for port in try spec.required("ports").list() {
            try port.ignoringUnknown(["number", "name", "protocol", "targetPort"], warnings: &warnings)
            let number = try port.required("number").integer(in: 1...65535)
            let name = try port.optional("name")?.string() ?? "port-\(number)"
            let declared = try port.optional("protocol")?.string()
            if let declared, ServiceProtocol(istioName: declared) == nil {
                warnings.append("\(port.path).protocol: \(declared) is not a protocol Istio knows: proxied as TCP")
            }
            let proto = ServiceProtocol.selected(declared: declared, name: name)
            switch proto {
            case .unknown:
                warnings.append("\(port.path): no protocol (neither protocol nor a name such as http-web or tcp-db): sniffed as Istio does (HTTP routed per request, anything else as TCP; a protocol whose server speaks first waits up to 15 s: name such a port tcp-…)")
            case .grpcWeb:
                warnings.append("\(port.path): \(proto.rawValue) is routed as HTTP; gRPC-Web is not translated to gRPC")
            // Istio proxies these as TCP too (its Mongo, MySQL and Redis filters are off by default).
            case .http, .http2, .grpc, .tcp, .https, .tls, .mongo, .mysql, .redis:
                break
            }
            guard !ports.contains(where: { $0.number == number || $0.name == name }) else {
                throw port.fail("port \(number) (\(name)) is listed twice")
            }
            ports.append(.init(number: number, name: name, protocol: proto, targetPort: try port.optional("targetPort")?.integer(in: 1...65535)))
        }
        guard !ports.isEmpty else { throw ConfigError(path: "spec.ports", message: "needs at least one port") }
        let resolution: ServiceEntry.Resolution
        if let reader = try spec.optional("resolution") {
            let text = try reader.string()
            guard let parsed = ServiceEntry.Resolution(rawValue: text) else {
                throw reader.fail("\"\(text)\" is not supported (STATIC, NONE, DNS, DNS_ROUND_ROBIN)")
            }
            resolution = parsed
        } else {
            resolution = .none
        }
        let location = try ServiceEntryReader.location(spec)
        let exportTo = try spec.optional("exportTo").map { field throws(ConfigError) in
            try ExportTo.read(field, namespace: namespace, kind: .serviceEntry)
        } ?? ExportTo()
        var endpoints: [WorkloadEndpoint] = []
        for reader in try spec.optional("endpoints")?.list() ?? [] {
            let endpoint = try endpoint(reader, hostNames: resolution.resolvesNames, warnings: &warnings)
            for (name, _) in endpoint.ports where !ports.contains(where: { $0.name == name }) {
                throw ConfigError(path: "\(reader.path).ports.\(name)", message: "names no port of the service")
            }
            endpoints.append(endpoint)
        }
        let selector = try spec.optional("workloadSelector").map { reader throws(ConfigError) in
            try reader.ignoringUnknown(["labels"], warnings: &warnings)
            return try labels(reader.required("labels"))
        }
        if resolution == .static && endpoints.isEmpty && selector == nil {
            warnings.append("spec: resolution STATIC with no endpoints and no workloadSelector: the service has no endpoints")
        }
        try ServiceEntryReader.checkResolution(resolution, hosts: hosts, endpoints: endpoints, selector: selector, spec: spec)
        if resolution.resolvesNames, let index = endpoints.firstIndex(where: { $0.network != nil }) {
            warnings.append("spec.endpoints[\(index)].network: not acted on for resolution \(resolution.rawValue): the proxy resolves these endpoints itself, so every proxy reaches them directly")
        }
        var entry = ServiceEntry(origin: origin, namespace: namespace, hosts: hosts, addresses: addresses, ports: ports,
                                 resolution: resolution, endpoints: endpoints, workloadSelector: selector)
        entry.location = location
        entry.exportTo = exportTo
        return entry
    }

    /// A ServiceEntry endpoint or a WorkloadEntry spec: the same fields.
    /// `hostNames`: a ServiceEntry's with resolution DNS, whose endpoint addresses may be names the proxy resolves.
    static func endpoint(_ reader: ConfigReader, hostNames: Bool = false, warnings: inout [String]) throws(ConfigError) -> WorkloadEndpoint {
        try reader.ignoringUnknown(["address", "labels", "ports", "serviceAccount", "network", "locality", "weight"], warnings: &warnings)
        let addressReader = try reader.required("address")
        let text = try addressReader.string()
        let address: String
        if let network = IPNetwork(text), network.isSingleAddress {
            address = network.address
        } else if hostNames, ServiceEntryReader.isHostName(text) {
            address = text
        } else {
            throw addressReader.fail(hostNames ? "\"\(text)\" is not an IP address or a host name"
                                               : "\"\(text)\" is not an IP address (names are resolved only for a ServiceEntry with resolution DNS or DNS_ROUND_ROBIN)")
        }
        var ports: [String: Int] = [:]
        if let reader = try reader.optional("ports") {
            for (name, _) in try reader.fields() { ports[name] = try reader.required(name).integer(in: 1...65535) }
        }
        // It becomes a SPIFFE ID path segment (spiffe://TD/ns/NS/sa/ACCOUNT) that peers are checked against.
        let serviceAccount = try reader.optional("serviceAccount").map { account throws(ConfigError) in
            let name = try account.string()
            guard isDNSLabel(name) else { throw account.fail("\"\(name)\" is not a Kubernetes service account name (DNS-1123)") }
            return name
        }
        var endpoint = WorkloadEndpoint(address: address, labels: try reader.optional("labels").map(labels) ?? [:], ports: ports,
                                        serviceAccount: serviceAccount)
        try ServiceEntryReader.readPlacement(reader, into: &endpoint, warnings: &warnings)
        return endpoint
    }

    static func virtualService(_ spec: ConfigReader, origin: ResourceOrigin, namespace: String,
                               warnings: inout [String]) throws(ConfigError) -> VirtualService {
        try spec.ignoringUnknown(["hosts", "gateways", "http", "tcp", "tls", "exportTo"], warnings: &warnings)
        var gateways = [VirtualService.meshGateway]
        if let reader = try spec.optional("gateways") {
            let names = try strings(reader, nonEmpty: false)
            if !names.isEmpty {
                gateways = []
                for (index, name) in names.enumerated() {
                    gateways.append(try MeshConfigReader.gatewayReference(name, namespace: namespace, path: "\(reader.path)[\(index)]"))
                }
            }
        }
        // Without hosts, a delegate: routes other VirtualServices take by `delegate` (Istio's rules for one).
        let hosts = try spec.optional("hosts").map { reader throws(ConfigError) in try strings(reader, nonEmpty: false) }?
            .map { MeshConfig.qualified($0, namespace: namespace) } ?? []
        if hosts.isEmpty {
            for field in ["gateways", "tcp", "tls"] where try spec.optional(field) != nil {
                throw ConfigError(path: "spec.\(field)", message: "is not allowed in a delegate VirtualService (one without hosts): only http routes are delegated")
            }
        }
        var routes: [VirtualService.TCPRoute] = []
        for route in try spec.optional("tcp")?.list() ?? [] {
            try route.ignoringUnknown(["match", "route"], warnings: &warnings)
            var ports: [Int] = []
            var matches: [VirtualService.TCPRoute.Match] = []
            for match in try route.optional("match")?.list() ?? [] {
                try match.ignoringUnknown(["port", "gateways"], warnings: &warnings)
                let port = try match.optional("port").map { reader throws(ConfigError) in try reader.integer(in: 1...65535) }
                if let port { ports.append(port) }
                var names: [String] = []
                if let reader = try match.optional("gateways") {
                    for (index, name) in try strings(reader, nonEmpty: false).enumerated() {
                        names.append(try MeshConfigReader.gatewayReference(name, namespace: namespace, path: "\(reader.path)[\(index)]"))
                    }
                }
                matches.append(.init(port: port, gateways: names))
            }
            let destinations = try route.required("route").list()
            guard !destinations.isEmpty else { throw route.fail("needs at least one route destination") }
            let parsed = try HTTPRouteReader.destinations(destinations, path: "\(route.path).route", namespace: namespace,
                                                          withHeaders: false, warnings: &warnings)
            routes.append(.init(ports: ports, destinations: parsed, matches: matches))
        }
        var http: [VirtualService.HTTPRoute] = []
        for route in try spec.optional("http")?.list() ?? [] {
            let read = try HTTPRouteReader.route(route, namespace: namespace, warnings: &warnings)
            if hosts.isEmpty, case .delegate = read.action {
                throw ConfigError(path: "\(route.path).delegate", message: "a delegate VirtualService (one without hosts) cannot delegate again: Istio delegates one level deep")
            }
            http.append(read)
        }
        if hosts.isEmpty && http.isEmpty { throw ConfigError(path: "spec.hosts", message: "is required (a VirtualService without hosts is a delegate, and needs http routes)") }
        var service = VirtualService(origin: origin, namespace: namespace, hosts: hosts, http: http, tcp: routes, gateways: gateways)
        if let field = try spec.optional("exportTo") {
            service.exportTo = try ExportTo.read(field, namespace: namespace, kind: .virtualService)
        }
        if let list = try spec.optional("tls") {
            for route in try list.list() {
                service.tls.append(try tlsRoute(route, namespace: namespace, warnings: &warnings))
            }
            if !service.tls.isEmpty, gateways.contains(VirtualService.meshGateway) {
                warnings.append("\(list.path): on sidecars (gateway mesh) acted on for HTTPS and TLS services without addresses only (chosen by SNI); services with addresses keep their tcp routes")
            }
        }
        return service
    }

    /// A VirtualService's `tls` route: matches by `sniHosts` (with `port` and `gateways`), and its destinations.
    static func tlsRoute(_ route: ConfigReader, namespace: String, warnings: inout [String]) throws(ConfigError) -> VirtualService.TLSRoute {
        try route.ignoringUnknown(["match", "route"], warnings: &warnings)
        let matchList = try route.required("match").list()
        guard !matchList.isEmpty else { throw route.fail("needs at least one match (with sniHosts)") }
        var matches: [VirtualService.TLSRoute.Match] = []
        for match in matchList {
            try match.ignoringUnknown(["sniHosts", "port", "gateways", "destinationSubnets", "sourceLabels", "sourceNamespace"], warnings: &warnings)
            for field in ["destinationSubnets", "sourceLabels", "sourceNamespace"] where try match.optional(field) != nil {
                throw ConfigError(path: "\(match.path).\(field)", message: "is not supported by Capstan's tls routes (sniHosts, port, gateways)")
            }
            let hostsReader = try match.required("sniHosts")
            var sniHosts: [String] = []
            for (index, host) in try strings(hostsReader, nonEmpty: true).enumerated() {
                let name = host.hasPrefix("*.") ? String(host.dropFirst(2)) : host
                guard host == "*" || (ServiceEntryReader.isHostName(name) && !name.contains("*")) else {
                    throw ConfigError(path: "\(hostsReader.path)[\(index)]", message: "\"\(host)\" is not a server name (a name, *.name or *)")
                }
                sniHosts.append(host.lowercased())
            }
            let port = try match.optional("port").map { reader throws(ConfigError) in try reader.integer(in: 1...65535) }
            var gateways: [String] = []
            if let reader = try match.optional("gateways") {
                for (index, name) in try strings(reader, nonEmpty: false).enumerated() {
                    gateways.append(try MeshConfigReader.gatewayReference(name, namespace: namespace, path: "\(reader.path)[\(index)]"))
                }
            }
            matches.append(.init(sniHosts: sniHosts, port: port, gateways: gateways))
        }
        let destinations = try route.required("route").list()
        guard !destinations.isEmpty else { throw route.fail("needs at least one route destination") }
        let parsed = try HTTPRouteReader.destinations(destinations, path: "\(route.path).route", namespace: namespace,
                                                      withHeaders: false, warnings: &warnings)
        return .init(matches: matches, destinations: parsed)
    }

    static func destinationRule(_ spec: ConfigReader, origin: ResourceOrigin, namespace: String,
                                warnings: inout [String]) throws(ConfigError) -> DestinationRule {
        try spec.ignoringUnknown(["host", "trafficPolicy", "subsets", "exportTo", "workloadSelector"], warnings: &warnings)
        let host = MeshConfig.qualified(try spec.required("host").string(), namespace: namespace)
        let policy = try spec.optional("trafficPolicy").map { reader throws(ConfigError) in try trafficPolicy(reader, warnings: &warnings) }
        var subsets: [DestinationRule.Subset] = []
        for subset in try spec.optional("subsets")?.list() ?? [] {
            try subset.ignoringUnknown(["name", "labels", "trafficPolicy"], warnings: &warnings)
            let name = try subset.required("name").string()
            guard !name.isEmpty, !name.contains("|") else { throw subset.fail("\"\(name)\" is not a subset name") }
            guard !subsets.contains(where: { $0.name == name }) else { throw subset.fail("subset \"\(name)\" is defined twice") }
            subsets.append(.init(name: name, labels: try subset.optional("labels").map(labels) ?? [:],
                                 trafficPolicy: try subset.optional("trafficPolicy").map { reader throws(ConfigError) in
                                     try trafficPolicy(reader, warnings: &warnings)
                                 }))
        }
        let selector = try spec.optional("workloadSelector")
        if let selector {
            warnings.append("\(selector.path): not acted on: the rule applies to every proxy it is exported to, not only the workloads selected")
        }
        var rule = DestinationRule(origin: origin, namespace: namespace, host: host,
                                   trafficPolicy: policy ?? DestinationRule.TrafficPolicy(), subsets: subsets)
        if let field = try spec.optional("exportTo") {
            rule.exportTo = try ExportTo.read(field, namespace: namespace, kind: .destinationRule(workloadSelector: selector != nil))
        }
        // istiod keeps a rule with a workloadSelector to its own namespace, whatever the mesh default.
        if selector != nil, rule.exportTo.isEmpty { rule.exportTo = ExportTo(["."]) }
        return rule
    }

    /// A `trafficPolicy`, or (`portLevel`) one entry of its `portLevelSettings`, whose `port` the caller reads.
    static func trafficPolicy(_ reader: ConfigReader, portLevel: Bool = false,
                              warnings: inout [String]) throws(ConfigError) -> DestinationRule.TrafficPolicy {
        let components: Set<String> = ["loadBalancer", "connectionPool", "tls", "outlierDetection"]
        try reader.ignoringUnknown(components.union(portLevel ? ["port"] : ["portLevelSettings"]), warnings: &warnings)
        var policy = DestinationRule.TrafficPolicy()
        if portLevel, try reader.fields().allSatisfy({ !components.contains($0.key) || $0.value == .null }) {
            throw reader.fail("needs at least one of loadBalancer, connectionPool, outlierDetection and tls, as Istio requires")
        }
        if !portLevel, let settings = try reader.optional("portLevelSettings") {
            for entry in try settings.list() {
                guard let port = try entry.optional("port") else { throw entry.fail("needs a port ({number: N})") }
                try port.ignoringUnknown(["number"], warnings: &warnings)
                guard let field = try port.optional("number") else { throw port.fail("needs a number") }
                let number = try field.integer(in: 1...65535)
                guard policy.portLevelSettings[number] == nil else {
                    throw field.fail("port \(number) has settings twice in this list, which Istio refuses")
                }
                policy.portLevelSettings[number] = try trafficPolicy(entry, portLevel: true, warnings: &warnings)
            }
        }
        if let balancer = try reader.optional("loadBalancer") {
            policy.loadBalancer = try loadBalancer(balancer, warnings: &warnings)
            policy.localityLoadBalancing = try balancer.optional("localityLbSetting").map { setting throws(ConfigError) in
                try localityLoadBalancing(setting, warnings: &warnings)
            }
            policy.warmup = try warmup(balancer, warnings: &warnings)
        }
        if let pool = try reader.optional("connectionPool") {
            policy.connectionPool = try connectionPool(pool, warnings: &warnings)
        }
        policy.outlierDetection = try reader.optional("outlierDetection").map { reader throws(ConfigError) in
            try OutlierDetectionReader.read(reader, warnings: &warnings)
        }
        if let tls = try reader.optional("tls") {
            try tls.ignoringUnknown(["mode", "sni", "subjectAltNames", "caCertificates", "clientCertificate", "privateKey",
                                     "credentialName", "insecureSkipVerify", "caCrl"], warnings: &warnings)
            if let mode = try tls.optional("mode") {
                switch try mode.string() {
                case "DISABLE": policy.tlsMode = .disable
                case "ISTIO_MUTUAL":
                    policy.tlsMode = .istioMutual
                    policy.originatedTLS = try OriginatedTLSReader.readIstioMutual(tls)
                case "SIMPLE":
                    policy.tlsMode = .simple
                    policy.originatedTLS = try OriginatedTLSReader.read(tls, mutual: false)
                case "MUTUAL":
                    policy.tlsMode = .mutual
                    policy.originatedTLS = try OriginatedTLSReader.read(tls, mutual: true)
                case let other: throw mode.fail("\"\(other)\" is not a TLS mode (DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL)")
                }
                if policy.originatedTLS == nil || policy.tlsMode == .istioMutual {
                    try OriginatedTLSReader.warnUnused(tls, mode: policy.tlsMode ?? .disable, warnings: &warnings)
                }
            } else {
                // The proto's zero value: a `tls` without a mode turns auto mTLS off.
                policy.tlsMode = .disable
                warnings.append("\(tls.path): no mode: read as DISABLE (plaintext), as Istio reads it")
            }
        }
        return policy
    }

    /// `loadBalancer.localityLbSetting`, with Istio's validation: `distribute` and `failover` not
    /// together; each `distribute` rule's `to` weights sum to 100; localities are `region/zone/subzone`
    /// with `*` only as a whole last part; `failover` names two different regions (no `/`).
    static func localityLoadBalancing(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> LocalityLoadBalancing {
        try reader.ignoringUnknown(["enabled", "distribute", "failover", "failoverPriority"], warnings: &warnings)
        var setting = LocalityLoadBalancing(enabled: try reader.optional("enabled")?.bool())
        func locality(_ field: ConfigReader) throws(ConfigError) -> String {
            let text = try field.string()
            let parts = text.split(separator: "/", omittingEmptySubsequences: false)
            guard !text.isEmpty, parts.count <= 3, !parts.contains(where: \.isEmpty),
                  parts.dropLast().allSatisfy({ !$0.contains("*") }), parts.last.map({ $0 == "*" || !$0.contains("*") }) ?? false else {
                throw field.fail("\"\(text)\" is not a locality (region, region/zone or region/zone/subzone, * only as a whole last part)")
            }
            return text
        }
        if let distribute = try reader.optional("distribute") {
            for rule in try distribute.list() {
                try rule.ignoringUnknown(["from", "to"], warnings: &warnings)
                guard let fromField = try rule.optional("from") else { throw rule.fail("needs from") }
                let from = try locality(fromField)
                guard let toField = try rule.optional("to") else { throw rule.fail("needs to") }
                var to: [(locality: String, weight: Int)] = []
                for key in try toField.fields().keys.sorted() {
                    let value = try toField.required(key)
                    let weight = try value.integer(in: 1...100)
                    guard !key.isEmpty else { throw value.fail("is not a locality") }
                    to.append((key, weight))
                }
                guard to.reduce(0, { $0 + $1.weight }) == 100 else {
                    throw toField.fail("weights sum to \(to.reduce(0) { $0 + $1.weight }), not 100, as Istio requires")
                }
                setting.distribute.append(.init(from: from, to: to))
            }
        }
        if let failover = try reader.optional("failover") {
            if !setting.distribute.isEmpty { throw failover.fail("cannot be given with distribute, as Istio requires") }
            for rule in try failover.list() {
                try rule.ignoringUnknown(["from", "to"], warnings: &warnings)
                guard let fromField = try rule.optional("from"), let toField = try rule.optional("to") else { throw rule.fail("needs from and to") }
                let from = try fromField.string(), to = try toField.string()
                guard !from.contains("/"), !to.contains("/"), !from.isEmpty, !to.isEmpty else {
                    throw rule.fail("failover names regions only (no /): \"\(from)\" to \"\(to)\"")
                }
                guard from != to else { throw rule.fail("failover from \"\(from)\" to itself: the regions must differ") }
                setting.failover.append((from, to))
            }
        }
        if let priority = try reader.optional("failoverPriority") {
            if !setting.distribute.isEmpty { throw priority.fail("cannot be given with distribute") }
            for label in try priority.list() {
                let key = try label.string()
                // Istio's `key=value` form (a value given in the rule instead of the proxy's) is refused.
                guard !key.isEmpty, !key.contains("=") else { throw label.fail("\"\(key)\" is not a label key (key=value is not supported)") }
                setting.failoverPriority.append(key)
            }
        }
        return setting
    }

    /// `loadBalancer.warmup` (`duration`, `aggression`, `minimumPercent`), else the older
    /// `warmupDurationSecs`, as istiod prefers them; only with a ROUND_ROBIN or LEAST_REQUEST policy (or
    /// none), where istiod sets Envoy's slow start.
    static func warmup(_ balancer: ConfigReader, warnings: inout [String]) throws(ConfigError) -> DestinationRule.Warmup? {
        var result: DestinationRule.Warmup?
        if let warmup = try balancer.optional("warmup") {
            try warmup.ignoringUnknown(["duration", "aggression", "minimumPercent"], warnings: &warnings)
            guard let field = try warmup.optional("duration") else { throw warmup.fail("needs a duration") }
            let duration = try field.goDuration()
            guard duration > .zero else { throw field.fail("must be above 0") }
            var aggression = 1.0
            if let given = try warmup.optional("aggression") {
                guard case .number(let value) = given.value else { throw given.fail("expected a number, found \(given.value.kind)") }
                // Envoy would take a value not above 0 as 1.0: refused rather than changed.
                guard value > 0 else { throw given.fail("\(value) must be above 0") }
                aggression = value
            }
            var minimum = 10.0
            if let given = try warmup.optional("minimumPercent") {
                guard case .number(let value) = given.value else { throw given.fail("expected a number, found \(given.value.kind)") }
                guard (0...100).contains(value) else { throw given.fail("\(value) is out of range 0-100") }
                minimum = value
            }
            result = .init(duration: duration, aggression: aggression, minimumPercent: minimum)
        } else if let field = try balancer.optional("warmupDurationSecs") {
            let duration = try field.goDuration()
            guard duration > .zero else { throw field.fail("must be above 0") }
            result = .init(duration: duration, aggression: nil, minimumPercent: nil)
        }
        if result != nil, try balancer.optional("consistentHash") != nil {
            warnings.append("\(balancer.path): a warmup with consistentHash: istiod sets no slow start on RING_HASH or MAGLEV clusters: not acted on")
            return nil
        }
        if result != nil, let simple = try balancer.optional("simple"), try simple.string() == "RANDOM" {
            warnings.append("\(balancer.path): a warmup with simple RANDOM: istiod sets no slow start on RANDOM clusters: not acted on")
            return nil
        }
        return result
    }

    /// `loadBalancer`: `simple`, or `consistentHash` with one hash key and its ring or Maglev table
    /// (`localityLbSetting` is read by ``localityLoadBalancing(_:warnings:)``, `warmup` and
    /// `warmupDurationSecs` by ``warmup(_:warnings:)``).
    static func loadBalancer(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> DestinationRule.LoadBalancer? {
        try reader.ignoringUnknown(["simple", "consistentHash", "localityLbSetting", "warmup", "warmupDurationSecs"], warnings: &warnings)
        if let simple = try reader.optional("simple") {
            if try reader.optional("consistentHash") != nil { throw simple.fail("cannot be given with consistentHash") }
            switch try simple.string() {
            case "ROUND_ROBIN": return .simple("ROUND_ROBIN")
            case "UNSPECIFIED": return .simple("UNSPECIFIED")
            case "LEAST_REQUEST", "LEAST_CONN": return .simple("LEAST_REQUEST")
            case "RANDOM": return .simple("RANDOM")
            case let other: throw simple.fail("\"\(other)\" is not supported (ROUND_ROBIN, LEAST_REQUEST, LEAST_CONN, RANDOM)")
            }
        }
        guard let hash = try reader.optional("consistentHash") else { return nil }
        try hash.ignoringUnknown(["httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName", "ringHash", "maglev",
                                  "minimumRingSize"], warnings: &warnings)
        var keys: [DestinationRule.ConsistentHash.Key] = []
        if let header = try hash.optional("httpHeaderName") { keys.append(.header(try header.string())) }
        if let cookie = try hash.optional("httpCookie") {
            try cookie.ignoringUnknown(["name", "path", "ttl"], warnings: &warnings)
            guard let name = try cookie.optional("name")?.string(), !name.isEmpty else { throw cookie.fail("needs a name") }
            keys.append(.cookie(name: name, path: try cookie.optional("path")?.string(), ttl: try cookie.optional("ttl")?.goDuration()))
        }
        if let source = try hash.optional("useSourceIp"), try source.bool() { keys.append(.sourceIP) }
        if let parameter = try hash.optional("httpQueryParameterName") { keys.append(.queryParameter(try parameter.string())) }
        guard keys.count == 1, let key = keys.first else {
            throw hash.fail("needs exactly one of httpHeaderName, httpCookie, useSourceIp and httpQueryParameterName")
        }
        var table = DestinationRule.ConsistentHash.Table.ring(minimumSize: nil)
        if let size = try hash.optional("minimumRingSize") { table = .ring(minimumSize: try size.integer(in: 1...8_388_608)) }
        if let ring = try hash.optional("ringHash") {
            try ring.ignoringUnknown(["minimumRingSize"], warnings: &warnings)
            table = .ring(minimumSize: try ring.optional("minimumRingSize")?.integer(in: 1...8_388_608))
        }
        if let maglev = try hash.optional("maglev") {
            if try hash.optional("ringHash") != nil { throw maglev.fail("cannot be given with ringHash") }
            try maglev.ignoringUnknown(["tableSize"], warnings: &warnings)
            var size: Int?
            if let field = try maglev.optional("tableSize") {
                let value = try field.integer(in: 2...5_000_011)
                let prime = (2..<value).prefix(while: { $0 * $0 <= value }).allSatisfy { value % $0 != 0 }
                guard prime else {
                    throw field.fail("\(value) is not a prime (Envoy's Maglev table size)")
                }
                size = value
            }
            table = .maglev(tableSize: size)
        }
        return .consistentHash(.init(key: key, table: table))
    }

    /// `connectionPool`, with Istio's validation: counts are 0 (unset) or more, durations positive.
    static func connectionPool(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> DestinationRule.ConnectionPool {
        try reader.ignoringUnknown(["tcp", "http"], warnings: &warnings)
        var pool = DestinationRule.ConnectionPool()
        func count(_ reader: ConfigReader, _ key: String) throws(ConfigError) -> Int? {
            guard let value = try reader.optional(key)?.integer(in: 0...Int(Int32.max)) else { return nil }
            return value == 0 ? nil : value
        }
        func duration(_ reader: ConfigReader, _ key: String) throws(ConfigError) -> Duration? {
            guard let field = try reader.optional(key) else { return nil }
            let value = try field.goDuration()
            guard value > .zero else { throw field.fail("must be above 0") }
            return value
        }
        if let http = try reader.optional("http") {
            // useClientProtocol and maxConcurrentStreams are warned as ignored.
            try http.ignoringUnknown(["h2UpgradePolicy", "http1MaxPendingRequests", "http2MaxRequests", "maxRequestsPerConnection",
                                      "maxRetries", "idleTimeout"], warnings: &warnings)
            if let upgrade = try http.optional("h2UpgradePolicy") {
                switch try upgrade.string() {
                case "UPGRADE": pool.http2Upgrade = true
                case "DO_NOT_UPGRADE": pool.http2Upgrade = false
                case "DEFAULT": break
                case let other: throw upgrade.fail("\"\(other)\" is not an h2UpgradePolicy (DEFAULT, DO_NOT_UPGRADE, UPGRADE)")
                }
            }
            pool.http1MaxPendingRequests = try count(http, "http1MaxPendingRequests")
            pool.http2MaxRequests = try count(http, "http2MaxRequests")
            pool.maxRequestsPerConnection = try count(http, "maxRequestsPerConnection")
            pool.maxRetries = try count(http, "maxRetries")
            pool.idleTimeout = try duration(http, "idleTimeout")
        }
        if let tcp = try reader.optional("tcp") {
            try tcp.ignoringUnknown(["maxConnections", "connectTimeout", "maxConnectionDuration", "idleTimeout", "tcpKeepalive"],
                                    warnings: &warnings)
            pool.maxConnections = try count(tcp, "maxConnections")
            pool.connectTimeout = try duration(tcp, "connectTimeout")
            pool.maxConnectionDuration = try duration(tcp, "maxConnectionDuration")
            pool.tcpIdleTimeout = try duration(tcp, "idleTimeout")
            pool.tcpKeepalive = try tcp.optional("tcpKeepalive").map { reader throws(ConfigError) in
                try tcpKeepalive(reader, warnings: &warnings)
            }
        }
        return pool
    }

    /// `tcp.tcpKeepalive`. Values are bounded by what Linux takes (TCP_KEEPCNT up to 127, TCP_KEEPIDLE
    /// and TCP_KEEPINTVL 1 to 32,767 s), so the proxy can set every accepted one; Envoy takes whole
    /// seconds, so a fraction is dropped, with a warning.
    static func tcpKeepalive(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> DestinationRule.TCPKeepalive {
        try reader.ignoringUnknown(["probes", "time", "interval"], warnings: &warnings)
        var keepalive = DestinationRule.TCPKeepalive()
        if let probes = try reader.optional("probes")?.integer(in: 0...127), probes > 0 { keepalive.probes = probes }
        func seconds(_ key: String) throws(ConfigError) -> Duration? {
            guard let field = try reader.optional(key) else { return nil }
            let value = try field.goDuration()
            guard value >= .seconds(1), value <= .seconds(32_767) else {
                throw field.fail("must be 1s to 32767s (Linux's range for keepalive timing; Envoy takes whole seconds)")
            }
            if value != .seconds(value.components.seconds) {
                warnings.append("\(field.path): Envoy takes whole seconds: \(value.components.seconds)s is used")
            }
            return .seconds(value.components.seconds)
        }
        keepalive.time = try seconds("time")
        keepalive.interval = try seconds("interval")
        return keepalive
    }

    static func peerAuthentication(_ spec: ConfigReader, origin: ResourceOrigin, namespace: String,
                                   warnings: inout [String]) throws(ConfigError) -> PeerAuthentication {
        try spec.ignoringUnknown(["selector", "mtls", "portLevelMtls"], warnings: &warnings)
        var selector: [String: String]?
        if let reader = try spec.optional("selector") {
            try reader.ignoringUnknown(["matchLabels"], warnings: &warnings)
            // Istio reads an empty selector as none: the policy covers the namespace (or the mesh).
            if let matchLabels = try reader.optional("matchLabels").map(labels), !matchLabels.isEmpty { selector = matchLabels }
        }
        let mode = try spec.optional("mtls").map { reader throws(ConfigError) in try mutualTLSMode(reader, warnings: &warnings) } ?? nil
        var portLevelModes: [Int: PeerAuthentication.Mode] = [:]
        if let reader = try spec.optional("portLevelMtls") {
            guard selector != nil else {
                throw reader.fail("needs spec.selector.matchLabels: Istio applies port-level mTLS to selected workloads only, not to a namespace or the mesh")
            }
            for (key, _) in try reader.fields().sorted(by: { $0.key < $1.key }) {
                let entry = try reader.required(key)
                guard let port = Int(key), (1...65535).contains(port) else { throw entry.fail("\"\(key)\" is not a port number 1-65535") }
                portLevelModes[port] = try mutualTLSMode(entry, warnings: &warnings)
            }
        }
        return PeerAuthentication(origin: origin, namespace: namespace, selector: selector, mode: mode, portLevelModes: portLevelModes)
    }

    /// `{mode: STRICT}`; nil for `UNSET` or no mode, which inherit.
    static func mutualTLSMode(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> PeerAuthentication.Mode? {
        try reader.ignoringUnknown(["mode"], warnings: &warnings)
        guard let field = try reader.optional("mode") else { return nil }
        let text = try field.string()
        if text == "UNSET" { return nil }
        guard let mode = PeerAuthentication.Mode(rawValue: text) else {
            throw field.fail("\"\(text)\" is not a mutual TLS mode (UNSET, DISABLE, PERMISSIVE, STRICT)")
        }
        return mode
    }

    // MARK: References between resources

    mutating func checkReferences() {
        var owners: [String: ResourceOrigin] = [:]
        // Looked up by host once, rather than scanned for each destination (a mesh of 1,000 services
        // has 2,000 destinations).
        var entryByHost: [String: Int] = [:]
        for (position, entry) in config.serviceEntries.enumerated() {
            for host in entry.hosts {
                if let other = owners[host] {
                    problems.append(entry.origin.problem("spec.hosts", "host \(host) is also defined by ServiceEntry \(other.name) (\(other))"))
                }
                owners[host] = entry.origin
                if entryByHost[host] == nil { entryByHost[host] = position }
            }
        }
        var subsetsByHost: [String: Set<String>] = [:]
        for rule in config.destinationRules { subsetsByHost[rule.host, default: []].formUnion(rule.subsets.map(\.name)) }
        for service in config.virtualServices + config.delegateVirtualServices {
            // Every destination the service names, with the field that names it: its routes' and its mirrors'.
            var named: [(field: String, destination: VirtualService.Destination, tcp: Bool)] = []
            for (routeIndex, route) in service.tcp.enumerated() {
                for (index, destination) in route.destinations.enumerated() {
                    named.append(("spec.tcp[\(routeIndex)].route[\(index)].destination", destination, true))
                }
            }
            for (routeIndex, route) in service.tls.enumerated() {
                for (index, destination) in route.destinations.enumerated() {
                    named.append(("spec.tls[\(routeIndex)].route[\(index)].destination", destination, true))
                }
            }
            for (routeIndex, route) in service.http.enumerated() {
                if case .route(let destinations) = route.action {
                    for (index, destination) in destinations.enumerated() {
                        named.append(("spec.http[\(routeIndex)].route[\(index)].destination", destination, false))
                    }
                }
                for mirror in route.mirrors { named.append(("spec.http[\(routeIndex)].\(mirror.field)", mirror.destination, false)) }
            }
            for (field, destination, tcp) in named {
                guard let position = entryByHost[destination.host] else {
                    problems.append(service.origin.problem("\(field).host", "\(destination.host) is not defined by any ServiceEntry"))
                    continue
                }
                let ports = config.serviceEntries[position].ports
                if let port = destination.port, !ports.contains(where: { $0.number == port }) {
                    problems.append(service.origin.problem("\(field).port.number", "\(destination.host) has no port \(port)"))
                }
                // An http route's destination without a port takes the port the request came to (Istio's rule).
                if tcp && destination.port == nil && ports.count > 1 {
                    problems.append(service.origin.problem("\(field).port", "\(destination.host) has several ports: say which"))
                }
                if let subset = destination.subset, subsetsByHost[destination.host]?.contains(subset) != true {
                    problems.append(service.origin.problem("\(field).subset", "no DestinationRule for \(destination.host) defines subset \"\(subset)\""))
                }
            }
        }
        mergeDelegates()
        for service in config.virtualServices + config.delegateVirtualServices { checkHTTPRoutes(service, entryByHost: entryByHost) }
        // One rule per host and namespace: rules in different namespaces are chosen between per proxy
        // namespace, as istiod chooses (``MeshVisibility``); istiod's merging of one namespace's rules is not done.
        var ruled: [String: ResourceOrigin] = [:]
        for rule in config.destinationRules {
            let key = "\(rule.namespace)/\(rule.host)"
            if let other = ruled[key] {
                problems.append(rule.origin.problem("spec.host", "\(rule.host) already has DestinationRule \(other.name) (\(other)) in namespace \(rule.namespace)"))
            }
            ruled[key] = rule.origin
            // Istio ignores settings for a port the service does not have: said, not silent.
            guard let entry = config.serviceEntries.first(where: { $0.hosts.contains(rule.host) }) else { continue }
            let policies = [("spec.trafficPolicy", rule.trafficPolicy)]
                + rule.subsets.enumerated().compactMap { index, subset in subset.trafficPolicy.map { ("spec.subsets[\(index)].trafficPolicy", $0) } }
            for (field, policy) in policies {
                for port in policy.portLevelSettings.keys.sorted() where !entry.ports.contains(where: { $0.number == port }) {
                    warnings.append("\(rule.origin): DestinationRule \(rule.origin.name): \(field).portLevelSettings: \(rule.host) has no port \(port): these settings apply to nothing")
                }
            }
        }
        checkPeerAuthentications()
        checkAuthorizationPolicies()
        checkRequestAuthentications()
        checkGateways()
        // Networks without gateways change nothing (istiod's multi-network is off): said, not silent.
        if !config.mesh.networks.isMultiNetwork {
            let endpoints = config.serviceEntries.filter { !$0.resolution.resolvesNames }.flatMap(\.endpoints) + config.workloadEntries.map(\.endpoint)
            if let named = endpoints.first(where: { $0.network != nil }) {
                warnings.append("endpoint \(named.address): network \"\(named.network ?? "")\" has no effect: the mesh config's meshNetworks names no gateway, so every proxy reaches every endpoint directly (as istiod)")
            }
        }
    }

    /// Each delegating route replaced by its delegate's routes (``VirtualServiceDelegation``). A delegate
    /// that is not defined, a delegate route that conflicts with its root route, and a delegate no route
    /// takes are warnings, as istiod leaves them out.
    mutating func mergeDelegates() {
        var delegates: [String: VirtualService] = [:]
        for delegate in config.delegateVirtualServices {
            let key = delegate.origin.name  // namespace/name
            if let other = delegates[key] {
                problems.append(delegate.origin.problem("metadata.name", "VirtualService \(key) is also defined in \(other.origin)"))
            }
            delegates[key] = delegate
        }
        var taken: Set<String> = []
        for serviceIndex in config.virtualServices.indices {
            let service = config.virtualServices[serviceIndex]
            guard service.http.contains(where: { if case .delegate = $0.action { true } else { false } }) else { continue }
            var routes: [VirtualService.HTTPRoute] = []
            for (index, route) in service.http.enumerated() {
                guard case .delegate(let name, let namespace) = route.action else {
                    routes.append(route)
                    continue
                }
                let key = "\(namespace)/\(name)"
                guard let delegate = delegates[key] else {
                    warnings.append("\(service.origin): VirtualService \(service.origin.name): spec.http[\(index)].delegate: no VirtualService \(key) without hosts is defined: this route is left out, as istiod leaves it")
                    continue
                }
                taken.insert(key)
                // istiod takes a delegate only when it is exported to the root's namespace.
                let exportTo = delegate.exportTo.isEmpty ? config.mesh.defaultVirtualServiceExportTo : delegate.exportTo
                guard exportTo.includes(service.namespace, owner: delegate.namespace) else {
                    warnings.append("\(service.origin): VirtualService \(service.origin.name): spec.http[\(index)].delegate: VirtualService \(key) is not exported to namespace \(service.namespace) (its exportTo \(exportTo)): this route is left out, as istiod leaves it")
                    continue
                }
                let merged = VirtualServiceDelegation.merged(root: route, delegate: delegate.http)
                for conflicting in merged.conflicting {
                    warnings.append("\(delegate.origin): VirtualService \(delegate.origin.name): spec.http[\(conflicting)].match: outside every match of \(service.origin.name)'s spec.http[\(index)], which delegates to it: this route is left out, as istiod leaves it")
                }
                routes += merged.routes
            }
            config.virtualServices[serviceIndex].http = routes
        }
        for (key, delegate) in delegates.sorted(by: { $0.key < $1.key }) where !taken.contains(key) {
            warnings.append("\(delegate.origin): VirtualService \(delegate.origin.name): no route delegates to it (it has no hosts): its routes apply nowhere")
        }
    }

    /// A VirtualService naming a Gateway that is not defined binds to nothing: said. Two Gateways that
    /// may select the same proxy (their selectors do not contradict) may not share a TLS port: the
    /// proxy could not tell their servers apart without SNI matching.
    mutating func checkGateways() {
        let defined = Set(config.gateways.map(\.reference))
        for service in config.virtualServices {
            for (index, name) in service.gateways.enumerated() where name != VirtualService.meshGateway && !defined.contains(name) {
                warnings.append("\(service.origin): VirtualService \(service.origin.name): spec.gateways[\(index)]: Gateway \(name) is not defined: the routes apply to no gateway through it")
            }
        }
        for (index, gateway) in config.gateways.enumerated() {
            for other in config.gateways[..<index] {
                let compatible = gateway.selector.allSatisfy { key, value in other.selector[key].map { $0 == value } ?? true }
                guard compatible else { continue }
                for (serverIndex, server) in gateway.servers.enumerated() {
                    // TLS servers on one port are told apart by SNI; plaintext ones of one protocol share the port's routes.
                    guard let clash = other.servers.first(where: { clash in
                        clash.portNumber == server.portNumber
                            && (clash.protocol != server.protocol || (server.protocol.matchesServerName && server.sharesServerName(with: clash)))
                    }) else { continue }
                    problems.append(gateway.origin.problem("spec.servers[\(serverIndex)].port.number", "port \(server.portNumber) is also a server port of Gateway \(other.reference) (\(other.origin)), which may select the same proxies: with another protocol, or TLS for the same host names (\(clash.hosts.map(\.description).joined(separator: ", "))), the proxy cannot tell them apart"))
                }
            }
        }
        // PASSTHROUGH servers: a server name a port's earlier tls match has is left out of the chains (as istiod does): said.
        for gateway in config.gateways {
            for port in Set(gateway.servers.filter(\.isPassthrough).map(\.portNumber)).sorted() {
                var seen: Set<String> = []
                for service in config.virtualServices where service.gateways.contains(gateway.reference) {
                    for (routeIndex, route) in service.tls.enumerated() {
                        for (matchIndex, match) in route.matches.enumerated()
                        where (match.port ?? port) == port && (match.gateways.isEmpty || match.gateways.contains(gateway.reference)) {
                            let repeated = match.sniHosts.filter(seen.contains)
                            if !repeated.isEmpty {
                                warnings.append("\(service.origin): VirtualService \(service.origin.name): spec.tls[\(routeIndex)].match[\(matchIndex)].sniHosts: \(repeated.joined(separator: ", ")) already routed on port \(port) of Gateway \(gateway.reference): this match is left out, as istiod does")
                            }
                            seen.formUnion(match.sniHosts)
                        }
                    }
                }
            }
        }
    }

    /// Each `jwksUri` names a service port of this mesh (its cluster `outbound|PORT||HOST` is where
    /// the proxy fetches the keys), and a selector that reaches no workload is said.
    mutating func checkRequestAuthentications() {
        for index in config.requestAuthentications.indices {
            let policy = config.requestAuthentications[index]
            for (ruleIndex, rule) in policy.jwtRules.enumerated() {
                guard case .remote(let uri, _) = rule.keys else { continue }
                let field = "spec.jwtRules[\(ruleIndex)].jwksUri"
                guard let (host, port) = RequestAuthenticationReader.meshServiceAddress(uri) else { continue }
                guard let entry = config.serviceEntries.first(where: { $0.hosts.contains(host) }) else {
                    problems.append(policy.origin.problem(field, "\(host) is not defined by any ServiceEntry: jwksUri can only name a service of this mesh (Capstan's control plane fetches nothing from the internet); give jwks inline"))
                    continue
                }
                guard entry.ports.contains(where: { $0.number == port }) else {
                    problems.append(policy.origin.problem(field, "\(host) has no port \(port): jwksUri can only name a service port of this mesh; give jwks inline"))
                    continue
                }
                config.requestAuthentications[index].jwtRules[ruleIndex].keys =
                    .remote(uri: uri, cluster: ProxyConfigGenerator.clusterName(port: port, subset: "", host: host))
            }
        }
        let workloads = config.workloadEntries.map { ($0.namespace, $0.endpoint.labels) }
            + config.serviceEntries.flatMap { entry in entry.endpoints.map { (entry.namespace, $0.labels) } }
        for policy in config.requestAuthentications where policy.selector != nil {
            guard !workloads.contains(where: { policy.applies(namespace: $0.0, labels: $0.1) }) else { continue }
            let scope = policy.namespace == MeshConfig.rootNamespace ? "any namespace" : "namespace \(policy.namespace)"
            warnings.append("\(policy.origin): RequestAuthentication \(policy.origin.name): spec.selector.matchLabels: selects no workload (WorkloadEntry or ServiceEntry endpoint) in \(scope)")
        }
    }

    /// A selector that reaches no workload (WorkloadEntry or inline endpoint) protects nothing: said.
    /// A CUSTOM policy's provider is resolved; one that cannot be is said, and its rules deny.
    mutating func checkAuthorizationPolicies() {
        for index in config.authorizationPolicies.indices {
            guard let name = config.authorizationPolicies[index].providerName else { continue }
            let policy = config.authorizationPolicies[index]
            switch ExternalAuthorizer.resolve(name, mesh: config.mesh, services: config.serviceEntries) {
            case .success(let authorizer): config.authorizationPolicies[index].authorizer = authorizer
            case .failure(let unresolved):
                warnings.append("\(policy.origin): AuthorizationPolicy \(policy.origin.name): spec.provider.name: \(unresolved.reason): the requests its rules match are denied, as istiod does")
            }
        }
        let workloads = config.workloadEntries.map { ($0.namespace, $0.endpoint.labels) }
            + config.serviceEntries.flatMap { entry in entry.endpoints.map { (entry.namespace, $0.labels) } }
        for policy in config.authorizationPolicies where policy.selector != nil {
            guard !workloads.contains(where: { policy.applies(namespace: $0.0, labels: $0.1) }) else { continue }
            let scope = policy.namespace == MeshConfig.rootNamespace ? "any namespace" : "namespace \(policy.namespace)"
            warnings.append("\(policy.origin): AuthorizationPolicy \(policy.origin.name): spec.selector.matchLabels: selects no workload (WorkloadEntry or ServiceEntry endpoint) in \(scope)")
        }
    }

    /// Route names once each in a VirtualService, and a warning for routes after one that takes every
    /// request (they can never apply).
    mutating func checkHTTPRoutes(_ service: VirtualService, entryByHost: [String: Int]) {
        var names: Set<String> = []
        for (index, route) in service.http.enumerated() {
            if let name = route.name, !names.insert(name).inserted {
                problems.append(service.origin.problem("spec.http[\(index)].name", "route name \"\(name)\" is used twice"))
            }
        }
        // Routes of the wrong kind for a host's ports apply to none of them: said, not dropped silently.
        let ports = Set(service.hosts.compactMap { entryByHost[$0] }).sorted().flatMap { config.serviceEntries[$0].ports }
        if !ports.isEmpty {
            let httpPorts = ports.filter { $0.protocol.isHTTP || $0.protocol == .unknown }
            if !service.http.isEmpty && httpPorts.isEmpty {
                warnings.append("\(service.origin): VirtualService \(service.origin.name): spec.http: applies to no port: every port of \(service.hosts.joined(separator: ", ")) is TCP (name a port http-… or give it protocol: HTTP)")
            }
            for (index, route) in service.tcp.enumerated() {
                let applies = ports.contains { port in
                    !port.protocol.isHTTP && (route.ports.isEmpty || route.ports.contains(port.number))
                }
                if !applies {
                    warnings.append("\(service.origin): VirtualService \(service.origin.name): spec.tcp[\(index)]: applies to no port: the ports it would take are HTTP, which http routes route")
                }
            }
        }
        if let catchAll = service.http.firstIndex(where: { $0.matches.isEmpty || $0.matches.contains(where: Self.matchesEverything) }),
           catchAll < service.http.count - 1 {
            warnings.append("\(service.origin): VirtualService \(service.origin.name): spec.http[\(catchAll + 1)...]: never applies: spec.http[\(catchAll)] takes every request before it")
        }
    }

    static func matchesEverything(_ match: VirtualService.HTTPMatch) -> Bool {
        let uriAll: Bool
        switch match.uri {
        case nil, .prefix("")?, .prefix("/")?: uriAll = true
        default: uriAll = false
        }
        return uriAll && match.scheme == nil && match.method == nil && match.authority == nil && match.headers.isEmpty
            && match.withoutHeaders.isEmpty && match.queryParams.isEmpty && match.port == nil
    }

    /// Istio keeps the oldest of competing policies; files carry no age, so two policies for the same
    /// scope are refused instead of one being picked silently.
    mutating func checkPeerAuthentications() {
        var scopes: [String: ResourceOrigin] = [:]
        for policy in config.peerAuthentications where policy.selector == nil {
            let scope = policy.isMeshWide ? "the mesh" : "namespace \(policy.namespace)"
            if let other = scopes[scope] {
                problems.append(policy.origin.problem("spec.selector", "\(scope) already has PeerAuthentication \(other.name) (\(other)); give this one a selector or remove one"))
            }
            scopes[scope] = scopes[scope] ?? policy.origin
        }
        for policy in config.peerAuthentications {
            guard let selector = policy.selector else { continue }
            let selectsSome = config.workloadEntries.contains { workload in
                workload.namespace == policy.namespace && selector.allSatisfy { workload.endpoint.labels[$0.key] == $0.value }
            }
            if !selectsSome {
                warnings.append("\(policy.origin): PeerAuthentication \(policy.origin.name): spec.selector.matchLabels: selects no WorkloadEntry in namespace \(policy.namespace)")
            }
        }
        for workload in config.workloadEntries {
            let selecting = config.peerAuthentications.filter { policy in
                policy.namespace == workload.namespace
                    && (policy.selector?.allSatisfy { workload.endpoint.labels[$0.key] == $0.value } ?? false)
            }
            guard let first = selecting.first else { continue }
            for policy in selecting.dropFirst() {
                problems.append(policy.origin.problem("spec.selector.matchLabels", "selects WorkloadEntry \(workload.origin.name), which PeerAuthentication \(first.origin.name) (\(first.origin)) also selects"))
            }
        }
    }

    // MARK: Field helpers

    static func strings(_ reader: ConfigReader, nonEmpty: Bool) throws(ConfigError) -> [String] {
        let items = try reader.list().map { item throws(ConfigError) in try item.string() }
        if nonEmpty && items.isEmpty { throw reader.fail("needs at least one entry") }
        return items
    }

    static func labels(_ reader: ConfigReader) throws(ConfigError) -> [String: String] {
        try MeshConfigReader.labels(reader)
    }

    static func isDNSLabel(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 253 && text.first != "-" && text.last != "-"
            && text.allSatisfy { ($0.isLetter && $0.isLowercase && $0.isASCII) || $0.isNumber || $0 == "-" || $0 == "." }
    }
}

extension ResourceOrigin {
    func problem(_ field: String, _ message: String) -> MeshConfigProblem {
        MeshConfigProblem(origin: description, resource: "\(kind) \(name)", field: field, message: message)
    }
}
