import _CryptoExtras
import Crypto
import FoundationEssentials
import SwiftASN1
import X509

/// The control plane's certificate signer: issues workload certificates for CSRs, Istio-style. The
/// identity in a certificate is the authenticated caller's, never what the CSR asks for.
///
/// It signs either as a self-signed root (generated on first start, see `loadOrGenerate`) or as an
/// intermediate plugged in with Istio's `cacerts` layout.
public struct CertificateAuthority: Sendable {
    /// The certificate leaves are signed with: the root itself, or a plugged-in intermediate.
    public let signingCertificate: Certificate
    let signingKey: WorkloadKey
    /// From the signing certificate up to, not including, the root; empty when the CA signs as the root.
    public let issuingChain: [Certificate]
    /// The trusted roots (one, or several while a root is being rotated).
    public let roots: [Certificate]
    /// The roots as PEM, Istio's `root-cert.pem`.
    public let rootCertificatePEM: String
    /// `issuingChain` as PEM, each ending with a newline.
    let issuingChainPEM: [String]
    /// What follows the leaf in every `sign` answer: `issuingChainPEM`, then each root on its own.
    let chainAboveLeafPEM: [String]
    /// The leaves' issuer: the signing certificate's subject.
    let issuerName: DistinguishedName
    /// `signingKey` in the form X509 signs with, converted once rather than per certificate.
    let certificateSigningKey: Certificate.PrivateKey
    /// The earliest notAfter of the signing certificate, the chain and the roots: no leaf outlives it.
    let validityEnd: Date
    /// The extensions every workload leaf carries before its SAN: CA no, key usages, and the
    /// authority key identifier (the signing certificate's subject key identifier, when it has one).
    let workloadLeafExtensions: Certificate.Extensions
    /// The longest lifetime a leaf gets, whatever is asked.
    public internal(set) var maximumLifetime: Duration

    /// The lifetime of a leaf when the request does not ask for one (Istio's `DEFAULT_WORKLOAD_CERT_TTL`).
    public static let defaultLifetime: Duration = .seconds(24 * 3600)
    /// Istio's `MAX_WORKLOAD_CERT_TTL`.
    public static let defaultMaximumLifetime: Duration = .seconds(90 * 24 * 3600)
    /// How long a generated root is valid (Istio's self-signed root: 10 years).
    public static let defaultRootValidity: Duration = .seconds(10 * 365 * 24 * 3600)
    /// How far back a certificate's notBefore is set, so a peer whose clock is a little behind accepts it.
    public static let clockSkewAllowance: Duration = .seconds(60)

