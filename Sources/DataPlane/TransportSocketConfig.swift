import Configuration
import NIOCore
import NIOSSL
import SwiftProtobuf
import XDS

/// `envoy.transport_sockets.tls` of a cluster (the proxy is the TLS client: Istio's mTLS to mesh
/// endpoints) or of a filter chain (the proxy terminates TLS): where the certificate and the trust
/// bundle come from (inline, or SDS secrets by name), which peer names are acceptable, ALPN, SNI and
/// TLS versions. Plaintext (`raw_buffer`) has no configuration: a nil `TransportSocketConfig`.
/// A plain value, fixed once decoded: the TLS context it leads to is the proxy's (``TLSContextCache``),
/// found by ``contextKey``.
struct TransportSocketConfig: Sendable {
    enum Role: Sendable, Equatable {
        /// TLS to the upstream, sending `serverName` as SNI when set.
        case client(serverName: String?)
        /// TLS terminated here; a client certificate verified against the trust bundle is required or optional.
        case server(requireClientCertificate: Bool)
    }

    /// Where a certificate or a trust bundle comes from: the configuration itself, or an SDS secret.
    enum Source<Inline: Sendable & Equatable>: Sendable, Equatable {
        case inline(Inline)
        case secret(SecretReference)
    }

    private(set) var role: Role
    /// What this side presents; nil only for a client that presents no certificate.
    private(set) var certificate: Source<TLSCredentials>?
    /// What the peer is verified against; nil: the peer is not verified (Envoy's behavior without a
    /// validation context).
    private(set) var trust: Source<TrustBundle>?
    /// The peer names accepted (any of them); empty: any certificate the trust bundle verifies.
    private(set) var subjectAltNames: [SubjectAltNameMatcher] = []
    private(set) var applicationProtocols: [String] = []
    /// TLS 1.2 unless configured (Envoy's default minimum for clients and servers).
    private(set) var minimumVersion = TLSVersion.tlsv12
    private(set) var maximumVersion: TLSVersion?
    /// BoringSSL's cipher list for TLS 1.2 and older (`cipher_suites`, joined); nil: the library's default.
    private(set) var cipherSuites: String?
    private(set) var curves: [NIOTLSCurve]?
    /// The transport socket in Envoy's shape as it was received, inline private keys redacted, for `/config_dump`.
    private(set) var dump: ConfigValue
    /// What the TLS context depends on (all of the above but SNI and the dump), made from them when decoded.
    let contextKey: TLSContextKey

    static let tlsSocketName = "envoy.transport_sockets.tls"
    static let rawBufferSocketName = "envoy.transport_sockets.raw_buffer"
    static let upstreamContextType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    static let downstreamContextType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
    private static let rawBufferType = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"

    /// The SDS secrets this socket needs.
    var secretReferences: [SecretReference] {
        var references: [SecretReference] = []
        if case .secret(let reference)? = certificate { references.append(reference) }
        if case .secret(let reference)? = trust { references.append(reference) }
        return references
    }

    // MARK: Decoding

    /// A cluster's `transport_socket`; nil for plaintext. Errors name the field under `path`.
    static func upstream(_ socket: Envoy_Config_Core_V3_TransportSocket, path: String) throws(ConfigError) -> TransportSocketConfig? {
        guard let typed = try typedConfig(socket, expecting: upstreamContextType, path: path) else { return nil }
        let context: Envoy_Extensions_TransportSockets_Tls_V3_UpstreamTlsContext = try unpack(typed, path: "\(path).typed_config")
        let sni = context.sni
        if !sni.isEmpty {
            let isAddress = (try? SocketAddress(ipAddress: sni, port: 0)) != nil
            guard !isAddress, sni.utf8.count <= 255, !sni.utf8.contains(0) else {
                throw ConfigError(path: "\(path).typed_config.sni", message: "\"\(sni)\" is not a host name for SNI (1-255 bytes, not an IP address)")
            }
        }
        var redacted = context
        redacted.commonTlsContext.redactPrivateKeys()
        return try TransportSocketConfig(
            common: context.commonTlsContext, role: .client(serverName: sni.isEmpty ? nil : sni),
            path: "\(path).typed_config.common_tls_context",
            dump: dump(name: socket.name, type: upstreamContextType, context: redacted))
    }

    /// A filter chain's `transport_socket`; nil for plaintext. Errors name the field under `path`.
    static func downstream(_ socket: Envoy_Config_Core_V3_TransportSocket, path: String) throws(ConfigError) -> TransportSocketConfig? {
        guard let typed = try typedConfig(socket, expecting: downstreamContextType, path: path) else { return nil }
        let context: Envoy_Extensions_TransportSockets_Tls_V3_DownstreamTlsContext = try unpack(typed, path: "\(path).typed_config")
        let require = context.hasRequireClientCertificate && context.requireClientCertificate.value
        var redacted = context
        redacted.commonTlsContext.redactPrivateKeys()
        let config = try TransportSocketConfig(
            common: context.commonTlsContext, role: .server(requireClientCertificate: require),
            path: "\(path).typed_config.common_tls_context",
            dump: dump(name: socket.name, type: downstreamContextType, context: redacted))
        if require && config.trust == nil {
            throw ConfigError(path: "\(path).typed_config.require_client_certificate",
                              message: "needs a validation context (a trusted CA) in common_tls_context to verify client certificates against")
        }
        return config
    }

