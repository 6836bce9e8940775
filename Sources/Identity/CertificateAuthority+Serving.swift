#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials
import SwiftASN1
import X509

extension CertificateAuthority {
    /// A serving certificate for the control plane itself (istiod's `istiod.istio-system.svc`), so agents
    /// verify the CA and xDS endpoint against the same root as workloads. `names` are DNS names or IP
    /// addresses. Returns the chain (leaf, intermediates; the root left out) and the new key.
    public func issueServingCertificate(for names: [String], lifetime: Duration = defaultLifetime,
                                        now: Date = Date()) throws(CertificateAuthorityError) -> (chainPEM: [String], key: WorkloadKey) {
        guard !names.isEmpty else { throw .invalidSettings("a serving certificate needs at least one name") }
        var alternativeNames: [GeneralName] = []
        for name in names {
            if let address = IPAddressBytes(name) {
                alternativeNames.append(.ipAddress(ASN1OctetString(contentBytes: address.bytes[...])))
            } else {
                alternativeNames.append(.dnsName(name))
            }
        }
        do {
            let key = try WorkloadKey(generating: .ecdsaP256)
            let leaf = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
                notValidBefore: now.subtracting(Self.clockSkewAllowance), notValidAfter: now.adding(min(lifetime, maximumLifetime)),
                issuer: issuerName, subject: try DistinguishedName { CommonName(names[0]) },
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                    try ExtendedKeyUsage([.serverAuth])
                    SubjectAlternativeNames(alternativeNames)
                },
                issuerPrivateKey: certificateSigningKey)
            return ([try leaf.serializeAsPEM().pemString + "\n"] + issuingChainPEM, key)
        } catch {
            throw .issuing("a serving certificate for \(names.joined(separator: ", ")): \(error)")
        }
    }
}

/// An IPv4 or IPv6 address in text, as the bytes a certificate's iPAddress SAN holds.
private struct IPAddressBytes {
    let bytes: [UInt8]

    init?(_ text: String) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
        } else {
            return nil
        }
    }
}
