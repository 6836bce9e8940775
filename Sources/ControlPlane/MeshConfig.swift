/// The Istio resources the control plane reads, in the subset Capstan implements, with hosts already
/// made fully qualified (`payments` in namespace `shop` is `payments.shop.svc.cluster.local`).
public struct MeshConfig: Sendable, Equatable {
    public var serviceEntries: [ServiceEntry] = []
    public var workloadEntries: [WorkloadEntry] = []
    public var virtualServices: [VirtualService] = []
    /// VirtualServices without hosts: routes that others take by `delegate` (merged into them when read).
    public var delegateVirtualServices: [VirtualService] = []
    public var destinationRules: [DestinationRule] = []
    public var peerAuthentications: [PeerAuthentication] = []
    public var authorizationPolicies: [AuthorizationPolicy] = []
    public var requestAuthentications: [RequestAuthentication] = []
    /// The mesh-wide settings: Istio's defaults unless an `istio` ConfigMap gives them.
    public var mesh = MeshSettings()
    /// Gateways, for the gateway proxies (`router~` nodes) they select.
    public var gateways: [Gateway] = []

    public init() {}

    /// What sidecars are configured from: the VirtualServices bound to the `mesh` gateway only.
    var sidecarView: MeshConfig {
        var view = self
        view.virtualServices = virtualServices.filter { $0.gateways.contains(VirtualService.meshGateway) }
        return view
    }

    /// Istio's root namespace: a PeerAuthentication or AuthorizationPolicy here without a selector is
    /// the mesh-wide one (and an AuthorizationPolicy here with one selects in every namespace).
    public static let rootNamespace = "istio-system"
    /// The endpoint label Istio puts on workloads that run a sidecar (`istio`); auto mTLS keys on it.
    public static let tlsModeLabel = "security.istio.io/tlsMode"

    /// Istio's rule for short names: a host without a dot lives in the resource's namespace.
    static func qualified(_ host: String, namespace: String) -> String {
        host.contains(".") || host == "*" ? host : "\(host).\(namespace).svc.cluster.local"
    }
}

/// Where a resource came from, for messages: `mesh/payments.yaml: document 2 (line 14)`.
public struct ResourceOrigin: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var document: Int
    public var line: Int
    public var kind: String
    public var name: String

    public var description: String { "\(file): document \(document + 1) (line \(line))" }
}

/// `networking.istio.io` ServiceEntry: a service the mesh knows, its addresses, ports and endpoints.
public struct ServiceEntry: Sendable, Equatable {
    public struct Port: Sendable, Equatable {
        public var number: Int
        public var name: String
        /// From `protocol`, else the name's prefix (``ServiceProtocol/selected(declared:name:)``).
        public var `protocol`: ServiceProtocol
        public var targetPort: Int?
    }

    public enum Resolution: String, Sendable, Equatable {
        case `static` = "STATIC"
        case none = "NONE"
        /// The proxy resolves the endpoints' names (the hosts, when there are no endpoints) and uses
        /// every address: a `STRICT_DNS` cluster.
        case dns = "DNS"
        /// As DNS, but each new connection goes to the first address of the latest answer: `LOGICAL_DNS`.
        case dnsRoundRobin = "DNS_ROUND_ROBIN"

        /// Whether the proxy resolves names for this service.
        public var resolvesNames: Bool { self == .dns || self == .dnsRoundRobin }
    }

    /// `location`: whether the service is part of the mesh (its endpoints run sidecars, Istio's
    /// mTLS hint from PeerAuthentication applies) or outside it. Istio's default is MESH_EXTERNAL; Capstan
    /// reads a ServiceEntry without one as its own services (its stand-in for Kubernetes Services),
    /// which behave as MESH_INTERNAL.
    public enum Location: String, Sendable, Equatable {
        case meshExternal = "MESH_EXTERNAL"
        case meshInternal = "MESH_INTERNAL"
    }

