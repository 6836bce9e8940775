import Configuration

/// Reads a `Gateway` spec. What Capstan does not serve end to end is refused with the field's path
/// (inline certificates, `bind`, TLS versions and ciphers), never accepted silently.
enum GatewayReader {
    static func read(_ spec: ConfigReader, origin: ResourceOrigin, namespace: String, name: String,
                     warnings: inout [String]) throws(ConfigError) -> Gateway {
        try spec.ignoringUnknown(["selector", "servers"], warnings: &warnings)
        let selector = try spec.optional("selector").map(MeshConfigReader.labels) ?? [:]
        var servers: [Gateway.Server] = []
        let list = try spec.required("servers").list()
        guard !list.isEmpty else { throw ConfigError(path: "spec.servers", message: "needs at least one server") }
        for reader in list {
            servers.append(try server(reader, warnings: &warnings))
        }
        // Two plaintext servers on one port share its route configuration (istiod merges them); a TLS
        // port's servers get a filter chain each, told apart by SNI, so their host names must differ.
        for (index, server) in servers.enumerated() {
            let samePort = servers[..<index].filter { $0.portNumber == server.portNumber }
            if samePort.contains(where: { $0.protocol != server.protocol }) {
                throw ConfigError(path: "spec.servers[\(index)].port", message: "port \(server.portNumber) is used by another server with another protocol")
            }
            if server.protocol.matchesServerName, let clash = samePort.first(where: server.sharesServerName) {
                throw ConfigError(path: "spec.servers[\(index)].hosts",
                                  message: "port \(server.portNumber) has another TLS server for the same host names (\(clash.hosts.map(\.description).joined(separator: ", "))): the proxy tells a port's TLS servers apart by SNI only")
            }
        }
        return Gateway(origin: origin, namespace: namespace, name: name, selector: selector, servers: servers)
    }

