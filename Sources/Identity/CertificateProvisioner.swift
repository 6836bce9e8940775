import FoundationEssentials
import Logging
import Synchronization
import XDS

/// Keeps a workload supplied with a valid certificate, as pilot-agent's secret manager does: a fresh
/// key and CSR for each request, the first certificate at start, the next one when
/// `SECRET_GRACE_PERIOD_RATIO` of the lifetime is left (with jitter), and retries with backoff when the
/// CA fails. The certificate in hand keeps being served while it is valid; once it expires it is
/// withdrawn, never served.
public final class CertificateProvisioner: Sendable {
    public struct Settings: Sendable {
        public var identity: WorkloadIdentity
        public var keyAlgorithm: KeyAlgorithm
        /// What to ask the CA for (`SECRET_TTL`, 24 h in Istio).
        public var requestedLifetime: Duration
        /// `SECRET_GRACE_PERIOD_RATIO`: rotate when this share of the lifetime is left.
        public var graceRatio: Double
        /// Spread of the rotation point, as a share of the lifetime (Istio's jitter, 0.01).
        public var maximumJitter: Double
        /// Retry delays after a failed request, as the xDS client's reconnects.
        public var retry: RetryBackoff

        public init(identity: WorkloadIdentity, keyAlgorithm: KeyAlgorithm = .default,
                    requestedLifetime: Duration = .seconds(24 * 3600), graceRatio: Double = 0.5,
                    maximumJitter: Double = 0.01, retry: RetryBackoff = .init()) {
            self.identity = identity
            self.keyAlgorithm = keyAlgorithm
            self.requestedLifetime = requestedLifetime
            self.graceRatio = graceRatio
            self.maximumJitter = maximumJitter
            self.retry = retry
        }
    }

    /// What the provisioner tells its users.
    public enum Event: Sendable {
        /// A new certificate, checked: serve it from now on.
        case issued(WorkloadCertificate)
        /// The certificate in hand expired before a new one came: stop serving it.
        case expired
    }

    public let settings: Settings
    private let authority: CertificateAuthorityClient
    private let logger: Logger
    private let held = Mutex<WorkloadCertificate?>(nil)

    public init(settings: Settings, authority: CertificateAuthorityClient, logger: Logger) {
        self.settings = settings
        self.authority = authority
        self.logger = logger
    }

    /// The certificate to serve now: nil before the first one and after one expired unreplaced.
    public var current: WorkloadCertificate? {
        held.withLock { certificate in certificate.flatMap { $0.isValid(at: .now) ? $0 : nil } }
    }

    /// Requests, rotates and retries until the task is cancelled, telling `events` of each change.
    public func run(events: @escaping @Sendable (Event) -> Void) async {
        var generator = SystemRandomNumberGenerator()
        var failures = 0
        while !Task.isCancelled {
            do {
                let certificate = try await request()
                failures = 0
                let rotation = certificate.rotationTime(graceRatio: settings.graceRatio, maximumJitter: settings.maximumJitter,
                                                        receivedAt: .now, using: &generator)
                held.withLock { $0 = certificate }
                logger.info("workload certificate issued", metadata: [
                    "identity": "\(certificate.identity)", "serial": "\(certificate.leaf.serialNumber)",
                    "expires": "\(certificate.notAfter)", "rotation": "\(rotation)",
                ])
                events(.issued(certificate))
                try await Task.sleep(for: max(rotation.duration(since: .now), .zero))
            } catch is CancellationError {
                return
            } catch {
                failures += 1
                let delay = settings.retry.delay(attempt: failures - 1)
                let held = self.held.withLock { $0 }
                logger.warning("certificate request failed, retrying", metadata: [
                    "ca": "\(authority.address)", "error": "\(error)", "in": "\(delay)",
                    "serving": "\(held.map { $0.isValid(at: .now) ? "until \($0.notAfter)" : "nothing (expired)" } ?? "nothing yet")",
                ])
                // Wake at expiry if that comes first, to withdraw the certificate.
                if let held, held.isValid(at: .now), held.remaining(at: .now) < delay {
                    try? await Task.sleep(for: held.remaining(at: .now))
                    if !held.isValid(at: .now) {
                        logger.error("workload certificate expired before a new one was issued", metadata: ["identity": "\(held.identity)"])
                        events(.expired)
                    }
                    continue
                }
                try? await Task.sleep(for: delay)
            }
        }
    }

    /// One request: a fresh key and CSR, the CA's answer checked against them.
    private func request() async throws -> WorkloadCertificate {
        let key = try WorkloadKey(generating: settings.keyAlgorithm)
        let csr = try WorkloadCSR(for: settings.identity, key: key)
        let issued = try await authority.createCertificate(csrPEM: csr.pemEncoded, lifetime: settings.requestedLifetime)
        let certificate = try WorkloadCertificate(key: key, chainPEM: issued.chainPEM, rootCertificatePEM: issued.trustBundlePEM)
        guard certificate.identity == settings.identity else {
            throw CertificateProvisionerError.otherIdentity(asked: settings.identity, issued: certificate.identity)
        }
        return certificate
    }
}

public enum CertificateProvisionerError: Error, CustomStringConvertible {
    case otherIdentity(asked: WorkloadIdentity, issued: WorkloadIdentity)

    public var description: String {
        switch self {
        case .otherIdentity(let asked, let issued): "the CA issued a certificate for \(issued), not \(asked)"
        }
    }
}