    public var origin: ResourceOrigin
    public var namespace: String
    public var hosts: [String]
    /// Virtual IPs or CIDRs clients connect to; the outbound listener matches them.
    public var addresses: [String]
    public var ports: [Port]
    public var resolution: Resolution
    public var endpoints: [WorkloadEndpoint]
    /// Labels of the WorkloadEntries that are also endpoints of this service.
    public var workloadSelector: [String: String]?
    /// nil: not given (see ``Location``).
    public var location: Location? = nil
    /// `exportTo`; empty: the mesh config's `defaultServiceExportTo`.
    public var exportTo = ExportTo()
}

/// An endpoint of a service: inline in a ServiceEntry or a WorkloadEntry.
public struct WorkloadEndpoint: Sendable, Equatable {
    /// An IP address; with resolution DNS, a host name the proxy resolves.
    public var address: String
    public var labels: [String: String]
    /// Port by service port name, when the workload listens elsewhere.
    public var ports: [String: Int]
    public var serviceAccount: String?
    /// `weight`: the endpoint's `load_balancing_weight` (nil: Envoy's 1).
    public var weight: Int? = nil
    /// `locality` (`region/zone/subzone`), as istiod sends it with the endpoint's `LocalityLbEndpoints`.
    public var locality: String? = nil
    /// `network`: the network the endpoint is on (``MeshNetworks``); nil: none given.
    public var network: String? = nil
}

/// `networking.istio.io` WorkloadEntry: a workload (a VM, or a pod in tests) with its labels.
public struct WorkloadEntry: Sendable, Equatable {
    public var origin: ResourceOrigin
    public var namespace: String
    public var endpoint: WorkloadEndpoint
}

/// `networking.istio.io` VirtualService: `http` routes (``HTTPRoute``) for HTTP ports, `tcp` routes for
/// the others.
public struct VirtualService: Sendable, Equatable {
    public struct Destination: Sendable, Equatable {
        public var host: String
        public var subset: String?
        public var port: Int?
        public var weight: Int
        /// `headers` of an `http` route's destination; nil on `tcp` routes.
        public var headers: HeaderOperations? = nil
    }

    public struct TCPRoute: Sendable, Equatable {
        /// One `match`: a port (nil: any) and `gateways` (resolved; empty: the VirtualService's).
        public struct Match: Sendable, Equatable {
            public var port: Int?
            public var gateways: [String]
        }
        /// Service ports this route applies to; empty: all.
        public var ports: [Int]
        public var destinations: [Destination]
        /// `match`; empty: every connection.
        public var matches: [Match] = []

        /// Whether the route takes connections to `port` through `gateway` (`mesh` for the sidecars), for
        /// a VirtualService bound to it: a match with that port (or none) and that gateway (or none named).
        func applies(port: Int, gateway: String) -> Bool {
            matches.isEmpty || matches.contains { ($0.port ?? port) == port && ($0.gateways.isEmpty || $0.gateways.contains(gateway)) }
        }
    }

    /// A `tls` route: connections whose TLS ClientHello names one of a match's `sniHosts` are relayed,
    /// still encrypted, to the destinations. Gateways' PASSTHROUGH servers act on them (sidecars do
    /// not: the reader warns).
    public struct TLSRoute: Sendable, Equatable {
        public struct Match: Sendable, Equatable {
            /// `sniHosts`, lowercased.
            public var sniHosts: [String]
            /// `port`: the gateway server port it applies to; nil: any.
            public var port: Int?
            /// `gateways`, resolved as the VirtualService's are; empty: the VirtualService's.
            public var gateways: [String]
        }
        public var matches: [Match]
        public var destinations: [Destination]
    }

    public var origin: ResourceOrigin
    public var namespace: String
    public var hosts: [String]
    public var http: [HTTPRoute] = []
    public var tcp: [TCPRoute]
    public var tls: [TLSRoute] = []
    /// `gateways`, each resolved to `namespace/name`, or `mesh` (the sidecars; the default when none is given).
    public var gateways: [String] = [VirtualService.meshGateway]
    /// `exportTo`; empty: the mesh config's `defaultVirtualServiceExportTo`.
    public var exportTo = ExportTo()

    /// Istio's name for the sidecars as a gateway.
    public static let meshGateway = "mesh"
}

