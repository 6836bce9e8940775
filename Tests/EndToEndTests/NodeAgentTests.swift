import CapstanTestSupport
import Capture
import Configuration
import Foundation
import Netfilter
import NodeAgent
import Testing

/// Node mode end to end: the reference `bridge` and `host-local` plugins with `capstan-cni` chained after
/// them, called through the CNI protocol as a runtime does, and `capstan node-agent` programming the pods.
@Suite(.serialized) struct NodeAgentTests {
    /// Listeners in one pod (the proxy's capture ports and the application's 9080 and 9081) and one on
    /// the node, made once per pod so no port is bound twice; and where connections end up.
    final class PodTraffic {
        let probe = ConnectionProbe()
        let namespace: NetworkNamespace
        let node: NetworkNamespace
        let nodeService: SocketAddress

        init(_ pod: CNIRuntime.Pod, in sandbox: NodeSandbox, nodePort: UInt16) throws {
            namespace = NetworkNamespace(path: pod.netns)
            node = sandbox.node
            nodeService = SocketAddress(NodeSandbox.gateway, nodePort)
            try probe.listenLikeTheProxy(in: namespace)
            for port: UInt16 in [9080, 9081] {
                try probe.listen("app", in: namespace, on: SocketAddress(IPAddress("0.0.0.0")!, port))
            }
            try probe.listen("node", in: node, on: nodeService)
        }

        /// From the pod's application to a service on the node: "outbound" (captured) or "node".
        func outbound() -> String? {
            probe.connect(to: nodeService, from: namespace, uid: 1000, gid: 1000).listener
        }

        /// From the node to the pod's `port`: "inbound" (captured) or "app".
        func inbound(to address: IPAddress, port: UInt16) -> String? {
            probe.connect(to: SocketAddress(address, port), from: node).listener
        }
    }

    func address(of result: ConfigValue) throws -> IPAddress {
        guard case .array(let ips)? = result["ips"], let text = ips.first?["address"]?.stringValue,
              let address = IPAddress(String(text.split(separator: "/")[0])) else {
            throw SandboxError("no address in \(result.jsonText())")
        }
        return address
    }

    func installedSpec(in pod: CNIRuntime.Pod) throws -> CaptureSpec? {
        try CaptureEngine.inspect(in: NetworkNamespace(path: pod.netns)).spec
    }

    @Test func podsAreCapturedPerTheirAnnotations() throws {
        try withNodeSandbox { sandbox in
            try sandbox.startAgent()
            let runtime = sandbox.runtime

            let plain = try sandbox.makePod("plain")
            let excluded = try sandbox.makePod("excluded")
            try sandbox.describePod("excluded", annotations: [
                "traffic.sidecar.istio.io/excludeOutboundIPRanges": "198.18.0.1/32",
                "traffic.sidecar.istio.io/excludeInboundPorts": "9080",
            ])
            let tproxy = try sandbox.makePod("tproxy")
            try sandbox.describePod("tproxy", annotations: ["sidecar.istio.io/interceptionMode": "TPROXY"])
            let optedOut = try sandbox.makePod("opted-out")
            try sandbox.describePod("opted-out", labels: ["sidecar.istio.io/inject": "false"])
            let system = try sandbox.makePod("dns", namespace: "kube-system")

            let plainResult = try runtime.add(plain)
            let excludedResult = try runtime.add(excluded)
            try runtime.add(tproxy)
            let optedOutResult = try runtime.add(optedOut)
            try runtime.add(system)

            // The chain's result is the bridge plugin's, unchanged: the pod got its address.
            let plainAddress = try address(of: plainResult)
            #expect(plainResult["interfaces"] != nil)

            let plainTraffic = try PodTraffic(plain, in: sandbox, nodePort: 8080)
            #expect(plainTraffic.outbound() == "outbound")
            #expect(plainTraffic.inbound(to: plainAddress, port: 9080) == "inbound")

            let excludedTraffic = try PodTraffic(excluded, in: sandbox, nodePort: 8081)
            #expect(excludedTraffic.outbound() == "node")
            #expect(excludedTraffic.inbound(to: try address(of: excludedResult), port: 9080) == "app")
            #expect(excludedTraffic.inbound(to: try address(of: excludedResult), port: 9081) == "inbound")

            #expect(try installedSpec(in: tproxy)?.interceptionMode == .tproxy)

            #expect(try installedSpec(in: optedOut) == nil)
            let optedOutTraffic = try PodTraffic(optedOut, in: sandbox, nodePort: 8082)
            #expect(optedOutTraffic.outbound() == "node")
            #expect(optedOutTraffic.inbound(to: try address(of: optedOutResult), port: 9080) == "app")
            #expect(try installedSpec(in: system) == nil)

            let managed = try sandbox.managedPods().map(\.pod.podKey).sorted()
            #expect(managed == ["default/excluded", "default/plain", "default/tproxy"])

            let status = try ChildProcess.run(Sandbox.capstanExecutable, ["status", "--node", "--agent-socket", sandbox.socketPath])
            #expect(status.status == 0, "\(status)")
            let tproxyLine = status.standardOutput.split(separator: "\n").first { $0.hasPrefix("default/tproxy ") } ?? ""
            #expect(tproxyLine.contains("TPROXY") && tproxyLine.contains("intact"), "\(status.standardOutput)")
            #expect(status.standardOutput.contains("3 managed pods"))
        }
    }

