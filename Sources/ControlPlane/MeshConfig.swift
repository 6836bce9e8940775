/// The Istio resources the control plane reads, in the subset Capstan implements, with hosts already
/// made fully qualified (`payments` in namespace `shop` is `payments.shop.svc.cluster.local`).
public struct MeshConfig: Sendable, Equatable {
    public var serviceEntries: [ServiceEntry] = []
    public var workloadEntries: [WorkloadEntry] = []
    public var virtualServices: [VirtualService] = []
    public var destinationRules: [DestinationRule] = []

    public init() {}

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
        public var `protocol`: String
        public var targetPort: Int?
    }

    public enum Resolution: String, Sendable, Equatable {
        case `static` = "STATIC"
        case none = "NONE"
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
}

/// An endpoint of a service: inline in a ServiceEntry or a WorkloadEntry.
public struct WorkloadEndpoint: Sendable, Equatable {
    public var address: String
    public var labels: [String: String]
    /// Port by service port name, when the workload listens elsewhere.
    public var ports: [String: Int]
    public var serviceAccount: String?
}

/// `networking.istio.io` WorkloadEntry: a workload (a VM, or a pod in tests) with its labels.
public struct WorkloadEntry: Sendable, Equatable {
    public var origin: ResourceOrigin
    public var namespace: String
    public var endpoint: WorkloadEndpoint
}

/// `networking.istio.io` VirtualService, TCP routes only.
public struct VirtualService: Sendable, Equatable {
    public struct Destination: Sendable, Equatable {
        public var host: String
        public var subset: String?
        public var port: Int?
        public var weight: Int
    }

    public struct TCPRoute: Sendable, Equatable {
        /// Service ports this route applies to; empty: all.
        public var ports: [Int]
        public var destinations: [Destination]
    }

    public var origin: ResourceOrigin
    public var namespace: String
    public var hosts: [String]
    public var tcp: [TCPRoute]
}

/// `networking.istio.io` DestinationRule: subsets by labels, load balancing, connection limits.
public struct DestinationRule: Sendable, Equatable {
    public struct TrafficPolicy: Sendable, Equatable {
        /// `ROUND_ROBIN`, `LEAST_REQUEST` (Istio's `LEAST_CONN`), `RANDOM`.
        public var loadBalancer: String?
        public var maxConnections: Int?
        public var connectTimeout: Duration?

        /// This policy with the fields `other` leaves unset taken from here (a subset's over the rule's).
        func overridden(by other: TrafficPolicy?) -> TrafficPolicy {
            guard let other else { return self }
            return TrafficPolicy(loadBalancer: other.loadBalancer ?? loadBalancer,
                                 maxConnections: other.maxConnections ?? maxConnections,
                                 connectTimeout: other.connectTimeout ?? connectTimeout)
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
}
