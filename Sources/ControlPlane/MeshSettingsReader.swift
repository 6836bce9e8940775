import Configuration
import Identity

/// Reads ``MeshSettings`` from Istio's `istio` ConfigMap (`data.mesh`, a YAML text, and beside it
/// `data.meshNetworks`, ``MeshNetworks``), the form
/// `kubectl get configmap istio -n istio-system -o yaml` prints, so an operator's mesh config can be
/// dropped into the control plane's directory as it is.
enum MeshSettingsReader {
    /// The ConfigMap's name (a revision's is `istio-REVISION`, which this control plane does not serve).
    static let configMapName = "istio"

    /// Istio's MeshConfig fields that this control plane reads but does not act on: warned about, one
    /// warning each, so nobody takes them for applied.
    static let fieldsNotActedOn: Set<String> = [
        "connectTimeout", "defaultConfig",
        "defaultProviders", "discoverySelectors", "enableAutoMtls", "enablePrometheusMerge", "enableTracing",
        "ingressClass", "ingressControllerMode", "ingressService", "outboundClusterStatName",
        "inboundClusterStatName", "protocolDetectionTimeout",
        "serviceSettings", "tcpKeepalive", "h2UpgradePolicy", "meshNetworks", "caCertificates",
        "verifyCertificateAtClient", "pathNormalization", "proxyHttpPort", "proxyListenPort", "proxyInboundListenPort",
    ]

    /// The settings in `data.mesh` of the ConfigMap document `root` (already known to be `v1 ConfigMap`
    /// named `istio`). Problems name their field under `data.mesh`.
    static func read(configMap root: ConfigReader, origin: ResourceOrigin, warnings: inout [String]) throws(ConfigError) -> MeshSettings {
        try root.ignoringUnknown(["apiVersion", "kind", "metadata", "data"], warnings: &warnings)
        let data = try root.required("data")
        try data.ignoringUnknown(["mesh", "meshNetworks"], warnings: &warnings)
        var settings = MeshSettings()
        settings.origin = origin
        if let networksField = try data.optional("meshNetworks"), let networks = try document(networksField, what: "mesh networks") {
            settings.networks = try readNetworks(networks, warnings: &warnings)
        }
        let meshField = try data.required("mesh")
        guard let mesh = try document(meshField, what: "mesh config") else { return settings }
        try read(mesh, into: &settings, warnings: &warnings)
        return settings
    }

    /// The one YAML document in the text of `field` (nil when empty), read under the field's path.
    private static func document(_ field: ConfigReader, what: String) throws(ConfigError) -> ConfigReader? {
        let text = try field.string()
        let documents: [YAMLDocument]
        do throws(YAMLError) {
            documents = try YAMLDocument.parseAll(text)
        } catch {
            throw ConfigError(path: field.path, message: "not valid YAML: line \(error.line), column \(error.column): \(error.message)")
        }
        guard documents.count <= 1 else { throw field.fail("holds \(documents.count) YAML documents; the \(what) is one") }
        guard let document = documents.first, document.value != .null else { return nil }
        return ConfigReader(document.value, path: field.path)
    }

