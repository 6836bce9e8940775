import SwiftProtobuf

/// Envoy's dynamic metadata: what one filter leaves on a request for later ones, a structure per filter
/// name. The JWT filter leaves a token's verified claims here (`payload_in_metadata`, and Istio's
/// `istio_authn` view of them), and RBAC's `metadata` principals and permissions read them. Empty for
/// most requests: nothing is allocated until a filter writes.
public struct DynamicMetadata: Sendable {
    private var filters: [String: Google_Protobuf_Struct] = [:]

    public init() {}

    /// The structure a filter left, if any.
    public subscript(filter: String) -> Google_Protobuf_Struct? {
        get { filters[filter] }
        set { filters[filter] = newValue }
    }

    /// The value at `path` under `filter`: each key steps into a structure.
    public func value(filter: String, path: [String]) -> Google_Protobuf_Value? {
        guard let root = filters[filter], let first = path.first else { return nil }
        var value = root.fields[first]
        for key in path.dropFirst() {
            guard case .structValue(let inner)? = value?.kind else { return nil }
            value = inner.fields[key]
        }
        return value
    }

    public var isEmpty: Bool { filters.isEmpty }
}
