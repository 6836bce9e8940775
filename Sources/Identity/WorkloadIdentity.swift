/// A workload's mesh identity, as its certificate's SPIFFE URI SAN carries it:
/// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
public struct WorkloadIdentity: Sendable, Hashable, CustomStringConvertible {
    public var trustDomain: String
    public var namespace: String
    public var serviceAccount: String

    /// Refuses names a SPIFFE path segment or a Kubernetes name could not hold.
    public init(trustDomain: String, namespace: String, serviceAccount: String) throws(WorkloadIdentityError) {
        self.trustDomain = try Self.checkTrustDomain(trustDomain)
        try Self.checkName(namespace, as: "namespace")
        try Self.checkName(serviceAccount, as: "service account")
        self.namespace = namespace
        self.serviceAccount = serviceAccount
    }

    /// Reads `spiffe://TD/ns/NS/sa/SA`; anything else is refused with the URI in the error.
    public init(spiffeID: String) throws(WorkloadIdentityError) {
        let prefix = "spiffe://"
        guard spiffeID.hasPrefix(prefix) else { throw .notSPIFFE(spiffeID) }
        let parts = spiffeID.dropFirst(prefix.count).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[1] == "ns", parts[3] == "sa" else { throw .notWorkload(spiffeID) }
        try self.init(trustDomain: String(parts[0]), namespace: String(parts[2]), serviceAccount: String(parts[4]))
    }

    /// The URI SAN a certificate for this identity carries.
    public var spiffeID: String { "spiffe://\(trustDomain)/ns/\(namespace)/sa/\(serviceAccount)" }

    public var description: String { spiffeID }

    /// Refuses a trust domain that could not stand in a SPIFFE ID; the value is named. Returns it as
    /// identities carry it (lowercased: trust domains compare case-insensitively), so every place that
    /// takes one from outside checks and normalizes it the same way.
    @discardableResult
    public static func checkTrustDomain(_ trustDomain: String) throws(WorkloadIdentityError) -> String {
        try check(trustDomain, as: "trust domain", allowing: ".-_")
        return trustDomain.lowercased()
    }

    /// Refuses a namespace or service account that could not stand in a SPIFFE ID; the value is named.
    static func checkName(_ value: String, as what: String) throws(WorkloadIdentityError) {
        try check(value, as: what, allowing: ".-_")
    }

    private static func check(_ value: String, as what: String, allowing extra: String) throws(WorkloadIdentityError) {
        guard !value.isEmpty, value.utf8.count <= 253,
              value.unicodeScalars.allSatisfy({ $0.properties.isASCIIHexDigit || ("a"..."z").contains($0)
                  || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || extra.unicodeScalars.contains($0) })
        else { throw .badName(what, value) }
    }
}

/// Why a SPIFFE ID or one of its parts was refused; the value is always named.
public enum WorkloadIdentityError: Error, Equatable, CustomStringConvertible {
    case notSPIFFE(String)
    case notWorkload(String)
    case badName(String, String)

    public var description: String {
        switch self {
        case .notSPIFFE(let uri): "\"\(uri)\" is not a SPIFFE ID (spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT)"
        case .notWorkload(let uri): "\"\(uri)\" is not a workload SPIFFE ID: expected spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT"
        case .badName(let what, let value): "\(what) \"\(value)\" is empty, too long or has characters outside [A-Za-z0-9.-_]"
        }
    }
}
