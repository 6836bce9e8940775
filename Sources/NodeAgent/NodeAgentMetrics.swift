import NIOConcurrencyHelpers

/// The node agent's counters and gauges, in Prometheus text format.
public final class NodeAgentMetrics: Sendable {
    private struct Values {
        var requests: [String: Int] = [:]
        var repairs = 0
        var repairFailures = 0
        var managedPods = 0
        var cniInstalled: Bool?
    }

    private let values = NIOLockedValueBox(Values())

    public init() {}

    func countRequest(_ operation: AgentRequest.Operation, succeeded: Bool) {
        values.withLockedValue { $0.requests["operation=\"\(operation.rawValue)\",result=\"\(succeeded ? "success" : "failure")\"", default: 0] += 1 }
    }

    func countRepair(succeeded: Bool) {
        values.withLockedValue { succeeded ? ($0.repairs += 1) : ($0.repairFailures += 1) }
    }

    func setManagedPods(_ count: Int) {
        values.withLockedValue { $0.managedPods = count }
    }

    public func setCNIInstalled(_ installed: Bool) {
        values.withLockedValue { $0.cniInstalled = installed }
    }

    public var prometheusText: String {
        let values = values.withLockedValue { $0 }
        var text = """
        # TYPE capstan_node_managed_pods gauge
        capstan_node_managed_pods \(values.managedPods)
        # TYPE capstan_node_repairs_total counter
        capstan_node_repairs_total \(values.repairs)
        # TYPE capstan_node_repair_failures_total counter
        capstan_node_repair_failures_total \(values.repairFailures)
        # TYPE capstan_node_cni_requests_total counter

        """
        for (labels, count) in values.requests.sorted(by: { $0.key < $1.key }) {
            text += "capstan_node_cni_requests_total{\(labels)} \(count)\n"
        }
        if let installed = values.cniInstalled {
            text += "# TYPE capstan_node_cni_install_ready gauge\ncapstan_node_cni_install_ready \(installed ? 1 : 0)\n"
        }
        return text
    }
}
