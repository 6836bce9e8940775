/// A field of a route configuration that Capstan decodes but its proxy does not act on yet (retries, per-
/// filter configuration, tracing decorators …), kept on the ``RouteTable`` so the proxy counts and logs
/// it: accepted, never silently dropped. Fields that would change where a request goes are refused instead.
public struct FieldNotActedOn: Sendable, Equatable, CustomStringConvertible {
    /// Its path in the route configuration (`route_config "80".virtual_hosts[0].routes[0].route.retry_policy`).
    public var path: String
    /// What Capstan does instead, or why the field makes no difference yet.
    public var reason: String

    public var description: String { "\(path): accepted, not acted on: \(reason)" }
}