    @Test func restartedAgentKeepsManagingAndRepairsWithinTwoSeconds() throws {
        try withNodeSandbox { sandbox in
            try sandbox.startAgent()
            let pod = try sandbox.makePod("web")
            try sandbox.runtime.add(pod)
            #expect(sandbox.stopAgent() == 0)
            // Stopped, it took itself out of the CNI configuration; started again, it puts itself back.
            #expect(try !String(contentsOfFile: sandbox.primaryConfPath, encoding: .utf8).contains("capstan-cni"))
            try sandbox.startAgent()
            #expect(try sandbox.managedPods().map(\.pod.podKey) == ["default/web"])

            // A rule deleted by hand comes back, announced by netlink, well within 2 s.
            let namespace = NetworkNamespace(path: pod.netns)
            try namespace.run { _ = try NFTablesSession().run("flush chain inet capstan output") }
            let deadline = Date().addingTimeInterval(2)
            var intact = false
            while Date() < deadline && !intact {
                usleep(20_000)
                intact = try CaptureEngine.inspect(in: namespace).isIntact
            }
            #expect(intact, "not repaired within 2 s: \(sandbox.agentLog)")
            #expect(try sandbox.managedPods().first?.repairs == 1)
            #expect(try sandbox.agentEndpoint("/metrics", port: 18014).body.contains("capstan_node_repairs_total 1"))
            #expect(try PodTraffic(pod, in: sandbox, nodePort: 8080).outbound() == "outbound")
        }
    }

    /// The CNI error document a plugin printed: its code.
    func errorCode(_ result: ChildProcess.Result) -> Int? {
        if case .number(let code)? = (try? ConfigValue.parse(json: result.standardOutput))?["code"] { return Int(code) }
        return nil
    }

    @Test func checkAndDeleteBehave() throws {
        try withNodeSandbox { sandbox in
            try sandbox.startAgent()
            let runtime = sandbox.runtime
            let pod = try sandbox.makePod("api")
            try runtime.add(pod)
            try runtime.check(pod)

            // DEL through capstan-cni alone first: the agent forgets the pod, and CHECK then fails with
            // the plugin's own code (the whole chain's CHECK would stop earlier, at the bridge).
            #expect(try runtime.call("capstan-cni", "DEL", pod: pod).status == 0)
            #expect(try sandbox.managedPods().isEmpty)
            let check = try runtime.call("capstan-cni", "CHECK", pod: pod)
            #expect(check.status == 1)
            #expect(errorCode(check) == CNIError.Code.captureRefused.rawValue, "\(check)")
            #expect(check.standardOutput.contains("not managed"), "\(check)")

            // The whole chain's DEL, and a second one, as runtimes may send, succeed.
            try runtime.delete(pod)
            try runtime.delete(pod)
        }
    }

    @Test func aPodThatOptsOutOnARepeatedAddLosesItsCapture() throws {
        try withNodeSandbox { sandbox in
            try sandbox.startAgent()
            let runtime = sandbox.runtime
            let pod = try sandbox.makePod("batch")
            try runtime.add(pod)
            #expect(try installedSpec(in: pod) != nil)

            try sandbox.describePod("batch", labels: ["sidecar.istio.io/inject": "false"])
            let again = try runtime.call("capstan-cni", "ADD", pod: pod)
            #expect(again.status == 0, "\(again)")
            #expect(try installedSpec(in: pod) == nil)
            #expect(try sandbox.managedPods().isEmpty)
        }
    }

    @Test func malformedCallsGetSpecErrorsFromTheBinary() throws {
        try withNodeSandbox { sandbox in
            let runtime = sandbox.runtime
            try sandbox.startAgent()
            let environment = ["CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/none",
                               "CNI_IFNAME": "eth0", "CNI_ARGS": "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b"]
            let notJSON = try runtime.runPlugin("capstan-cni", environment: environment, input: "{cniVersion: 1.0.0")
            #expect(notJSON.status == 1 && errorCode(notJSON) == CNIError.Code.decodeFailure.rawValue, "\(notJSON)")

            var noContainer = environment
            noContainer["CNI_CONTAINERID"] = nil
            let missing = try runtime.runPlugin("capstan-cni", environment: noContainer,
                                                input: #"{"cniVersion":"1.0.0","name":"podnet","type":"capstan-cni","prevResult":{}}"#)
            #expect(missing.status == 1 && errorCode(missing) == CNIError.Code.invalidEnvironment.rawValue, "\(missing)")

            let version = try runtime.runPlugin("capstan-cni", environment: ["CNI_COMMAND": "VERSION"], input: #"{"cniVersion":"0.4.0"}"#)
            #expect(version.status == 0)
            #expect(version.standardOutput.contains(#""supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]"#), "\(version)")
        }
    }

    @Test func addFailsClosedWhenTheAgentIsDown() throws {
        try withNodeSandbox { sandbox in
            try sandbox.startAgent(["--keep-cni-on-exit"])
            #expect(sandbox.stopAgent() == 0)
            let pod = try sandbox.makePod("orphan")
            do {
                try sandbox.runtime.add(pod)
                Issue.record("ADD succeeded without a node agent")
            } catch let failure as CNIRuntime.PluginFailure {
                #expect(failure.plugin == "capstan-cni")
                #expect(failure.code == CNIError.Code.agentUnavailable.rawValue, "\(failure)")
            }
        }
    }

    @Test func badAnnotationFailsTheAddAndNamesIt() throws {
        try withNodeSandbox { sandbox in
            try sandbox.startAgent()
            let pod = try sandbox.makePod("typo")
            try sandbox.describePod("typo", annotations: ["traffic.sidecar.istio.io/excludeInboundPorts": "80,http"])
            do {
                try sandbox.runtime.add(pod)
                Issue.record("ADD succeeded with a bad annotation")
            } catch let failure as CNIRuntime.PluginFailure {
                #expect(failure.code == CNIError.Code.captureRefused.rawValue)
                #expect(failure.result.standardOutput.contains("traffic.sidecar.istio.io/excludeInboundPorts"), "\(failure)")
            }
            #expect(try installedSpec(in: pod) == nil)
        }
    }
}
