import NIOCore

/// One of the proxy's listening ports and what it does with the connections it accepts.
struct ListenerSpec: Sendable {
    enum Direction: Sendable {
        /// Connections the application made, redirected by the outbound rules.
        case outbound
        /// Connections to the application, captured by the inbound rules.
        case inbound
    }

    /// Istio's names: `virtualOutbound` on 15001, `virtualInbound` on 15006.
    var name: String
    var direction: Direction
    var port: Int
    /// Listens with `IP_TRANSPARENT`: the accepted socket's local address is the original destination.
    var transparent: Bool

    /// The stat prefix Envoy uses for a listener on all addresses.
    var statName: String { "0.0.0.0_\(port)" }
}
