import Configuration

/// A DestinationRule's `tls` for modes SIMPLE and MUTUAL, in which the sidecar originates TLS to the
/// service: the file paths, the SNI and the accepted server names, checked as Istio's validation does.
enum OriginatedTLSReader {
    /// The settings of a `tls` whose mode is SIMPLE (`mutual` false) or MUTUAL.
    static func read(_ tls: ConfigReader, mutual: Bool) throws(ConfigError) -> DestinationRule.OriginatedTLS {
        if let credential = try tls.optional("credentialName") {
            let name = try credential.string()
            if !name.isEmpty {
                throw credential.fail("\"\(name)\": certificates from a Kubernetes secret are not supported for a sidecar's DestinationRule (istiod sends them only to gateways and to rules with a workloadSelector): give clientCertificate, privateKey and caCertificates as files")
            }
        }
        if let crl = try tls.optional("caCrl"), !(try crl.string()).isEmpty {
            throw crl.fail("certificate revocation lists are not supported by Capstan")
        }
        var settings = DestinationRule.OriginatedTLS()
        if let sni = try tls.optional("sni") {
            let name = try sni.string()
            if !name.isEmpty {
                guard ServiceEntryReader.isHostName(name) else { throw sni.fail("\"\(name)\" is not a host name to send as SNI") }
                settings.sni = name
            }
        }
        if let names = try tls.optional("subjectAltNames") {
            for (index, item) in try names.list().enumerated() {
                let name = try item.string()
                guard !name.isEmpty else { throw ConfigError(path: "\(names.path)[\(index)]", message: "is empty") }
                settings.subjectAltNames.append(name)
            }
        }
        settings.caCertificates = try path(tls, "caCertificates")
        settings.clientCertificate = try path(tls, "clientCertificate")
        settings.privateKey = try path(tls, "privateKey")
        if let skip = try tls.optional("insecureSkipVerify") { settings.insecureSkipVerify = try skip.bool() }
        if mutual {
            guard settings.clientCertificate != nil else {
                throw ConfigError(path: "\(tls.path).clientCertificate", message: "is required for mode MUTUAL (a file path)")
            }
            guard settings.privateKey != nil else {
                throw ConfigError(path: "\(tls.path).privateKey", message: "is required for mode MUTUAL (a file path)")
            }
        } else if settings.clientCertificate != nil || settings.privateKey != nil {
            let field = settings.clientCertificate != nil ? "clientCertificate" : "privateKey"
            throw ConfigError(path: "\(tls.path).\(field)", message: "is for mode MUTUAL: SIMPLE presents no client certificate")
        }
        if settings.insecureSkipVerify && (settings.caCertificates != nil || !settings.subjectAltNames.isEmpty) {
            throw ConfigError(path: "\(tls.path).insecureSkipVerify",
                              message: "cannot be given with caCertificates or subjectAltNames: nothing of the server would be checked")
        }
        return settings
    }

    /// ISTIO_MUTUAL's one setting Capstan acts on: `sni`, sent instead of istiod's
    /// `outbound_.PORT_.SUBSET_.HOST`, as Istio's egress gateway task sets the external host for the
    /// gateway to choose its server by. nil when not given.
    static func readIstioMutual(_ tls: ConfigReader) throws(ConfigError) -> DestinationRule.OriginatedTLS? {
        guard let sni = try tls.optional("sni") else { return nil }
        let name = try sni.string()
        guard !name.isEmpty else { return nil }
        guard ServiceEntryReader.isHostName(name) else { throw sni.fail("\"\(name)\" is not a host name to send as SNI") }
        return DestinationRule.OriginatedTLS(sni: name)
    }

    /// Settings given with a mode that does not use them (DISABLE; ISTIO_MUTUAL but its `sni`): said, not silent.
    static func warnUnused(_ tls: ConfigReader, mode: DestinationRule.TLSMode, warnings: inout [String]) throws(ConfigError) {
        for key in ["sni", "subjectAltNames", "caCertificates", "clientCertificate", "privateKey", "credentialName",
                    "insecureSkipVerify", "caCrl"] where try tls.optional(key) != nil {
            if key == "sni", mode == .istioMutual { continue }
            warnings.append("\(tls.path).\(key): not acted on with mode \(mode.rawValue) (Capstan uses it for SIMPLE and MUTUAL)")
        }
    }

    /// An absolute file path, or nil when absent or empty.
    private static func path(_ tls: ConfigReader, _ key: String) throws(ConfigError) -> String? {
        guard let field = try tls.optional(key) else { return nil }
        let text = try field.string()
        if text.isEmpty { return nil }
        guard text.hasPrefix("/"), !text.utf8.contains(0) else {
            throw field.fail("\"\(text)\" is not an absolute file path (the file is read on the proxy's machine)")
        }
        return text
    }
}