    /// Checks that the pieces make a CA: `signingKey` is the key of `signingCertificate`, a CA certificate
    /// that, through `intermediates` (the certificates between it and the root, neither included), verifies
    /// up to one of `roots`. A CA signing as a root has no intermediates.
    public init(signingCertificate: Certificate, signingKey: WorkloadKey, intermediates: [Certificate] = [], roots: [Certificate],
                maximumLifetime: Duration = defaultMaximumLifetime) throws(CertificateAuthorityError) {
        guard signingCertificate.publicKey == signingKey.publicKey else {
            throw .keyMismatch("the signing key is not the key of \(CertificateChain.name(signingCertificate))")
        }
        guard maximumLifetime > .zero else { throw .invalidSettings("the maximum certificate lifetime must be positive, not \(maximumLifetime)") }
        do throws(CertificateChainError) {
            try CertificateChain.requireCertificateAuthority(signingCertificate)
            if roots.contains(signingCertificate) {
                guard intermediates.isEmpty else { throw .broken("the signing certificate is a root, yet intermediates were given") }
                self.issuingChain = []
            } else {
                self.issuingChain = [signingCertificate] + intermediates
                try CertificateChain.verify(issuingChain, roots: roots)
            }
            self.issuingChainPEM = try issuingChain.map(CertificateChain.pem)
            let rootPEMs = try roots.map(CertificateChain.pem)
            self.rootCertificatePEM = rootPEMs.joined()
            // One certificate per entry, as istiod answers (ztunnel expects it).
            self.chainAboveLeafPEM = issuingChainPEM + rootPEMs
        } catch {
            throw .invalidMaterial("the CA certificates", error.reason)
        }
        self.signingCertificate = signingCertificate
        self.signingKey = signingKey
        self.roots = roots
        self.maximumLifetime = maximumLifetime
        issuerName = signingCertificate.subject
        certificateSigningKey = signingKey.certificateKey
        validityEnd = (issuingChain + roots).reduce(signingCertificate.notValidAfter) { min($0, $1.notValidAfter) }
        // A signing certificate without a readable subject key identifier gives leaves no authority key
        // identifier: verifiers then find the issuer by name.
        let authorityKeyID = (try? signingCertificate.extensions.subjectKeyIdentifier)?.keyIdentifier
        do {
            workloadLeafExtensions = try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                if let authorityKeyID { AuthorityKeyIdentifier(keyIdentifier: authorityKeyID) }
            }
        } catch {
            throw .issuing("the extensions of workload certificates for \(CertificateChain.name(signingCertificate)): \(error)")
        }
    }

    /// A new self-signed ECDSA P-256 root for `trustDomain`: subject O=<trust domain>, CN=Capstan root CA,
    /// basicConstraints CA, keyUsage keyCertSign and cRLSign.
    public static func generateRoot(trustDomain: String, validity: Duration = defaultRootValidity,
                                    now: Date = Date()) throws(CertificateAuthorityError) -> CertificateAuthority {
        let organization: String
        do {
            organization = try WorkloadIdentity.checkTrustDomain(trustDomain)
        } catch {
            throw .invalidSettings(error.description)
        }
        guard validity > clockSkewAllowance else { throw .invalidSettings("a root must be valid for more than a minute, not \(validity)") }
        let key: WorkloadKey
        let root: Certificate
        do {
            key = try WorkloadKey(generating: .ecdsaP256)
            let name = try DistinguishedName {
                OrganizationName(organization)
                CommonName("Capstan root CA")
            }
            root = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
                notValidBefore: now.subtracting(clockSkewAllowance), notValidAfter: now.adding(validity),
                issuer: name, subject: name,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                    Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                    SubjectKeyIdentifier(hash: key.publicKey)
                },
                issuerPrivateKey: key.certificateKey)
        } catch {
            throw .issuing("generating the root for \(trustDomain): \(error)")
        }
        return try CertificateAuthority(signingCertificate: root, signingKey: key, roots: [root])
    }

    /// Issues a workload certificate for the key in `csrPEM`, for `identity` (the authenticated caller).
    /// The CSR must carry a valid self-signature and an ECDSA P-256/P-384 or RSA ≥ 2048 key; its subject and
    /// SANs are ignored. The leaf lives `requestedLifetime` (24 h when zero or negative), at most
    /// `maximumLifetime`, and never past the CA's own certificates. Returns Istio's `cert_chain` in istiod's
    /// form: [leaf, intermediates…, roots…] as PEM, one certificate per entry, each ending with a newline.
    public func sign(csrPEM: String, for identity: WorkloadIdentity, requestedLifetime: Duration = .zero,
                     now: Date = Date()) throws(CertificateAuthorityError) -> [String] {
        let request = try Self.readCSR(csrPEM)
        guard request.publicKey.isValidSignature(request.signature, for: request) else { throw .badCSRSignature }
        try Self.checkStrength(of: request.publicKey)

        let lifetime = min(requestedLifetime > .zero ? requestedLifetime : Self.defaultLifetime, maximumLifetime)
        guard now < validityEnd else { throw .expired(CertificateChain.name(signingCertificate), notAfter: validityEnd) }
        let notAfter = min(now.adding(lifetime), validityEnd)
        do {
            var extensions = workloadLeafExtensions
            // The subject is empty, so the SAN is critical (RFC 5280 §4.2.1.6), as in Istio's certificates.
            try extensions.append(Critical(SubjectAlternativeNames([.uniformResourceIdentifier(identity.spiffeID)])).makeCertificateExtension())
            let leaf = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: request.publicKey,
                notValidBefore: now.subtracting(Self.clockSkewAllowance), notValidAfter: notAfter,
                issuer: issuerName, subject: DistinguishedName(), extensions: extensions,
                issuerPrivateKey: certificateSigningKey)
            return [try leaf.serializeAsPEM().pemString + "\n"] + chainAboveLeafPEM
        } catch {
            throw .issuing("signing a certificate for \(identity): \(error)")
        }
    }

    /// Parses a CSR (PEM `CERTIFICATE REQUEST`, or the older `NEW CERTIFICATE REQUEST`).
    private static func readCSR(_ pem: String) throws(CertificateAuthorityError) -> CertificateSigningRequest {
        let document: PEMDocument
        do {
            document = try PEMDocument(pemString: pem)
        } catch {
            throw .malformedCSR("not a single PEM block: \(error)")
        }
        guard ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"].contains(document.discriminator) else {
            throw .malformedCSR("a \"\(document.discriminator)\" PEM block, not a CERTIFICATE REQUEST")
        }
        do {
            return try CertificateSigningRequest(derEncoded: document.derBytes)
        } catch {
            // X509 refuses RSA keys under 2048 bits while parsing; say so plainly rather than as a parse error.
            if let bits = rsaKeyBits(inCSR: document.derBytes), bits < 2048 { throw .weakKey("an RSA key of \(bits) bits") }
            throw .malformedCSR("\(error)")
        }
    }

    /// The size of the RSA key in a CSR's subjectPublicKeyInfo, read without X509's minimum size.
    private static func rsaKeyBits(inCSR der: [UInt8]) -> Int? {
        guard let request = try? DER.parse(der), case .constructed(let requestFields) = request.content,
              let info = requestFields.first(where: { _ in true }), case .constructed(let infoFields) = info.content
        else { return nil }
        // CertificationRequestInfo ::= SEQUENCE { version, subject, subjectPKInfo, attributes }
        let fields = Array(infoFields)
        guard fields.count >= 3 else { return nil }
        return (try? _RSA.Signing.PublicKey(unsafeDERRepresentation: fields[2].encodedBytes))?.keySizeInBits
    }

    /// Accepts the keys mesh TLS peers handle: ECDSA P-256 or P-384, RSA of 2048 bits or more.
    private static func checkStrength(of key: Certificate.PublicKey) throws(CertificateAuthorityError) {
        if P256.Signing.PublicKey(key) != nil || P384.Signing.PublicKey(key) != nil { return }
        if let rsa = _RSA.Signing.PublicKey(key) {
            guard rsa.keySizeInBits >= 2048 else { throw .weakKey("an RSA key of \(rsa.keySizeInBits) bits") }
            return
        }
        throw .unsupportedKey("\(key)")
    }
}

