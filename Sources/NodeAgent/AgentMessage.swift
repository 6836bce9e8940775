import FoundationEssentials

/// A pod's network attachment as the CNI plugin reports it to the node agent.
public struct PodAttachment: Codable, Sendable, Hashable {
    public var containerID: String
    /// The pod's network namespace file (`/var/run/netns/cni-…` or `/proc/PID/ns/net`).
    public var netns: String
    public var interfaceName: String
    public var podName: String
    public var podNamespace: String
    public var addresses: [String]

    public init(containerID: String, netns: String, interfaceName: String, podName: String,
                podNamespace: String, addresses: [String]) {
        self.containerID = containerID
        self.netns = netns
        self.interfaceName = interfaceName
        self.podName = podName
        self.podNamespace = podNamespace
        self.addresses = addresses
    }

    /// `namespace/name`, how logs and status name the pod.
    public var podKey: String { "\(podNamespace)/\(podName)" }
}

/// A request on the node agent's unix socket: one JSON object per line, answered by one ``AgentReply``.
public struct AgentRequest: Codable, Sendable {
    public enum Operation: String, Codable, Sendable {
        /// CNI ADD: capture the pod (or decide to skip it) and answer once the rules are in force.
        case add
        /// CNI DEL: forget the pod.
        case delete
        /// CNI CHECK: is the pod's capture intact?
        case check
        /// `capstan status --node`: the managed pods.
        case list
        /// CNI STATUS: is the agent ready for ADDs?
        case ping
    }

    public var operation: Operation
    public var pod: PodAttachment?

    public init(_ operation: Operation, pod: PodAttachment? = nil) {
        self.operation = operation
        self.pod = pod
    }
}

/// The node agent's answer.
public struct AgentReply: Codable, Sendable {
    public enum Outcome: String, Codable, Sendable {
        case captured, skipped, unchanged, forgotten, intact, ready, listed
    }

    /// Set when the request succeeded.
    public var outcome: Outcome?
    /// Why a pod was skipped, what was repaired, or what went wrong.
    public var message: String?
    /// True when the failure is the pod's own input (a bad annotation), not the agent's state.
    public var refused: Bool?
    public var pods: [ManagedPodStatus]?

    public static func success(_ outcome: Outcome, _ message: String? = nil) -> AgentReply {
        AgentReply(outcome: outcome, message: message)
    }

    public static func failure(_ message: String, refused: Bool = false) -> AgentReply {
        AgentReply(outcome: nil, message: message, refused: refused)
    }
}

/// One managed pod as `capstan status --node` shows it.
public struct ManagedPodStatus: Codable, Sendable {
    public var pod: PodAttachment
    public var mode: String
    /// `intact`, `repaired`, or what is wrong.
    public var health: String
    public var repairs: Int
    public var lastChecked: Double?

    public init(pod: PodAttachment, mode: String, health: String, repairs: Int, lastChecked: Double?) {
        self.pod = pod
        self.mode = mode
        self.health = health
        self.repairs = repairs
        self.lastChecked = lastChecked
    }
}

/// JSON lines, both directions.
enum AgentWire {
    static func encode(_ value: some Encodable) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var bytes = Array((try? encoder.encode(value)) ?? Data())
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }

    static func decode<Message: Decodable>(_ type: Message.Type, from bytes: some Collection<UInt8>) throws -> Message {
        try JSONDecoder().decode(type, from: Data(bytes))
    }
}
