import Identity
import SwiftProtobuf
import Synchronization
import XDS

/// What the agent serves the proxy over SDS: Istio's two secrets, `default` (the workload certificate
/// chain and its key, inline) and `ROOTCA` (the trust bundle). Each new certificate is a new version,
/// which the SDS server pushes; an expired certificate is withdrawn, never served.
public final class WorkloadSecrets: ADSSnapshotSource {
    /// Istio's SDS resource names.
    public static let certificateName = "default"
    public static let rootName = "ROOTCA"

    private let state = Mutex<(version: Int, resources: VersionedResources)>((0, VersionedResources(version: "", resources: [])))

    public init() {}

    /// Serves `certificate` from now on (nil: serve nothing). Returns the new version.
    @discardableResult
    public func serve(_ certificate: WorkloadCertificate?) throws -> String {
        var resources: [(name: String, resource: Google_Protobuf_Any)] = []
        if let certificate {
            var tls = Envoy_Extensions_TransportSockets_Tls_V3_Secret()
            tls.name = Self.certificateName
            tls.tlsCertificate.certificateChain.inlineString = certificate.certificateChainPEM
            tls.tlsCertificate.privateKey.inlineString = certificate.key.pkcs8PEM
            var root = Envoy_Extensions_TransportSockets_Tls_V3_Secret()
            root.name = Self.rootName
            root.validationContext.trustedCa.inlineString = certificate.rootCertificatePEM
            resources = [(Self.certificateName, try .packed(tls, as: .secret)), (Self.rootName, try .packed(root, as: .secret))]
        }
        return state.withLock { state in
            state.version += 1
            state.resources = VersionedResources(version: String(state.version), resources: resources)
            return state.resources.version
        }
    }

    public func snapshot(for node: Envoy_Config_Core_V3_Node) -> XDSSnapshot {
        XDSSnapshot(types: [.secret: state.withLock { $0.resources }])
    }
}
