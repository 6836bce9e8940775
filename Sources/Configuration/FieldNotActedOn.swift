/// A configuration field Capstan accepts but does not act on (yet): kept with what it belongs to (a
/// listener, a cluster, a route table, the bootstrap) so that it is counted (`config.fields_not_acted_on`)
/// and said, never silently dropped (README, "Accepted, not acted on"). A field whose absence of effect
/// would change where traffic goes is refused instead.
public struct FieldNotActedOn: Sendable, Equatable, CustomStringConvertible {
    /// Its path, within what holds it (`filter_chains[0].filters[0].typed_config.stat_prefix`) or whole
    /// (`route_config "80".virtual_hosts[0].routes[0].route.retry_policy`).
    public var path: String
    /// What Capstan does instead, or why the field makes no difference to it.
    public var reason: String

    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { described() }

    /// `PATH: accepted, not acted on: WHY`, with the path of what holds it in front, if given.
    public func described(under resource: String = "") -> String {
        "\(resource.isEmpty ? path : "\(resource).\(path)"): accepted, not acted on: \(reason)"
    }
}