/// `networking.istio.io` DestinationRule: subsets by labels, load balancing, connection limits, and
/// whether the sidecar speaks Istio mutual TLS to the service.
public struct DestinationRule: Sendable, Equatable {
    /// `trafficPolicy.tls.mode`, in the subset Capstan implements: `SIMPLE` and `MUTUAL` (certificates
    /// the user supplies) are refused when read.
    public enum TLSMode: String, Sendable, Equatable {
        /// Plaintext to the service, even to endpoints that have a sidecar (auto mTLS off).
        case disable = "DISABLE"
        /// TLS originated by the sidecar (``OriginatedTLS``): the server is verified, no client certificate.
        case simple = "SIMPLE"
        /// TLS originated by the sidecar with the client certificate and key the rule names.
        case mutual = "MUTUAL"
        /// The workload certificate (SDS `default`), the mesh roots (SDS `ROOTCA`), and the endpoints'
        /// SPIFFE identities as the accepted server names.
        case istioMutual = "ISTIO_MUTUAL"
    }

    /// The rest of `tls` for SIMPLE and MUTUAL: what the sidecar sends and checks when it originates TLS.
    /// Files are paths on the proxy's machine, as Istio's are in the sidecar's pod.
    public struct OriginatedTLS: Sendable, Equatable {
        /// `sni`; nil: the service's host (istiod sets Envoy's `auto_sni` instead: see the generator).
        public var sni: String?
        /// `subjectAltNames`: the server names accepted (any of them); empty: any the roots verify.
        public var subjectAltNames: [String] = []
        /// `caCertificates`; nil: the system's roots (Istio's `system`).
        public var caCertificates: String?
        /// `clientCertificate` and `privateKey` (MUTUAL).
        public var clientCertificate: String?
        public var privateKey: String?
        /// `insecureSkipVerify`: the server's certificate is not verified at all.
        public var insecureSkipVerify = false

        public init(sni: String? = nil, subjectAltNames: [String] = [], caCertificates: String? = nil) {
            self.sni = sni
            self.subjectAltNames = subjectAltNames
            self.caCertificates = caCertificates
        }
    }

    /// `trafficPolicy.connectionPool`: the cluster's circuit breakers and connection settings. Values of
    /// 0 are unset, as istiod reads them.
    public struct ConnectionPool: Sendable, Equatable {
        /// `tcp.maxConnections`: the circuit breaker's `max_connections`.
        public var maxConnections: Int?
        public var connectTimeout: Duration?
        /// `tcp.maxConnectionDuration` and `tcp.idleTimeout`.
        public var maxConnectionDuration: Duration?
        public var tcpIdleTimeout: Duration?
        /// `http.http1MaxPendingRequests`, `http.http2MaxRequests` and `http.maxRetries`: the circuit
        /// breaker's `max_pending_requests`, `max_requests` and `max_retries`.
        public var http1MaxPendingRequests: Int?
        public var http2MaxRequests: Int?
        public var maxRetries: Int?
        /// `http.maxRequestsPerConnection` and `http.idleTimeout` (which wins over `tcp.idleTimeout`).
        public var maxRequestsPerConnection: Int?
        public var idleTimeout: Duration?
        /// `http.h2UpgradePolicy`: `UPGRADE` true, `DO_NOT_UPGRADE` false, else nil.
        public var http2Upgrade: Bool?
        /// `tcp.tcpKeepalive`: the cluster's `upstream_connection_options.tcp_keepalive`.
        public var tcpKeepalive: TCPKeepalive?

        public init(maxConnections: Int? = nil, connectTimeout: Duration? = nil, http2Upgrade: Bool? = nil) {
            self.maxConnections = maxConnections
            self.connectTimeout = connectTimeout
            self.http2Upgrade = http2Upgrade
        }
    }

    /// `connectionPool.tcp.tcpKeepalive`: keepalive probes on upstream sockets. Unset fields keep the
    /// kernel's value (probes 0 is unset, as istiod reads it).
    public struct TCPKeepalive: Sendable, Equatable {
        public var probes: Int?
        /// Idle time before the first probe, and between probes; Envoy takes whole seconds.
        public var time: Duration?
        public var interval: Duration?

