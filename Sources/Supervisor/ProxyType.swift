/// What the agent runs the proxy as, pilot-agent's `proxy sidecar` or `proxy router`: the first part
/// of the node id, by which the control plane chooses what to generate.
public enum ProxyType: String, Sendable, CaseIterable {
    /// A pod's sidecar: captured traffic, `virtualOutbound` and `virtualInbound`.
    case sidecar
    /// A gateway (istio-ingressgateway, istio-egressgateway): no capture, listeners on the Gateway's
    /// ports; its drain keeps those listeners serving while a load balancer takes it out.
    case router
}