    private init(common: Envoy_Extensions_TransportSockets_Tls_V3_CommonTlsContext, role: Role, path: String,
                 dump: ConfigValue) throws(ConfigError) {
        self.role = role
        self.dump = dump
        let inline = common.tlsCertificates
        let secrets = common.tlsCertificateSdsSecretConfigs
        if !inline.isEmpty && !secrets.isEmpty {
            throw ConfigError(path: path, message: "has both tls_certificates and tls_certificate_sds_secret_configs: use one")
        }
        if inline.count > 1 || secrets.count > 1 {
            throw ConfigError(path: "\(path).\(inline.count > 1 ? "tls_certificates" : "tls_certificate_sds_secret_configs")",
                              message: "has \(max(inline.count, secrets.count)) certificates: Capstan presents one")
        }
        if let first = inline.first {
            certificate = .inline(try TLSCredentials(first, path: "\(path).tls_certificates[0]"))
        } else if let first = secrets.first {
            certificate = .secret(try SecretReference(first, path: "\(path).tls_certificate_sds_secret_configs[0]"))
        } else if case .server = role {
            throw ConfigError(path: path, message: "needs a certificate to present: tls_certificates or tls_certificate_sds_secret_configs")
        }

        switch common.validationContextType {
        case .validationContext(let context)?:
            let contextPath = "\(path).validation_context"
            subjectAltNames = try SubjectAltNameMatcher.decode(context, path: contextPath)
            if context.hasTrustedCa { trust = .inline(try TrustBundle(context, path: contextPath)) }
        case .validationContextSdsSecretConfig(let reference)?:
            trust = .secret(try SecretReference(reference, path: "\(path).validation_context_sds_secret_config"))
        case .combinedValidationContext(let combined)?:
            let combinedPath = "\(path).combined_validation_context"
            guard combined.hasValidationContextSdsSecretConfig else {
                throw ConfigError(path: "\(combinedPath).validation_context_sds_secret_config", message: "is required")
            }
            trust = .secret(try SecretReference(combined.validationContextSdsSecretConfig,
                                                path: "\(combinedPath).validation_context_sds_secret_config"))
            let defaults = combined.defaultValidationContext
            if defaults.hasTrustedCa {
                throw ConfigError(path: "\(combinedPath).default_validation_context.trusted_ca",
                                  message: "the trusted CA of a combined validation context comes from its SDS secret")
            }
            subjectAltNames = try SubjectAltNameMatcher.decode(defaults, path: "\(combinedPath).default_validation_context")
        case nil:
            break
        }
        if !subjectAltNames.isEmpty && trust == nil {
            throw ConfigError(path: "\(path).validation_context", message: "subject alt names need a trusted CA to verify the peer against")
        }

        for (index, name) in common.alpnProtocols.enumerated() where name.isEmpty || name.utf8.count > 255 {
            throw ConfigError(path: "\(path).alpn_protocols[\(index)]", message: "\"\(name)\" is not an ALPN protocol name (1-255 bytes)")
        }
        applicationProtocols = common.alpnProtocols
        if common.hasTlsParams {
            let parameters = try Self.parameters(common.tlsParams, path: "\(path).tls_params")
            if let minimum = parameters.minimum { minimumVersion = minimum }
            maximumVersion = parameters.maximum
            cipherSuites = parameters.cipherSuites
            curves = parameters.curves
        }
        let contextRole: TLSContextKey.Role = switch role {
        case .client: .client
        case .server(let requireClientCertificate): .server(requireClientCertificate: requireClientCertificate)
        }
        contextKey = TLSContextKey(role: contextRole, certificate: certificate, trust: trust, subjectAltNames: subjectAltNames,
                                   applicationProtocols: applicationProtocols, minimumVersion: minimumVersion,
                                   maximumVersion: maximumVersion, cipherSuites: cipherSuites, curves: curves)
    }

