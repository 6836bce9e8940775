import FoundationEssentials
import NIOSSL

/// `/certs`: the certificates of the TLS contexts in force, in the shape of Envoy's answer: for each
/// context the trust roots (`ca_cert`) and the leaf it presents (`cert_chain`), each with its serial
/// number, subject alt names, validity and days until expiration. A context whose SDS secret has not
/// arrived lists nothing for it. Unlike Envoy, identical contexts (every cluster and filter chain that
/// names Istio's `default` and `ROOTCA`) are listed once.
struct CertificatesDump: Encodable {
    /// Envoy's `CertificateDetails`, as its admin API writes it (a uint64 as a string, times in RFC 3339).
    struct Details: Encodable, Hashable {
        /// Envoy's `SubjectAlternateName`: exactly one of its fields is set.
        struct SubjectAltName: Encodable, Hashable {
            var uri: String?
            var dns: String?
            var ip_address: String?
        }
        var path: String
        var serial_number: String
        var subject_alt_names: [SubjectAltName]
        var days_until_expiration: String
        var valid_from: String
        var expiration_time: String

        init(_ certificate: NIOSSLCertificate, path: String, now: Date) {
            self.path = path
            serial_number = Self.serialText(certificate.serialNumber)
            subject_alt_names = PeerIdentity.subjectAltNames(of: certificate).compactMap { name in
                switch name.kind {
                case .uri: SubjectAltName(uri: name.value)
                case .dns: SubjectAltName(dns: name.value)
                case .ipAddress: SubjectAltName(ip_address: name.value)
                case .email: nil
                }
            }
            let notBefore = Date(timeIntervalSince1970: Double(certificate.notValidBefore))
            let notAfter = Date(timeIntervalSince1970: Double(certificate.notValidAfter))
            // Whole days left, 0 once expired (Envoy's count).
            let seconds = notAfter.timeIntervalSince(now)
            days_until_expiration = String(seconds > 0 ? Int(seconds / 86_400) : 0)
            valid_from = notBefore.formatted(.iso8601)
            expiration_time = notAfter.formatted(.iso8601)
        }

        /// The serial as BoringSSL's `BN_bn2hex` writes it and Envoy prints it: lowercase hex, without
        /// leading zero bytes.
        static func serialText(_ bytes: [UInt8]) -> String {
            let significant = bytes.drop { $0 == 0 }
            guard !significant.isEmpty else { return "0" }
            return significant.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        }
    }

    /// One TLS context's certificates.
    struct Context: Encodable, Hashable {
        var ca_cert: [Details]
        var cert_chain: [Details]
    }

    var certificates: [Context]

    init(runtime: ProxyRuntime, now: Date = .now) {
        let configuration = runtime.configuration
        var sockets: [TransportSocketConfig] = []
        for cluster in configuration.clusters.values.sorted(by: { $0.name < $1.name }) {
            if let socket = cluster.config.transportSocket { sockets.append(socket) }
        }
        for listener in configuration.listeners.values.sorted(by: { $0.name < $1.name }) {
            for chain in listener.allChains {
                if let socket = chain.transportSocket { sockets.append(socket) }
            }
        }
        var seen: Set<Context> = []
        certificates = []
        for socket in sockets {
            let context = Self.context(socket, secrets: runtime.secrets, now: now)
            if seen.insert(context).inserted { certificates.append(context) }
        }
    }

    private static func context(_ socket: TransportSocketConfig, secrets: SecretStore, now: Date) -> Context {
        var credentials: TLSCredentials?
        switch socket.certificate {
        case .inline(let inline)?: credentials = inline
        case .secret(let reference)?:
            if case .certificate(let found)? = secrets[reference.name]?.content { credentials = found }
        case nil: break
        }
        var trust: TrustBundle?
        switch socket.trust {
        case .inline(let inline)?: trust = inline
        case .secret(let reference)?:
            if case .trust(let found)? = secrets[reference.name]?.content { trust = found }
        case nil: break
        }
        return Context(ca_cert: trust.map { bundle in bundle.roots.map { Details($0, path: bundle.source, now: now) } } ?? [],
                       cert_chain: credentials.map { [Details($0.chain[0], path: $0.chainSource, now: now)] } ?? [])
    }

    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(self)) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
