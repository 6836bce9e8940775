import FoundationEssentials
import Identity
import SwiftProtobuf
import XDS

/// The TLS secrets Gateways name by `credentialName`, read from a directory laid out as Kubernetes
/// TLS secrets are mounted: `DIR/NAME/tls.crt`, `DIR/NAME/tls.key` and, optionally, `DIR/NAME/ca.crt`.
/// They are served to gateway proxies over ADS under istiod's names: `kubernetes://NAME` (certificate
/// and key) and `kubernetes://NAME-cacert` (the CA bundle MUTUAL and OPTIONAL_MUTUAL servers verify
/// clients with).
/// Only the secrets some Gateway names are read; every one is checked (``ServingCredential``) and a
/// refusal names the secret and the file, never the key.
struct GatewaySecrets: Sendable, Equatable {
    static let prefix = "kubernetes://"
    static let caSuffix = "-cacert"

    /// By secret name (without the prefix).
    var credentials: [String: ServingCredential] = [:]

    /// istiod's SDS name of a credential's certificate and key.
    static func certificateResourceName(_ credential: String) -> String { prefix + credential }
    /// istiod's SDS name of a credential's CA bundle.
    static func caResourceName(_ credential: String) -> String { prefix + credential + caSuffix }

    /// A Kubernetes secret name: a DNS-1123 subdomain (lowercase letters, digits, `-` and `.`), which
    /// also keeps the name from leaving the secrets directory.
    static func isSecretName(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 253 && text.first != "-" && text.first != "." && text.last != "-" && text.last != "."
            && !text.contains("..")
            && text.allSatisfy { ($0.isASCII && $0.isLetter && $0.isLowercase) || ($0.isASCII && $0.isNumber) || $0 == "-" || $0 == "." }
    }

    /// Reads the credentials `config`'s Gateways name from `directory`. Without a directory, naming
    /// any is a problem (there is nowhere to read it from).
    static func read(for config: MeshConfig, directory: String?) -> (secrets: GatewaySecrets, problems: [MeshConfigProblem]) {
        var secrets = GatewaySecrets()
        var problems: [MeshConfigProblem] = []
        for gateway in config.gateways {
            for (index, server) in gateway.servers.enumerated() {
                guard let name = server.tls?.credentialName, secrets.credentials[name] == nil else { continue }
                let field = "spec.servers[\(index)].tls.credentialName"
                guard let directory else {
                    problems.append(gateway.origin.problem(field, "secret \"\(name)\" cannot be read: the control plane has no --secrets-dir"))
                    continue
                }
                do throws(ServingCredentialError) {
                    let credential = try readCredential(name, directory: directory)
                    if let mode = server.tls?.mode, mode.verifiesClientsWithCredential, credential.caPEM == nil {
                        problems.append(gateway.origin.problem(field, "secret \"\(name)\" has no ca.crt, which tls.mode \(mode.rawValue) verifies clients with"))
                        continue
                    }
                    secrets.credentials[name] = credential
                } catch {
                    problems.append(gateway.origin.problem(field, error.reason))
                }
            }
        }
        return (secrets, problems)
    }

    private static func readCredential(_ name: String, directory: String) throws(ServingCredentialError) -> ServingCredential {
        let base = "\(directory.hasSuffix("/") ? String(directory.dropLast()) : directory)/\(name)"
        func read(_ file: String, optional: Bool = false) throws(ServingCredentialError) -> String? {
            let path = "\(base)/\(file)"
            if optional && !CredentialFile.exists(path) { return nil }
            do {
                return try CredentialFile.read(path)
            } catch {
                throw ServingCredentialError(reason: "secret \"\(name)\": \(error)")
            }
        }
        return try ServingCredential(chainPEM: read("tls.crt")!, keyPEM: read("tls.key")!, caPEM: read("ca.crt", optional: true),
                                     what: "secret \"\(name)\" (\(base))")
    }

    /// The SDS resources of the credentials `names` (secret names), for one gateway proxy.
    func resources(_ names: Set<String>) throws -> [MeshResources.Resource] {
        var resources: [MeshResources.Resource] = []
        for name in names.sorted() {
            guard let credential = credentials[name] else { continue }
            var secret = Envoy_Extensions_TransportSockets_Tls_V3_Secret()
            secret.name = Self.certificateResourceName(name)
            secret.tlsCertificate.certificateChain.inlineBytes = Data(credential.chainPEM.utf8)
            secret.tlsCertificate.privateKey.inlineBytes = Data(credential.keyPEM.utf8)
            resources.append((secret.name, try .packed(secret, as: .secret)))
            if let ca = credential.caPEM {
                var bundle = Envoy_Extensions_TransportSockets_Tls_V3_Secret()
                bundle.name = Self.caResourceName(name)
                bundle.validationContext.trustedCa.inlineBytes = Data(ca.utf8)
                resources.append((bundle.name, try .packed(bundle, as: .secret)))
            }
        }
        return resources
    }
}
