import FoundationEssentials
import X509

/// A workload's key with the certificate chain the CA issued for it and the roots it trusts, checked
/// once when it is made: whatever is served over SDS or written to OUTPUT_CERTS has passed these checks.
public struct WorkloadCertificate: Sendable {
    public let key: WorkloadKey
    /// The SPIFFE ID in the leaf's URI SAN.
    public let identity: WorkloadIdentity
    /// The leaf certificate, issued for `key`.
    public let leaf: Certificate
    /// The leaf then the intermediates, as PEM, without the root: Istio's `cert-chain.pem` and SDS `default`.
    public let certificateChainPEM: String
    /// The trusted roots as PEM: Istio's `root-cert.pem` and SDS `ROOTCA`.
    public let rootCertificatePEM: String

    /// Checks and keeps a CA's answer. `chainPEM` is leaf first, then intermediates; an element may hold
    /// several certificates, and copies of a root (Istio's `cert_chain` ends with the root) are dropped.
    /// Refused, with the reason: a leaf whose public key is not `key`'s, a leaf without exactly one
    /// `spiffe://` URI SAN that is a workload ID, a leaf that is a CA, a chain that does not verify up to
    /// one of the roots in `rootCertificatePEM`, or a leaf whose notAfter is not after its notBefore.
    /// Expiry is not refused here: ask `isValid(at:)`.
    public init(key: WorkloadKey, chainPEM: [String], rootCertificatePEM: String) throws(WorkloadCertificateError) {
        let roots: [Certificate]
        var chain: [Certificate] = []
        do throws(CertificateChainError) {
            roots = try CertificateChain.certificates(in: rootCertificatePEM, what: "the root certificate")
            for (index, element) in chainPEM.enumerated() {
                chain += try CertificateChain.certificates(in: element, what: "chain element \(index + 1)")
            }
        } catch {
            throw .unreadable(error.reason)
        }
        chain.removeAll { roots.contains($0) }
        guard let leaf = chain.first else { throw .emptyChain }

        guard leaf.publicKey == key.publicKey else { throw .keyMismatch(CertificateChain.name(leaf)) }
        guard leaf.notValidBefore < leaf.notValidAfter else { throw .dates(notBefore: leaf.notValidBefore, notAfter: leaf.notValidAfter) }
        if case .isCertificateAuthority = try? leaf.extensions.basicConstraints { throw .leafIsCertificateAuthority(CertificateChain.name(leaf)) }
        identity = try Self.identity(of: leaf)
        do throws(CertificateChainError) {
            try CertificateChain.verify(chain, roots: roots)
            self.certificateChainPEM = try chain.map(CertificateChain.pem).joined()
            self.rootCertificatePEM = try roots.map(CertificateChain.pem).joined()
        } catch {
            throw .untrusted(error.reason)
        }
        self.key = key
        self.leaf = leaf
    }

    /// The workload identity in the leaf's only `spiffe://` URI SAN.
    private static func identity(of leaf: Certificate) throws(WorkloadCertificateError) -> WorkloadIdentity {
        let names: SubjectAlternativeNames?
        do {
            names = try leaf.extensions.subjectAlternativeNames
        } catch {
            throw .identity("the leaf's subjectAltName extension cannot be read: \(error)")
        }
        var spiffeIDs: [String] = []
        for name in names ?? SubjectAlternativeNames() {
            if case .uniformResourceIdentifier(let uri) = name, uri.lowercased().hasPrefix("spiffe://") { spiffeIDs.append(uri) }
        }
        guard spiffeIDs.count == 1 else {
            throw .identity("the leaf has \(spiffeIDs.count) spiffe:// URI SANs, expected exactly one\(spiffeIDs.isEmpty ? "" : ": \(spiffeIDs.joined(separator: ", "))")")
        }
        do {
            return try WorkloadIdentity(spiffeID: spiffeIDs[0])
        } catch {
            throw .identity(error.description)
        }
    }