    /// `tls_params`: the versions (nil: TLS_AUTO), the cipher list and the curves, checked.
    private static func parameters(_ parameters: Envoy_Extensions_TransportSockets_Tls_V3_TlsParameters, path: String)
        throws(ConfigError) -> (minimum: TLSVersion?, maximum: TLSVersion?, cipherSuites: String?, curves: [NIOTLSCurve]?) {
        func version(_ value: Envoy_Extensions_TransportSockets_Tls_V3_TlsParameters.TlsProtocol,
                     field: String) throws(ConfigError) -> (TLSVersion, Int)? {
            switch value {
            case .tlsAuto: return nil
            case .tlsv10: return (.tlsv1, 10)
            case .tlsv11: return (.tlsv11, 11)
            case .tlsv12: return (.tlsv12, 12)
            case .tlsv13: return (.tlsv13, 13)
            case .UNRECOGNIZED(let number):
                throw ConfigError(path: "\(path).\(field)", message: "\(number) is not a TLS version")
            }
        }
        let minimum = try version(parameters.tlsMinimumProtocolVersion, field: "tls_minimum_protocol_version")
        let maximum = try version(parameters.tlsMaximumProtocolVersion, field: "tls_maximum_protocol_version")
        if let minimum, let maximum, minimum.1 > maximum.1 {
            throw ConfigError(path: "\(path).tls_maximum_protocol_version", message: "is below tls_minimum_protocol_version")
        }
        var cipherSuites: String?
        if !parameters.cipherSuites.isEmpty {
            let list = parameters.cipherSuites.joined(separator: ":")
            var probe = TLSConfiguration.makeClientConfiguration()
            probe.trustRoots = .certificates([])
            probe.cipherSuites = list
            do {
                _ = try NIOSSLContext(configuration: probe)
            } catch {
                throw ConfigError(path: "\(path).cipher_suites", message: "\"\(list)\" names no cipher suite BoringSSL has (\(error))")
            }
            cipherSuites = list
        }
        var curves: [NIOTLSCurve]?
        if !parameters.ecdhCurves.isEmpty {
            var named: [NIOTLSCurve] = []
            for (index, name) in parameters.ecdhCurves.enumerated() {
                switch name {
                case "X25519": named.append(.x25519)
                case "P-256": named.append(.secp256r1)
                case "P-384": named.append(.secp384r1)
                case "P-521": named.append(.secp521r1)
                case "X25519MLKEM768": named.append(.x25519_MLKEM768)
                default:
                    throw ConfigError(path: "\(path).ecdh_curves[\(index)]",
                                      message: "\"\(name)\" is not supported (X25519, P-256, P-384, P-521, X25519MLKEM768)")
                }
            }
            curves = named
        }
        return (minimum?.0, maximum?.0, cipherSuites, curves)
    }

    /// The TLS context of a socket named tls, or nil for raw_buffer; anything else is refused.
    private static func typedConfig(_ socket: Envoy_Config_Core_V3_TransportSocket, expecting type: String,
                                    path: String) throws(ConfigError) -> Google_Protobuf_Any? {
        let typed: Google_Protobuf_Any? = if case .typedConfig(let any)? = socket.configType { any } else { nil }
        if socket.name == rawBufferSocketName || typed?.typeURL == rawBufferType { return nil }
        guard socket.name == tlsSocketName || typed?.typeURL == type else {
            throw ConfigError(path: "\(path).name",
                              message: "\"\(socket.name)\" is not supported (\(tlsSocketName), \(rawBufferSocketName))")
        }
        guard let typed, typed.typeURL == type else {
            throw ConfigError(path: "\(path).typed_config", message: "needs a \(type)")
        }
        return typed
    }

    private static func unpack<M: SwiftProtobuf.Message>(_ any: Google_Protobuf_Any, path: String) throws(ConfigError) -> M {
        do {
            return try M(serializedBytes: [UInt8](any.value))
        } catch {
            throw ConfigError(path: path, message: "does not decode as \(M.protoMessageName): \(error)")
        }
    }

    /// `{"name": …, "typed_config": {"@type": …, …}}` with Envoy's field names.
    private static func dump(name: String, type: String, context: some SwiftProtobuf.Message) -> ConfigValue {
        var options = JSONEncodingOptions()
        options.preserveProtoFieldNames = true
        var typed: [String: ConfigValue] = ["@type": .string(type)]
        if let text = try? context.jsonString(options: options), case .object(let fields)? = try? ConfigValue.parse(json: text) {
            typed.merge(fields) { first, _ in first }
        }
        return .object(["name": .string(name.isEmpty ? tlsSocketName : name), "typed_config": .object(typed)])
    }
}

extension TransportSocketConfig: Equatable {
    /// The same settings: the context key's and SNI. The dump, which may show fields Capstan ignores, is left out.
    static func == (lhs: TransportSocketConfig, rhs: TransportSocketConfig) -> Bool {
        lhs.contextKey == rhs.contextKey && lhs.role == rhs.role
    }
}

extension Envoy_Extensions_TransportSockets_Tls_V3_CommonTlsContext {
    /// Replaces inline private keys with `[redacted]`, as Envoy's config dump shows them.
    mutating func redactPrivateKeys() {
        for index in tlsCertificates.indices where tlsCertificates[index].hasPrivateKey {
            switch tlsCertificates[index].privateKey.specifier {
            case .inlineBytes?, .inlineString?:
                tlsCertificates[index].privateKey.inlineString = "[redacted]"
            default:
                continue
            }
        }
    }
}