    private static func server(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> Gateway.Server {
        try reader.ignoringUnknown(["port", "hosts", "tls", "name", "bind", "defaultEndpoint"], warnings: &warnings)
        for field in ["bind", "defaultEndpoint"] {
            if try reader.optional(field) != nil {
                throw ConfigError(path: "\(reader.path).\(field)", message: "is not supported by Capstan (listeners bind 0.0.0.0)")
            }
        }
        let port = try reader.required("port")
        try port.ignoringUnknown(["number", "name", "protocol", "targetPort"], warnings: &warnings)
        let number = try port.required("number").integer(in: 1...65535)
        if try port.optional("targetPort") != nil {
            warnings.append("\(port.path).targetPort: ignored, as Istio ignores it: the listener binds port.number")
        }
        let portName = try port.required("name").string()
        guard !portName.isEmpty, !portName.contains("."), !portName.contains("|") else {
            throw ConfigError(path: "\(port.path).name", message: "\"\(portName)\" is not a port name")
        }
        let protocolReader = try port.required("protocol")
        let protocolText = try protocolReader.string()
        guard let proto = Gateway.PortProtocol(rawValue: protocolText.uppercased()) else {
            if ["MONGO", "REDIS", "MYSQL"].contains(protocolText.uppercased()) {
                throw protocolReader.fail("\(protocolText) servers are not supported by Capstan's gateway yet (HTTP, HTTPS, HTTP2, GRPC, TCP, TLS)")
            }
            throw protocolReader.fail("\"\(protocolText)\" is not a Gateway protocol (HTTP, HTTPS, HTTP2, GRPC, TCP, TLS)")
        }
        let hostsReader = try reader.required("hosts")
        var hosts: [Gateway.Host] = []
        for (index, item) in try hostsReader.list().enumerated() {
            hosts.append(try host(try item.string(), path: "\(hostsReader.path)[\(index)]"))
        }
        guard !hosts.isEmpty else { throw hostsReader.fail("needs at least one entry") }
        let tls = try reader.optional("tls").map { reader throws(ConfigError) in try self.tls(reader, warnings: &warnings) }
        let path = reader.path
        if proto.terminatesTLS {
            guard let tls, tls.mode != nil else {
                throw ConfigError(path: "\(path).tls.mode", message: "an HTTPS server needs tls.mode (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL, PASSTHROUGH or AUTO_PASSTHROUGH)")
            }
        } else if proto == .tls {
            guard let tls, tls.mode != nil else {
                throw ConfigError(path: "\(path).tls.mode", message: "a TLS server needs tls.mode (PASSTHROUGH, AUTO_PASSTHROUGH, or SIMPLE, MUTUAL, OPTIONAL_MUTUAL or ISTIO_MUTUAL before a tcp route)")
            }
        } else if proto == .tcp, tls != nil {
            throw ConfigError(path: "\(path).tls", message: "a TCP server relays bytes: it has no TLS settings")
        } else if tls?.mode != nil {
            throw ConfigError(path: "\(path).tls.mode", message: "a \(proto.rawValue) server does not terminate TLS: use protocol HTTPS")
        }
        if tls?.mode == .autoPassthrough {
            // As istiod: the services an AUTO_PASSTHROUGH server exposes are chosen by host name only.
            for (index, host) in hosts.enumerated() where host.namespace != nil {
                warnings.append("\(hostsReader.path)[\(index)]: the namespace \"\(host.namespace!)\" is not used by AUTO_PASSTHROUGH, as in istiod: every mesh service whose host \"\(host.host)\" takes is reachable")
            }
        }
        if let tls, tls.httpsRedirect, proto.matchesServerName {
            warnings.append("\(path).tls.httpsRedirect: applies to plaintext servers; on an \(proto.rawValue) server it changes nothing")
        }
        let name = try reader.optional("name")?.string()
        return Gateway.Server(portNumber: number, portName: portName, protocol: proto, hosts: hosts, tls: tls, name: name)
    }

    private static func tls(_ reader: ConfigReader, warnings: inout [String]) throws(ConfigError) -> Gateway.TLS {
        try reader.ignoringUnknown(["mode", "credentialName", "httpsRedirect", "serverCertificate", "privateKey", "caCertificates",
                                    "subjectAltNames", "minProtocolVersion", "maxProtocolVersion", "cipherSuites",
                                    "verifyCertificateSpki", "verifyCertificateHash"], warnings: &warnings)
        for field in ["serverCertificate", "privateKey", "caCertificates"] where try reader.optional(field) != nil {
            throw ConfigError(path: "\(reader.path).\(field)",
                              message: "is not supported by Capstan: give the certificate with credentialName (or use ISTIO_MUTUAL)")
        }
        for field in ["subjectAltNames", "minProtocolVersion", "maxProtocolVersion", "cipherSuites", "verifyCertificateSpki",
                      "verifyCertificateHash"] where try reader.optional(field) != nil {
            throw ConfigError(path: "\(reader.path).\(field)", message: "is not supported by Capstan's gateway yet")
        }
        let httpsRedirect = try reader.optional("httpsRedirect")?.bool() ?? false
        var mode: Gateway.TLSMode?
        if let modeReader = try reader.optional("mode") {
            let text = try modeReader.string()
            switch text {
            case "SIMPLE": mode = .simple
            case "MUTUAL": mode = .mutual
            case "ISTIO_MUTUAL": mode = .istioMutual
            case "PASSTHROUGH": mode = .passthrough
            case "AUTO_PASSTHROUGH": mode = .autoPassthrough
            case "OPTIONAL_MUTUAL": mode = .optionalMutual
            default:
                throw modeReader.fail("\"\(text)\" is not a TLS mode (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, PASSTHROUGH, ISTIO_MUTUAL, AUTO_PASSTHROUGH)")
            }
        }
        let credential = try reader.optional("credentialName").map { name throws(ConfigError) in
            let text = try name.string()
            guard GatewaySecrets.isSecretName(text) else { throw name.fail("\"\(text)\" is not a Kubernetes secret name (DNS-1123 subdomain)") }
            return text
        }
        if mode == .istioMutual, credential != nil {
            // As Istio validates it: the certificate is the gateway's workload certificate.
            throw ConfigError(path: "\(reader.path).credentialName", message: "cannot be given with ISTIO_MUTUAL, which serves the gateway's workload certificate")
        }
        if let mode, mode.passesThrough, credential != nil {
            throw ConfigError(path: "\(reader.path).credentialName", message: "is not used with \(mode.rawValue): the gateway does not terminate TLS")
        }
        if let mode, mode.usesCredential, credential == nil {
            throw ConfigError(path: "\(reader.path).credentialName", message: "is required: Capstan reads server certificates from the secrets directory only")
        }
        return Gateway.TLS(mode: mode, credentialName: credential, httpsRedirect: httpsRedirect)
    }

    /// `namespace/host` or `host`; `.` and `*` namespaces as Istio reads them.
    static func host(_ text: String, path: String) throws(ConfigError) -> Gateway.Host {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count <= 2 else { throw ConfigError(path: path, message: "\"\(text)\" is not namespace/host") }
        let namespace: String? = parts.count == 2 ? (parts[0] == "*" ? nil : parts[0]) : nil
        if let namespace, namespace != ".", !GatewaySecrets.isSecretName(namespace) || namespace.contains(".") {
            throw ConfigError(path: path, message: "\"\(namespace)\" is not a namespace (a DNS-1123 label, `.` or `*`)")
        }
        let host = parts.last!
        let name = host.hasPrefix("*.") ? String(host.dropFirst(2)) : host
        guard host == "*" || (!name.isEmpty && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") }) else {
            throw ConfigError(path: path, message: "\"\(host)\" is not a host name (a name, *.name or *)")
        }
        return Gateway.Host(namespace: namespace, host: host.lowercased())
    }
}