    public var notBefore: Date { leaf.notValidBefore }
    public var notAfter: Date { leaf.notValidAfter }
    /// From notBefore to notAfter.
    public var lifetime: Duration { notAfter.duration(since: notBefore) }

    /// Whether `date` is inside the leaf's validity period (both ends included, as RFC 5280 says).
    public func isValid(at date: Date) -> Bool {
        notBefore <= date && date <= notAfter
    }

    /// How long the leaf stays valid after `date`; zero once it has expired.
    public func remaining(at date: Date) -> Duration {
        max(notAfter.duration(since: date), .zero)
    }

    /// When to ask for the next certificate, by Istio's rule (`SECRET_GRACE_PERIOD_RATIO`): when `graceRatio`
    /// of the lifetime is left before notAfter (0.5: halfway; 0.2: at 80 % of the lifetime). `jitter` is added
    /// to the ratio to spread a fleet's renewals; the sum is clamped to 0...1 (0: at expiry, 1: at the start).
    ///
    /// The lifetime counts from `receivedAt` when that is later than notBefore: CAs backdate notBefore for
    /// clock skew (ours by a minute), which with a short lifetime would put the rotation in the past.
    public func rotationTime(graceRatio: Double, jitter: Double = 0, receivedAt: Date? = nil) -> Date {
        precondition(graceRatio.isFinite && jitter.isFinite, "grace ratio and jitter must be finite numbers")
        let ratio = min(max(graceRatio + jitter, 0), 1)
        let start = max(notBefore, min(receivedAt ?? notBefore, notAfter))
        return notAfter.addingTimeInterval(-ratio * notAfter.duration(since: start).timeInterval)
    }

    /// `rotationTime(graceRatio:jitter:)` with a jitter drawn uniformly from `-maximumJitter...maximumJitter`
    /// (Istio's `SECRET_GRACE_PERIOD_RATIO_JITTER`, 0.01 by default) using `generator`.
    public func rotationTime(graceRatio: Double, maximumJitter: Double, receivedAt: Date? = nil,
                             using generator: inout some RandomNumberGenerator) -> Date {
        let bound = abs(maximumJitter)
        let jitter = bound > 0 ? Double.random(in: -bound...bound, using: &generator) : 0
        return rotationTime(graceRatio: graceRatio, jitter: jitter, receivedAt: receivedAt)
    }
}

extension WorkloadCertificate: CustomStringConvertible {
    /// Identity, serial and validity; never the key.
    public var description: String {
        "WorkloadCertificate(\(identity), serial \(leaf.serialNumber), valid \(notBefore) to \(notAfter), \(key))"
    }
}

/// Why a CA's answer was not accepted as this workload's certificate.
public enum WorkloadCertificateError: Error, Equatable, Sendable, CustomStringConvertible {
    case unreadable(String)
    case emptyChain
    case noTrustBundle
    case keyMismatch(String)
    case dates(notBefore: Date, notAfter: Date)
    case leafIsCertificateAuthority(String)
    case identity(String)
    case untrusted(String)

    public var description: String {
        switch self {
        case .unreadable(let reason): "certificate unreadable: \(reason)"
        case .emptyChain: "the certificate chain has no leaf certificate"
        case .noTrustBundle: "the CA's answer has no root: a single cert_chain entry and no root_cert"
        case .keyMismatch(let leaf): "the leaf certificate (\(leaf)) was not issued for this workload's key"
        case .dates(let notBefore, let notAfter): "the leaf certificate's notAfter (\(notAfter)) is not after its notBefore (\(notBefore))"
        case .leafIsCertificateAuthority(let leaf): "the leaf certificate (\(leaf)) is a CA certificate, not a workload's"
        case .identity(let reason): "no workload identity in the leaf certificate: \(reason)"
        case .untrusted(let reason): "the certificate chain does not verify: \(reason)"
        }
    }
}
