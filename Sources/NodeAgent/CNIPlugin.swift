import Configuration

/// The CNI plugin, `capstan-cni`: chained after the plugins that give a pod its interface, it asks the
/// node agent to capture the pod's traffic and hands the previous result back unchanged.
///
/// It fails closed: if a pod should be captured and the agent does not confirm it, ADD fails and the
/// runtime does not start the pod.
public struct CNIPlugin: Sendable {
    public init() {}

    /// What the plugin prints on standard output, and its exit status.
    public struct Response: Sendable {
        public var output: String
        public var exitStatus: Int32
    }

    /// Runs one invocation: parses the call, acts on it and formats the result or the error.
    public func run(environment: [String: String], stdin: String) -> Response {
        let invocation: CNIInvocation
        do {
            invocation = try CNIInvocation.parse(environment: environment, stdin: stdin)
        } catch {
            return Response(output: error.document(cniVersion: Self.versionForErrors(stdin)), exitStatus: 1)
        }
        do {
            return Response(output: try run(invocation), exitStatus: 0)
        } catch {
            return Response(output: error.document(cniVersion: invocation.config.cniVersion), exitStatus: 1)
        }
    }

    func run(_ invocation: CNIInvocation) throws(CNIError) -> String {
        let config = invocation.config
        switch invocation.command {
        case .version:
            return ConfigValue.object([
                "cniVersion": .string(config.cniVersion),
                "supportedVersions": .array(CNIInvocation.supportedVersions.map(ConfigValue.string)),
            ]).jsonText()
        case .add:
            guard case .object(var result)? = config.previousResult else {
                throw CNIError(.invalidNetworkConfig, "capstan-cni must be chained after the plugin that sets up the pod's interface",
                               details: "the configuration has no prevResult")
            }
            if let attachment = try podAttachment(invocation) {
                let reply = try ask(AgentRequest(.add, pod: attachment), config)
                guard reply.outcome != nil else {
                    throw CNIError(reply.refused == true ? .captureRefused : .agentUnavailable,
                                   "node agent did not capture pod \(attachment.podKey)", details: reply.message ?? "")
                }
            }
            result["cniVersion"] = .string(config.cniVersion)
            return ConfigValue.object(result).jsonText()
        case .delete:
            // DEL must succeed when things are already gone; an agent that misses it forgets the pod when
            // its namespace disappears.
            if let attachment = try podAttachment(invocation) {
                _ = try? NodeAgentClient(socketPath: config.agentSocket, timeout: config.agentTimeout)
                    .send(AgentRequest(.delete, pod: attachment))
            }
            return ""
        case .check:
            if let attachment = try podAttachment(invocation) {
                let reply = try ask(AgentRequest(.check, pod: attachment), config)
                guard reply.outcome != nil else {
                    throw CNIError(.captureRefused, "capture of pod \(attachment.podKey) is not intact", details: reply.message ?? "")
                }
            }
            return ""
        case .status:
            let reply = try ask(AgentRequest(.ping), config)
            guard reply.outcome == .ready else {
                throw CNIError(.agentUnavailable, "node agent is not ready", details: reply.message ?? "")
            }
            return ""
        case .garbageCollect:
            // The agent forgets pods whose namespace is gone by itself; nothing is left behind to collect.
            return ""
        }
    }

    /// The pod to tell the agent about, or nil when the pod is not the agent's business (not a
    /// Kubernetes pod, or in an excluded namespace).
    private func podAttachment(_ invocation: CNIInvocation) throws(CNIError) -> PodAttachment? {
        guard let name = invocation.podName, let namespace = invocation.podNamespace else { return nil }
        guard !invocation.config.excludeNamespaces.contains(namespace) else { return nil }
        return PodAttachment(containerID: invocation.containerID, netns: invocation.networkNamespace ?? "",
                             interfaceName: invocation.interfaceName, podName: name, podNamespace: namespace,
                             addresses: invocation.podAddresses)
    }

    private func ask(_ request: AgentRequest, _ config: CNIPluginConfig) throws(CNIError) -> AgentReply {
        do {
            return try NodeAgentClient(socketPath: config.agentSocket, timeout: config.agentTimeout).send(request)
        } catch {
            throw CNIError(.agentUnavailable, "node agent unreachable", details: error.description)
        }
    }

    /// The version to answer an unparseable call in: the config's if it has a supported one.
    private static func versionForErrors(_ stdin: String) -> String {
        if let version = (try? ConfigValue.parse(json: stdin))?["cniVersion"]?.stringValue,
           CNIInvocation.supportedVersions.contains(version) {
            return version
        }
        return CNIInvocation.supportedVersions.last!
    }
}
