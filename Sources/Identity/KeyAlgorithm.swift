/// The kind of key a workload generates for its certificate.
public enum KeyAlgorithm: Sendable, Hashable, CustomStringConvertible {
    /// ECDSA on NIST P-256: small, fast, the default.
    case ecdsaP256
    /// RSA with a modulus of `bits` (2048 to 4096, a multiple of 128), for peers that only speak RSA.
    case rsa(bits: Int)

    /// What a workload uses unless told otherwise.
    public static let `default` = KeyAlgorithm.ecdsaP256
    /// The RSA size used when RSA is asked for without a size (Istio's default).
    public static let defaultRSABits = 2048
    /// RSA moduli we generate: below 2048 is breakable, above 4096 only slows every handshake.
    public static let rsaBits = 2048...4096

    /// Refuses an RSA size outside `rsaBits` or not a multiple of 128 (the generator would silently round it
    /// down), naming it.
    public func validated() throws(WorkloadKeyError) -> KeyAlgorithm {
        if case .rsa(let bits) = self, !Self.rsaBits.contains(bits) || bits % 128 != 0 { throw .unsupportedRSASize(bits) }
        return self
    }

    public var description: String {
        switch self {
        case .ecdsaP256: "ECDSA P-256"
        case .rsa(let bits): "RSA \(bits)"
        }
    }
}