        public init(probes: Int? = nil, time: Duration? = nil, interval: Duration? = nil) {
            self.probes = probes
            self.time = time
            self.interval = interval
        }
    }

    /// `trafficPolicy.loadBalancer`.
    public enum LoadBalancer: Sendable, Equatable {
        /// `simple`: `ROUND_ROBIN`, `LEAST_REQUEST` (Istio's `LEAST_CONN`), `RANDOM`, or `UNSPECIFIED` (the
        /// default, as no policy: LEAST_REQUEST, as istiod's `defaultLBAlgorithm`).
        case simple(String)
        case consistentHash(ConsistentHash)
    }

    /// `loadBalancer.warmup` (or the older `warmupDurationSecs`): new endpoints' share ramps up over
    /// `duration` (Envoy's slow start, for ROUND_ROBIN and LEAST_REQUEST clusters).
    public struct Warmup: Sendable, Equatable {
        public var duration: Duration
        /// `warmup.aggression` (1 when not given); nil for `warmupDurationSecs`, which istiod sends without it.
        public var aggression: Double?
        /// `warmup.minimumPercent` (10 when not given); nil for `warmupDurationSecs`.
        public var minimumPercent: Double?
    }

    /// `loadBalancer.consistentHash`: what requests hash by (the routes' `hash_policy`), and the cluster's
    /// RING_HASH ring or MAGLEV table.
    public struct ConsistentHash: Sendable, Equatable {
        public enum Key: Sendable, Equatable {
            case header(String)
            case cookie(name: String, path: String?, ttl: Duration?)
            case sourceIP
            case queryParameter(String)
        }
        public enum Table: Sendable, Equatable {
            /// `ringHash` (or the deprecated `minimumRingSize`); nil: Envoy's default size.
            case ring(minimumSize: Int?)
            case maglev(tableSize: Int?)
        }
        public var key: Key
        public var table: Table
    }

    public struct TrafficPolicy: Sendable, Equatable {
        public var loadBalancer: LoadBalancer?
        public var connectionPool: ConnectionPool?
        /// nil: no `tls` setting, so Istio's auto mTLS decides (see ``ProxyConfigGenerator``).
        public var tlsMode: TLSMode?
        /// With `tlsMode` SIMPLE or MUTUAL: the rest of the `tls` setting; with ISTIO_MUTUAL, only its
        /// `sni` (nil when none is given).
        public var originatedTLS: OriginatedTLS? = nil
        /// `outlierDetection`; a subset's replaces the rule's whole, as istiod merges it.
        public var outlierDetection: OutlierDetection? = nil
        /// `loadBalancer.localityLbSetting` (it goes with `loadBalancer` when policies merge).
        public var localityLoadBalancing: LocalityLoadBalancing? = nil
        /// `loadBalancer.warmup` or `warmupDurationSecs` (it goes with `loadBalancer` when policies merge).
        public var warmup: Warmup? = nil
        /// `portLevelSettings` by port number: each entry's four components (its `portLevelSettings`
        /// always empty) for that service port's clusters.
        public var portLevelSettings: [Int: TrafficPolicy] = [:]

        /// This policy with the settings `other` gives taken from it (a subset's over the rule's), each
        /// whole, as istiod merges them: a subset's `connectionPool` replaces the rule's, field by field
        /// unset ones included.
        func overridden(by other: TrafficPolicy?) -> TrafficPolicy {
            guard let other else { return self }
            var merged = TrafficPolicy(loadBalancer: other.loadBalancer ?? loadBalancer, connectionPool: other.connectionPool ?? connectionPool,
                                       tlsMode: other.tlsMode ?? tlsMode)
            merged.outlierDetection = other.outlierDetection ?? outlierDetection
            let otherGivesBalancer = other.loadBalancer != nil || other.localityLoadBalancing != nil || other.warmup != nil
            merged.localityLoadBalancing = otherGivesBalancer ? other.localityLoadBalancing : localityLoadBalancing
            merged.warmup = otherGivesBalancer ? other.warmup : warmup
            // `tls` is one component: the mode and its settings come from the same policy.
            merged.originatedTLS = other.tlsMode != nil ? other.originatedTLS : originatedTLS
            return merged
        }

