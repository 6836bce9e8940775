import FoundationEssentials
import SwiftASN1
import X509

/// Reading PEM bundles and checking that certificates chain up to a trusted root, shared by the
/// workload side (`WorkloadCertificate`) and the CA side (`CertificateAuthority`).
enum CertificateChain {
    /// Every certificate in `pem`, in order; `what` names the source in errors ("root-cert.pem").
    static func certificates(in pem: String, what: String) throws(CertificateChainError) -> [Certificate] {
        let documents: [PEMDocument]
        do {
            documents = try PEMDocument.parseMultiple(pemString: pem)
        } catch {
            throw .unreadable(what, "not PEM: \(error)")
        }
        guard !documents.isEmpty else { throw .unreadable(what, "no certificate in it") }
        var certificates: [Certificate] = []
        for (index, document) in documents.enumerated() {
            let name = documents.count == 1 ? what : "\(what) (certificate \(index + 1))"
            guard document.discriminator == Certificate.defaultPEMDiscriminator else {
                throw .unreadable(name, "a \"\(document.discriminator)\" PEM block, not a CERTIFICATE")
            }
            do {
                certificates.append(try Certificate(pemDocument: document))
            } catch {
                throw .unreadable(name, "\(error)")
            }
        }
        return certificates
    }

    /// The PEM text of one certificate, ending with a newline so PEMs concatenate into a bundle.
    static func pem(_ certificate: Certificate) throws(CertificateChainError) -> String {
        do {
            return try certificate.serializeAsPEM().pemString + "\n"
        } catch {
            throw .unreadable("certificate \(certificate.subject)", "cannot be encoded: \(error)")
        }
    }

    /// Checks that `chain[0]` is signed by `chain[1]`, …, and the last one by one of `roots`, and that every
    /// issuer is a CA allowed to sign certificates. Returns the root the chain ends at. Validity dates are
    /// the caller's business (a certificate is checked for the time it is used, not the time it is read).
    @discardableResult
    static func verify(_ chain: [Certificate], roots: [Certificate]) throws(CertificateChainError) -> Certificate {
        guard let last = chain.last else { throw .broken("the chain is empty") }
        for index in chain.indices.dropLast() where !signs(chain[index + 1], chain[index]) {
            throw .broken("certificate \(index + 1) (\(name(chain[index]))) is not signed by certificate \(index + 2) (\(name(chain[index + 1])))")
        }
        guard let root = roots.first(where: { signs($0, last) }) else {
            throw .broken("certificate \(chain.count) (\(name(last))) is not signed by the trusted root (\(roots.map(name).joined(separator: ", ")))")
        }
        for issuer in chain.dropFirst() + [root] { try requireCertificateAuthority(issuer) }
        return root
    }

    /// Whether `issuer` names and signed `certificate`.
    private static func signs(_ issuer: Certificate, _ certificate: Certificate) -> Bool {
        issuer.subject == certificate.issuer && issuer.publicKey.isValidSignature(certificate.signature, for: certificate)
    }

    /// Refuses a certificate that may not sign others: basicConstraints CA and, when keyUsage is present, keyCertSign.
    static func requireCertificateAuthority(_ certificate: Certificate) throws(CertificateChainError) {
        let constraints = try? certificate.extensions.basicConstraints
        guard case .isCertificateAuthority = constraints else {
            throw .broken("\(name(certificate)) is not a CA certificate (basicConstraints CA is not true)")
        }
        if let usage = try? certificate.extensions.keyUsage, !usage.keyCertSign {
            throw .broken("\(name(certificate)) may not sign certificates (keyUsage has no keyCertSign)")
        }
    }

    /// A certificate as a person finds it: its subject, or its SAN when the subject is empty.
    static func name(_ certificate: Certificate) -> String {
        if !certificate.subject.isEmpty { return "\(certificate.subject)" }
        if let names = try? certificate.extensions.subjectAlternativeNames, let first = names.first { return "\(first)" }
        return "serial \(certificate.serialNumber)"
    }
}

/// Why certificates could not be read or do not chain up to the root.
enum CertificateChainError: Error {
    case unreadable(String, String)
    case broken(String)

    var reason: String {
        switch self {
        case .unreadable(let what, let reason): "\(what): \(reason)"
        case .broken(let reason): reason
        }
    }
}
