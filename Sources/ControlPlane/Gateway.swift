/// `networking.istio.io` Gateway: the ports, hosts and TLS of a load balancer at the mesh's edge, for
/// the gateway proxies (`router~` nodes) whose labels `selector` matches. VirtualServices bind to it
/// by `gateways:`; ``GatewayGenerator`` makes the router's listeners and routes from both.
public struct Gateway: Sendable, Equatable {
    /// `servers[].port.protocol`, in the subset Capstan serves: HTTP-speaking ones, TCP, and TLS.
    public enum PortProtocol: String, Sendable, Equatable {
        case http = "HTTP"
        case https = "HTTPS"
        case http2 = "HTTP2"
        case grpc = "GRPC"
        /// Bytes relayed by the bound VirtualServices' `tcp` routes.
        case tcp = "TCP"
        /// TLS relayed as it is (PASSTHROUGH), by the SNI the bound VirtualServices' `tls` routes match,
        /// or (AUTO_PASSTHROUGH) by the mesh cluster the SNI names; or terminated (SIMPLE, MUTUAL,
        /// OPTIONAL_MUTUAL, ISTIO_MUTUAL) and the bytes relayed by a bound `tcp` route.
        case tls = "TLS"

        /// Whether the server terminates TLS (its `tls` is required).
        var terminatesTLS: Bool { self == .https }
        /// Whether the port's servers are told apart by SNI (HTTPS, TLS).
        var matchesServerName: Bool { self == .https || self == .tls }
    }

    /// `servers[].tls.mode`: all of Istio's.
    public enum TLSMode: String, Sendable, Equatable {
        /// A server certificate from `credentialName`, no client certificate asked.
        case simple = "SIMPLE"
        /// As SIMPLE, and a client certificate verified against the secret's `ca.crt`
        /// (`kubernetes://NAME-cacert`).
        case mutual = "MUTUAL"
        /// Mesh mutual TLS, as a sidecar's inbound: the gateway's own workload certificate (SDS
        /// `default`), a client certificate required and verified against the mesh roots (`ROOTCA`).
        /// What an egress gateway serves the sidecars that send it external traffic.
        case istioMutual = "ISTIO_MUTUAL"
        /// No termination: the connection is relayed as it is to the `tls` route whose `sniHosts` has
        /// the ClientHello's name.
        case passthrough = "PASSTHROUGH"
        /// Istio's east-west (multi-network) gateway: no termination and no route; the ClientHello's name
        /// is a mesh cluster's SNI, `outbound_.PORT_.SUBSET_.HOST` (what a sidecar sends with
        /// ISTIO_MUTUAL), and the connection is relayed as it is to that cluster's workloads (mutual
        /// TLS ones only), whose sidecars terminate it. The services reachable are those the server's
        /// hosts take.
        case autoPassthrough = "AUTO_PASSTHROUGH"
        /// As MUTUAL, but a client certificate is optional: one presented is verified against the
        /// secret's `ca.crt`, a connection without one is served too.
        case optionalMutual = "OPTIONAL_MUTUAL"

        /// Whether the connection is relayed as it is (PASSTHROUGH, AUTO_PASSTHROUGH).
        var passesThrough: Bool { self == .passthrough || self == .autoPassthrough }
        /// Whether the server's certificate comes from `credentialName` (SIMPLE, MUTUAL, OPTIONAL_MUTUAL).
        var usesCredential: Bool { self == .simple || self == .mutual || self == .optionalMutual }
        /// Whether a client certificate is verified against the credential's `ca.crt` (MUTUAL, OPTIONAL_MUTUAL).
        var verifiesClientsWithCredential: Bool { self == .mutual || self == .optionalMutual }
    }

    /// A `servers[].hosts` entry: `namespace/host`, where the namespace (`*` any, `.` the Gateway's
    /// own) limits which VirtualServices may bind; the host may be `*` or start with `*.`.
    public struct Host: Sendable, Equatable, CustomStringConvertible {
        /// nil: any namespace.
        public var namespace: String?
        public var host: String