extension CertificateAuthority: CustomStringConvertible {
    /// Names the certificates; never the key.
    public var description: String {
        "CertificateAuthority(signing as \(CertificateChain.name(signingCertificate)), \(issuingChain.count) chain certificate(s), root \(roots.map(CertificateChain.name).joined(separator: ", ")))"
    }
}

/// Why a CA could not be made, read, saved, or would not sign; names the file or the reason, never a key.
public enum CertificateAuthorityError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformedCSR(String)
    case badCSRSignature
    case weakKey(String)
    case unsupportedKey(String)
    case expired(String, notAfter: Date)
    case file(CredentialFileError)
    case incompleteDirectory(String, missing: [String])
    case invalidMaterial(String, String)
    case keyMismatch(String)
    case invalidSettings(String)
    case issuing(String)

    public var description: String {
        switch self {
        case .malformedCSR(let reason): "the CSR cannot be read: \(reason)"
        case .badCSRSignature: "the CSR's signature does not verify with its own public key (altered or not made by the key's holder)"
        case .weakKey(let key): "the CSR has \(key): at least 2048 bits are required"
        case .unsupportedKey(let key): "the CSR's key (\(key)) is not supported: use ECDSA P-256, P-384 or RSA of 2048 bits or more"
        case .expired(let certificate, let notAfter): "the CA certificate \(certificate) expired at \(notAfter)"
        case .file(let error): "\(error)"
        case .incompleteDirectory(let directory, let missing):
            "\(directory) holds part of a CA: \(missing.joined(separator: ", ")) missing (all of \(CertificateAuthority.FileName.all.joined(separator: ", ")) or none)"
        case .invalidMaterial(let what, let reason): "\(what): \(reason)"
        case .keyMismatch(let reason): reason
        case .invalidSettings(let reason): reason
        case .issuing(let reason): "issuing failed: \(reason)"
        }
    }
}