    /// `meshNetworks` (Istio's `MeshNetworks`): `networks.NAME.endpoints` (`fromCidr`, `fromRegistry`)
    /// and `networks.NAME.gateways` (`address` and `port`), with istiod's validation. A gateway given by
    /// `registryServiceName` is refused (istiod finds its address in the Kubernetes registry), and so is
    /// one whose address is a name (istiod resolves those only with RESOLVE_HOSTNAME_GATEWAYS).
    static func readNetworks(_ root: ConfigReader, warnings: inout [String]) throws(ConfigError) -> MeshNetworks {
        try root.ignoringUnknown(["networks"], warnings: &warnings)
        var result = MeshNetworks()
        guard let networks = try root.optional("networks") else { return result }
        for name in try networks.fields().keys.sorted() {
            let network = try networks.required(name)
            guard !name.isEmpty else { throw network.fail("a network needs a name") }
            try network.ignoringUnknown(["endpoints", "gateways"], warnings: &warnings)
            for entry in try network.optional("endpoints")?.list() ?? [] {
                let kinds = try entry.fields().keys.sorted()
                guard kinds.count == 1, let kind = kinds.first else {
                    throw entry.fail("needs exactly one of fromCidr, fromRegistry, found \(kinds.isEmpty ? "none" : kinds.joined(separator: ", "))")
                }
                let field = try entry.required(kind)
                let text = try field.string()
                switch kind {
                case "fromCidr":
                    guard let range = IPNetwork(text) else { throw field.fail("\"\(text)\" is not an IP address range (CIDR)") }
                    result.ranges.append((range, name))
                case "fromRegistry":
                    // Istio's label check, letters of either case (its own default is `Kubernetes`).
                    guard !text.isEmpty, text.utf8.count <= 63, text.first != "-", text.last != "-",
                          text.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-") }) else {
                        throw field.fail("\"\(text)\" is not a registry name (a DNS-1123 label)")
                    }
                    warnings.append("\(field.path): not acted on: Capstan's control plane has one registry (its directory); its endpoints take their network from `network`, the label \(MeshNetworks.networkLabel) or a fromCidr range")
                default:
                    throw field.fail("\"\(kind)\" is not fromCidr or fromRegistry")
                }
            }
            var gateways: [MeshNetworks.Gateway] = []
            for entry in try network.optional("gateways")?.list() ?? [] {
                try entry.ignoringUnknown(["address", "registryServiceName", "port", "locality"], warnings: &warnings)
                if let service = try entry.optional("registryServiceName") {
                    guard try entry.optional("address") == nil else { throw entry.fail("gives both address and registryServiceName; a gateway has one") }
                    throw service.fail("is not supported by Capstan: give the gateway's address (istiod reads a registry service's from Kubernetes)")
                }
                let addressField = try entry.required("address")
                let text = try addressField.string()
                guard let address = IPNetwork(text), address.isSingleAddress, !text.contains("/") else {
                    throw addressField.fail("\"\(text)\" is not an IP address (Capstan, as istiod without RESOLVE_HOSTNAME_GATEWAYS, resolves no gateway names)")
                }
                let port = try entry.required("port").integer(in: 1...65535)
                if let locality = try entry.optional("locality") {
                    warnings.append("\(locality.path): not acted on (istiod sends gateway endpoints without a locality too)")
                }
                let gateway = MeshNetworks.Gateway(network: name, address: address.address, port: port)
                if !gateways.contains(gateway) { gateways.append(gateway) }
            }
            if !gateways.isEmpty { result.gateways[name] = gateways.sorted() }
        }
        return result
    }

    static func read(_ mesh: ConfigReader, into settings: inout MeshSettings, warnings: inout [String]) throws(ConfigError) {
        let acted: Set<String> = ["outboundTrafficPolicy", "extensionProviders", "rootNamespace", "trustDomain", "trustDomainAliases",
                                  "dnsRefreshRate", "accessLogFile", "accessLogFormat", "accessLogEncoding",
                                  "defaultServiceExportTo", "defaultVirtualServiceExportTo", "defaultDestinationRuleExportTo",
                                  "localityLbSetting"]
        for key in try mesh.fields().keys.sorted() where !acted.contains(key) {
            if fieldsNotActedOn.contains(key) {
                warnings.append("\(mesh.path).\(key): not acted on by Capstan's control plane, ignored")
            } else {
                warnings.append("\(mesh.path).\(key): not a mesh config field Capstan knows, ignored")
            }
        }
        if let root = try mesh.optional("rootNamespace") {
            let namespace = try root.string()
            guard namespace == MeshConfig.rootNamespace else {
                throw root.fail("\"\(namespace)\" is not supported: Capstan's root namespace is \(MeshConfig.rootNamespace)")
            }
        }
        if try mesh.optional("trustDomain") != nil {
            warnings.append("\(mesh.path).trustDomain: the control plane's --trust-domain is the one in force, this is ignored")
        }
        if let aliases = try mesh.optional("trustDomainAliases") {
            for (index, item) in try aliases.list().enumerated() {
                let alias = try item.string()
                do throws(WorkloadIdentityError) {
                    settings.trustDomainAliases.append(try WorkloadIdentity.checkTrustDomain(alias))
                } catch {
                    throw ConfigError(path: "\(aliases.path)[\(index)]", message: "\"\(alias)\" is not a trust domain: \(error)")
                }
            }
        }
        if let setting = try mesh.optional("localityLbSetting") {
            // With Istio's validation, as a DestinationRule's.
            settings.localityLoadBalancing = try MeshConfigReader.localityLoadBalancing(setting, warnings: &warnings)
        }
        if let rate = try mesh.optional("dnsRefreshRate") {
            let value = try rate.goDuration()
            // Istio's validation: at least 1 ms (Envoy's bound on dns_refresh_rate).
            guard value >= .milliseconds(1) else { throw rate.fail("must be at least 1ms") }
            settings.dnsRefreshRate = value
        }
        if let file = try mesh.optional("accessLogFile") {
            let path = try file.string()
            if !path.isEmpty {
                guard path.hasPrefix("/"), !path.utf8.contains(0) else { throw file.fail("\"\(path)\" is not an absolute file path") }
                settings.accessLogFile = path
                warnings.append("\(file.path): acted on for HTTP connection managers (sidecars' and gateways'): TCP relays write no access log yet")
            }
        }
        if let format = try mesh.optional("accessLogFormat") {
            let text = try format.string()
            settings.accessLogFormat = text.isEmpty ? nil : (text.hasSuffix("\n") ? text : text + "\n")
        }
        if let encoding = try mesh.optional("accessLogEncoding") {
            switch try encoding.string() {
            case "TEXT": break
            case "JSON": warnings.append("\(encoding.path): JSON is not acted on: Capstan's gateways write the TEXT format")
            case let other: throw encoding.fail("\"\(other)\" is not TEXT or JSON")
            }
        }
        if let field = try mesh.optional("defaultServiceExportTo") {
            settings.defaultServiceExportTo = try ExportTo.readDefault(field, warnings: &warnings)
        }
        if let field = try mesh.optional("defaultVirtualServiceExportTo") {
            settings.defaultVirtualServiceExportTo = try ExportTo.readDefault(field, warnings: &warnings)
        }
        if let field = try mesh.optional("defaultDestinationRuleExportTo") {
            let value = try ExportTo.readDefault(field, warnings: &warnings)
            // istiod's DestinationRule index honours `.` of this default, and reads anything else as `*`.
            if !value.targets.contains(".") && value != .everywhere {
                warnings.append("\(field.path): \(value) acts as [\"*\"]: istiod honours only \".\" in this default (a DestinationRule without exportTo is otherwise exported everywhere)")
            }
            settings.defaultDestinationRuleExportTo = value
        }
        if let policy = try mesh.optional("outboundTrafficPolicy") {
            try policy.ignoringUnknown(["mode", "egressProxy"], warnings: &warnings)
            if try policy.optional("egressProxy") != nil {
                throw ConfigError(path: "\(policy.path).egressProxy", message: "is not supported by Capstan: use an egress gateway")
            }
            if let mode = try policy.optional("mode") {
                let text = try mode.string()
                guard let parsed = MeshSettings.OutboundTrafficPolicy(rawValue: text) else {
                    throw mode.fail("\"\(text)\" is not ALLOW_ANY or REGISTRY_ONLY")
                }
                settings.outboundTrafficPolicy = parsed
            }
        }
        for entry in try mesh.optional("extensionProviders")?.list() ?? [] {
            let provider = try extensionProvider(entry, warnings: &warnings)
            guard settings.extensionProvider(named: provider.name) == nil else {
                throw ConfigError(path: "\(entry.path).name", message: "\"\(provider.name)\" names two extension providers")
            }
            settings.extensionProviders.append(provider)
        }
    }

    /// Istio's provider kinds other than the external authorizers: tracing, logging and metrics.
    private static let telemetryProviders: Set<String> = [
        "zipkin", "lightstep", "datadog", "stackdriver", "opencensus", "skywalking", "opentelemetry",
        "prometheus", "envoyFileAccessLog", "envoyHttpAls", "envoyTcpAls", "envoyOtelAls", "sds",
    ]

    static func extensionProvider(_ entry: ConfigReader, warnings: inout [String]) throws(ConfigError) -> ExtensionProvider {
        let nameField = try entry.required("name")
        let name = try nameField.string()
        guard !name.isEmpty else { throw nameField.fail("must not be empty") }
        let kinds = try entry.fields().keys.filter { $0 != "name" }.sorted()
        guard kinds.count == 1, let kind = kinds.first else {
            throw entry.fail("needs exactly one provider kind (envoyExtAuthzGrpc, …), found \(kinds.isEmpty ? "none" : kinds.joined(separator: ", "))")
        }
        let config = try entry.required(kind)
        switch kind {
        case "envoyExtAuthzGrpc":
            return ExtensionProvider(name: name, externalAuthorization: try externalAuthorization(config, warnings: &warnings))
        case "envoyExtAuthzHttp":
            throw config.fail("is not supported: Capstan's proxy calls external authorizers over gRPC only (envoyExtAuthzGrpc)")
        case let other where telemetryProviders.contains(other):
            throw config.fail("\(other) providers are not supported by Capstan")
        default:
            throw config.fail("\"\(kind)\" is not an extension provider kind Istio defines")
        }
    }

    private static func externalAuthorization(_ config: ConfigReader, warnings: inout [String]) throws(ConfigError) -> ExtensionProvider.ExternalAuthorization {
        try config.ignoringUnknown(["service", "port", "timeout", "failOpen", "statusOnError", "includeRequestBodyInCheck",
                                    "clearRouteCache"], warnings: &warnings)
        if let clear = try config.optional("clearRouteCache"), try clear.bool() {
            warnings.append("\(clear.path): not acted on: Capstan's ext_authz does not clear the route cache")
        }
        let serviceField = try config.required("service")
        var service = try serviceField.string()
        // Istio's `namespace/host` form: the host is what names the service.
        if let slash = service.firstIndex(of: "/") { service = String(service[service.index(after: slash)...]) }
        guard !service.isEmpty, !service.contains(where: { $0 == " " || $0 == "|" }) else {
            throw serviceField.fail("\"\(service)\" is not a service host")
        }
        var provider = ExtensionProvider.ExternalAuthorization(service: service, port: try config.required("port").integer(in: 1...65535))
        if let timeout = try config.optional("timeout") {
            provider.timeout = try timeout.duration()
            guard provider.timeout > .zero else { throw timeout.fail("must be above 0") }
        }
        provider.failOpen = try config.optional("failOpen")?.bool() ?? false
        if let status = try config.optional("statusOnError") {
            let text = try status.string()
            guard let code = Int(text), (100...599).contains(code) else { throw status.fail("\"\(text)\" is not an HTTP status code") }
            provider.statusOnError = code
        }
        if let body = try config.optional("includeRequestBodyInCheck") {
            try body.ignoringUnknown(["maxRequestBytes", "allowPartialMessage", "packAsBytes"], warnings: &warnings)
            guard let max = try body.optional("maxRequestBytes") else {
                throw ConfigError(path: "\(body.path).maxRequestBytes", message: "is required: Envoy buffers no body without a limit")
            }
            provider.requestBody = .init(maxRequestBytes: try max.integer(in: 1...Int(UInt32.max)),
                                         allowPartialMessage: try body.optional("allowPartialMessage")?.bool() ?? false,
                                         packAsBytes: try body.optional("packAsBytes")?.bool() ?? false)
        }
        return provider
    }
}