        /// The policy on service port `port`: its `portLevelSettings` entry, which replaces all four
        /// components (one it omits is the default, not this policy's), else this policy.
        func atPort(_ port: Int) -> (policy: TrafficPolicy, portLevel: Bool) {
            if let entry = portLevelSettings[port] { return (entry, true) }
            var policy = self
            policy.portLevelSettings = [:]
            return (policy, false)
        }

        /// A cluster's policy as istiod's `MergeSubsetTrafficPolicy` computes it for one port: a subset's
        /// port-level entry, whole; else the subset's components over the rule's port-level entry
        /// (whole) or the rule's.
        static func merged(rule: TrafficPolicy, subset: TrafficPolicy?, port: Int) -> TrafficPolicy {
            let base = rule.atPort(port).policy
            guard let subset else { return base }
            let (own, portLevel) = subset.atPort(port)
            return portLevel ? own : base.overridden(by: own)
        }
    }

    public struct Subset: Sendable, Equatable {
        public var name: String
        public var labels: [String: String]
        public var trafficPolicy: TrafficPolicy?
    }

    public var origin: ResourceOrigin
    public var namespace: String
    public var host: String
    public var trafficPolicy: TrafficPolicy
    public var subsets: [Subset]
    /// `exportTo`; empty: the mesh config's `defaultDestinationRuleExportTo` (of which istiod honours `.`
    /// only: see ``MeshVisibility``).
    public var exportTo = ExportTo()

    /// What requests to `subset` on `port` hash by, as istiod picks it for routes: the subset's
    /// port-level hash, the subset's, the rule's port-level, the rule's, first given wins. `port` is
    /// the destination's explicit port (or, for a service's default route, its port); nil: no
    /// port-level hash applies.
    func consistentHash(subset: String?, port: Int?) -> ConsistentHash? {
        func hash(_ policy: TrafficPolicy?) -> ConsistentHash? {
            if case .consistentHash(let hash)? = policy?.loadBalancer { return hash }
            return nil
        }
        func portHash(_ policy: TrafficPolicy?) -> ConsistentHash? { port.flatMap { hash(policy?.portLevelSettings[$0]) } }
        let subsetPolicy = subsets.first { $0.name == subset }?.trafficPolicy
        return portHash(subsetPolicy) ?? hash(subsetPolicy) ?? portHash(trafficPolicy) ?? hash(trafficPolicy)
    }
}

/// `security.istio.io` PeerAuthentication: which connections a workload's sidecar accepts inbound,
/// mutual TLS only, both, or plaintext only. Its scope follows from where it is and what it selects:
/// the whole mesh (root namespace, no selector), a namespace (no selector) or the workloads whose
/// labels match `spec.selector.matchLabels`. ``MutualTLSPolicy`` resolves which one is in force.
public struct PeerAuthentication: Sendable, Equatable {
    /// `spec.mtls.mode`; Istio's `UNSET` is read as nil: inherit from the enclosing scope.
    public enum Mode: String, Sendable, Equatable, CustomStringConvertible {
        /// Mutual TLS only: plaintext connections are refused.
        case strict = "STRICT"
        /// Mutual TLS and plaintext, told apart by the first bytes (tls_inspector).
        case permissive = "PERMISSIVE"
        /// Plaintext only.
        case disable = "DISABLE"

        public var description: String { rawValue }
    }

    public var origin: ResourceOrigin
    public var namespace: String
    /// `spec.selector.matchLabels`; nil (or empty in the YAML) for a namespace- or mesh-wide policy.
    public var selector: [String: String]?
    public var mode: Mode?
    /// `spec.portLevelMtls`: modes for single workload ports (UNSET entries dropped: they inherit).
    public var portLevelModes: [Int: Mode]

    /// Istio's mesh-wide policy: in the root namespace, selecting nothing.
    public var isMeshWide: Bool { selector == nil && namespace == MeshConfig.rootNamespace }
}
