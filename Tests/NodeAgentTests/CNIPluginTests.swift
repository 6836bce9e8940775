import Configuration
@testable import NodeAgent
import Testing

/// The plugin's side of the CNI protocol, without an agent: parsing, versions and error documents.
@Suite struct CNIPluginTests {
    static let environment = [
        "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-1", "CNI_PATH": "/opt/cni/bin",
    ]
    static let previous = #"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],"ips":[{"address":"10.1.0.7/24","interface":0}]}"#

    static func config(_ extra: String = "", version: String = "1.0.0", timeout: String = "0.2s") -> String {
        #"{"cniVersion":"\#(version)","name":"podnet","type":"capstan-cni","agent_socket":"/nonexistent/agent.sock","agent_timeout":"\#(timeout)"\#(extra),"prevResult":\#(previous)}"#
    }

    func errorCode(_ response: CNIPlugin.Response) -> Int? {
        if case .number(let code)? = (try? ConfigValue.parse(json: response.output))?["code"] { return Int(code) }
        return nil
    }

    @Test func versionListsWhatThePluginSpeaks() throws {
        let response = CNIPlugin().run(environment: ["CNI_COMMAND": "VERSION"], stdin: #"{"cniVersion":"1.0.0"}"#)
        #expect(response.exitStatus == 0)
        let document = try ConfigValue.parse(json: response.output)
        #expect(document["cniVersion"] == .string("1.0.0"))
        #expect(document["supportedVersions"] == .array(CNIInvocation.supportedVersions.map(ConfigValue.string)))
    }

    @Test func invocationReadsPodAndAddresses() throws {
        let invocation = try CNIInvocation.parse(environment: Self.environment, stdin: Self.config())
        #expect(invocation.command == .add)
        #expect(invocation.podName == "cart-1")
        #expect(invocation.podNamespace == "shop")
        #expect(invocation.podAddresses == ["10.1.0.7"])
        #expect(invocation.config.agentTimeout == .milliseconds(200))
    }

    @Test func excludedNamespacePassesThePreviousResultThroughWithoutTheAgent() throws {
        let response = CNIPlugin().run(environment: Self.environment, stdin: Self.config(#","exclude_namespaces":["shop"]"#))
        #expect(response.exitStatus == 0, "\(response.output)")
        #expect(try ConfigValue.parse(json: response.output) == ConfigValue.parse(json: Self.previous))
    }

    @Test func addFailsClosedWhenTheAgentIsUnreachable() {
        let response = CNIPlugin().run(environment: Self.environment, stdin: Self.config())
        #expect(response.exitStatus == 1)
        #expect(errorCode(response) == CNIError.Code.agentUnavailable.rawValue)
        #expect(response.output.contains("/nonexistent/agent.sock"))
    }

    @Test func deleteSucceedsWithoutTheAgent() {
        var environment = Self.environment
        environment["CNI_COMMAND"] = "DEL"
        environment["CNI_NETNS"] = nil
        let response = CNIPlugin().run(environment: environment, stdin: Self.config())
        #expect(response.exitStatus == 0)
        #expect(response.output.isEmpty)
    }

    /// Each case changes the valid environment (nil removes a variable) and names what the error must mention.
    @Test(arguments: [
        (["CNI_CONTAINERID": nil], "CNI_CONTAINERID"),
        (["CNI_COMMAND": "JUMP"], "JUMP"),
        (["CNI_IFNAME": "eth/0"], "eth/0"),
        (["CNI_CONTAINERID": "a b"], "a b"),
        (["CNI_NETNS": ""], "CNI_NETNS"),
        (["CNI_ARGS": "K8S_POD_NAME"], "K8S_POD_NAME"),
    ] as [([String: String?], String)])
    func badEnvironmentIsRefusedWithCode4(changes: [String: String?], named: String) {
        var environment = Self.environment
        for (name, value) in changes { environment[name] = value }
        let response = CNIPlugin().run(environment: environment, stdin: Self.config())
        #expect(response.exitStatus == 1)
        #expect(errorCode(response) == CNIError.Code.invalidEnvironment.rawValue)
        #expect(response.output.contains(named))
    }

    @Test func badConfigurationsGetTheirSpecCodes() {
        let cases: [(String, CNIError.Code, String)] = [
            ("{not json", .decodeFailure, "JSON"),
            (Self.config(version: "9.9.9"), .incompatibleVersion, "9.9.9"),
            (Self.config(timeout: "soon"), .invalidNetworkConfig, "agent_timeout"),
            (Self.config(timeout: "0s"), .invalidNetworkConfig, "agent_timeout"),
            (#"{"cniVersion":"1.0.0","name":"podnet","type":"capstan-cni"}"#, .invalidNetworkConfig, "prevResult"),
            (Self.config(#","exclude_namespaces":"shop""#), .invalidNetworkConfig, "exclude_namespaces"),
        ]
        for (input, code, named) in cases {
            let response = CNIPlugin().run(environment: Self.environment, stdin: input)
            #expect(response.exitStatus == 1, "\(input)")
            #expect(errorCode(response) == code.rawValue, "\(input): \(response.output)")
            #expect(response.output.contains(named), "\(input): \(response.output)")
        }
    }

    @Test func checkNeedsVersion040() {
        var environment = Self.environment
        environment["CNI_COMMAND"] = "CHECK"
        let response = CNIPlugin().run(environment: environment, stdin: Self.config(version: "0.3.1"))
        #expect(errorCode(response) == CNIError.Code.incompatibleVersion.rawValue)
    }

    @Test func wholeNumbersStayIntegersInJSON() throws {
        #expect(ConfigValue.object(["interface": .number(0), "mtu": .number(1500.5)]).jsonText() == #"{"interface":0,"mtu":1500.5}"#)
    }
}