        public var description: String { "\(namespace ?? "*")/\(host)" }
    }

    public struct TLS: Sendable, Equatable {
        /// nil for a server that only redirects (`httpsRedirect` on a plaintext port).
        public var mode: TLSMode?
        /// The secret (in the secrets directory) with `tls.crt`, `tls.key` and, for MUTUAL and
        /// OPTIONAL_MUTUAL, `ca.crt`; nil for ISTIO_MUTUAL, whose certificate is the gateway's workload
        /// certificate, and for the passthrough modes.
        public var credentialName: String?
        /// `httpsRedirect`: plaintext requests are answered 301 to `https://`.
        public var httpsRedirect: Bool
    }

    public struct Server: Sendable, Equatable {
        public var portNumber: Int
        /// `port.name`: part of an HTTPS server's route configuration name (`https.443.NAME.GATEWAY.NS`).
        public var portName: String
        public var `protocol`: PortProtocol
        public var hosts: [Host]
        public var tls: TLS?
        /// `servers[].name`, if given.
        public var name: String?

        /// A PASSTHROUGH server (protocol TLS or HTTPS): SNI-routed by `tls` routes, TLS left alone.
        var isPassthrough: Bool { tls?.mode == .passthrough }
        /// An AUTO_PASSTHROUGH server: SNI-routed to the mesh cluster its name spells, TLS left alone.
        var isAutoPassthrough: Bool { tls?.mode == .autoPassthrough }

        /// The TLS server names (SNI) its filter chain matches, as istiod writes `server_names`: its
        /// hosts, lowercased; none (any name) when one of them is `*`.
        var serverNames: [String] {
            hosts.contains { $0.host == "*" } ? [] : hosts.map { $0.host.lowercased() }
        }

        /// Whether a TLS chain for `other` on the same port would match a name this one's does: the
        /// proxy could not tell the two apart (Envoy refuses such a listener).
        func sharesServerName(with other: Server) -> Bool {
            let mine = serverNames, theirs = other.serverNames
            return mine.isEmpty || theirs.isEmpty || !Set(mine).isDisjoint(with: theirs)
        }
    }

    public var origin: ResourceOrigin
    public var namespace: String
    public var name: String
    /// `spec.selector`: labels of the gateway workloads (a proxy's `LABELS`, or its WorkloadEntry's).
    public var selector: [String: String]
    public var servers: [Server]

    /// `namespace/name`, as a VirtualService's `gateways:` names it once resolved.
    public var reference: String { "\(namespace)/\(name)" }

    /// Whether the proxy with `labels` is one of this Gateway's workloads. An empty selector selects
    /// every gateway proxy, as in Istio.
    func selects(_ labels: [String: String]) -> Bool {
        selector.allSatisfy { labels[$0.key] == $0.value }
    }
}

extension Gateway.Host {
    /// Whether a VirtualService in `namespace` for `host` may bind to this entry, and the domain the
    /// two have in common (the more specific of them), as istiod intersects them.
    func domain(forVirtualServiceHost host: String, namespace: String, gatewayNamespace: String) -> String? {
        switch self.namespace {
        case nil: break
        case "."?: guard namespace == gatewayNamespace else { return nil }
        case let required?: guard namespace == required else { return nil }
        }
        if Self.matches(pattern: self.host, host) { return host }
        if Self.matches(pattern: host, self.host) { return self.host }
        return nil
    }

    /// `*` matches every name, `*.example.com` every name ending in `.example.com`, anything else itself.
    static func matches(pattern: String, _ name: String) -> Bool {
        if pattern == "*" { return true }
        if pattern.hasPrefix("*.") {
            let suffix = pattern.dropFirst()
            return name.hasSuffix(suffix) && name.count > suffix.count
                || name.hasPrefix("*.") && name.dropFirst().hasSuffix(suffix)
        }
        return pattern == name
    }
}
