/// Istio's mesh-wide settings (`istio.mesh.v1alpha1.MeshConfig`, the `mesh` key of the `istio`
/// ConfigMap), in the subset Capstan acts on. Named apart from ``MeshConfig``, which holds the mesh's
/// resources; every other field of Istio's is reported when read, never silently ignored.
public struct MeshSettings: Sendable, Equatable {
    /// `outboundTrafficPolicy.mode`: where a sidecar sends traffic for hosts no service declares.
    public enum OutboundTrafficPolicy: String, Sendable, Equatable {
        /// Out through `PassthroughCluster`, to the address the application asked for (Istio's default).
        case allowAny = "ALLOW_ANY"
        /// Into `BlackHoleCluster`: only registered services are reachable.
        case registryOnly = "REGISTRY_ONLY"
    }

    public var outboundTrafficPolicy: OutboundTrafficPolicy = .allowAny
    /// `dnsRefreshRate`: how often sidecars look up the names of DNS clusters when the answer's TTL does
    /// not say (Istio's default, 60 s).
    public var dnsRefreshRate: Duration = .seconds(60)
    /// `accessLogFile`: where HTTP connection managers (sidecars' and gateways') write Istio's access
    /// log (nil: none). TCP relays write none yet (the reader warns).
    public var accessLogFile: String?
    /// `accessLogFormat`: the text format of those lines; nil: Istio's default (``istioTextLogFormat``).
    public var accessLogFormat: String?
    /// `extensionProviders`, by name: what an AuthorizationPolicy with `action: CUSTOM` names.
    public var extensionProviders: [ExtensionProvider] = []
    /// `trustDomainAliases`: other trust domains whose identities AuthorizationPolicies treat as this
    /// mesh's (a trust domain migration), in their order.
    public var trustDomainAliases: [String] = []
    /// `defaultServiceExportTo`, `defaultVirtualServiceExportTo`, `defaultDestinationRuleExportTo`: the
    /// `exportTo` of resources of each kind that give none (Istio's default, `*`, for all three).
    public var defaultServiceExportTo = ExportTo.everywhere
    public var defaultVirtualServiceExportTo = ExportTo.everywhere
    public var defaultDestinationRuleExportTo = ExportTo.everywhere
    /// `localityLbSetting`: the locality load balancing of DestinationRules that give none (as istiod's
    /// `GetLocalityLbSetting`); nil: Istio's default (`enabled: true`, no rules: failover by locality
    /// where a cluster has outlier detection).
    public var localityLoadBalancing: LocalityLoadBalancing?
    /// `meshNetworks` (the ConfigMap's key beside `mesh`): the networks' gateways and ranges; empty: one
    /// network, every endpoint sent as it is.
    public var networks = MeshNetworks()
    /// Where the settings came from, for messages; nil for the defaults.
    public var origin: ResourceOrigin?

    public init() {}

    /// Istio's default access log line (its `EnvoyTextLogFormat`), used when `accessLogFormat` is not given.
    public static let istioTextLogFormat = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" "
        + "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
        + "\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "
        + "\"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" "
        + "%UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
        + "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"

    public func extensionProvider(named name: String) -> ExtensionProvider? {
        extensionProviders.first { $0.name == name }
    }
}

/// One of the mesh config's `extensionProviders`: an external authorization service, as Istio's
/// CUSTOM action calls it.
public struct ExtensionProvider: Sendable, Equatable {
    /// `envoyExtAuthzGrpc`: a service speaking `envoy.service.auth.v3.Authorization` over gRPC.
    /// (Istio's `envoyExtAuthzHttp` is refused when read: the proxy's ext_authz calls gRPC services only.)
    public struct ExternalAuthorization: Sendable, Equatable {
        /// The service's host, fully qualified, as a ServiceEntry declares it (Istio's `service`, without
        /// an optional `namespace/` prefix).
        public var service: String
        public var port: Int
        /// Istio's default is 600 s.
        public var timeout: Duration = .seconds(600)
        /// `failOpen`: let requests through when the service cannot be reached.
        public var failOpen = false
        /// `statusOnError`: the status sent when the service fails (Envoy's default, 403, when nil).
        public var statusOnError: Int?
        /// `includeRequestBodyInCheck`: the body is sent along, up to `maxRequestBytes`.
        public var requestBody: RequestBody?

        public struct RequestBody: Sendable, Equatable {
            public var maxRequestBytes: Int
            public var allowPartialMessage: Bool
            public var packAsBytes: Bool
        }
    }

    public var name: String
    public var externalAuthorization: ExternalAuthorization
}
