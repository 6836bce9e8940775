import Capture
import FoundationEssentials
import Netfilter

/// `capstan status -o json`: the same facts as the text view, for machines.
struct StatusDocument: Encodable {
    struct RuleEntry: Encodable {
        var chain: String
        var comment: String?
        var rule: String
        var packets: UInt64
        var bytes: UInt64
    }

    struct Routing: Encodable {
        var expected: [String]
        var installed: [String]
    }

    var namespace: String
    var installed: Bool
    var intact: Bool
    var spec: [String]?
    var specProblem: String?
    var mode: String?
    var ipv6: Bool
    var listening: [UInt16]
    var rules: [RuleEntry]
    var routing: Routing
    var drift: [String]

    init(_ capture: InstalledCapture, namespace: String) {
        self.namespace = namespace
        installed = capture.table != nil
        intact = capture.isIntact
        spec = capture.spec?.canonicalArguments
        specProblem = capture.specProblem
        mode = capture.spec?.interceptionMode.rawValue
        ipv6 = capture.facts.hasIPv6
        listening = capture.facts.listeningTCPPorts.sorted()
        rules = (capture.table?.chainsInTraversalOrder ?? []).filter { $0.name != "capture_spec" }.flatMap { chain in
            chain.rules.map { RuleEntry(chain: chain.name, comment: $0.comment, rule: $0.text, packets: $0.packets, bytes: $0.bytes) }
        }
        routing = Routing(expected: capture.expectedRouting.commandLines, installed: capture.routing.commandLines)
        drift = capture.drift?.differences.map(\.description) ?? []
    }

    struct Trace: Encodable {
        struct Step: Encodable {
            var chain: String
            var comment: String
            var rule: String
        }

        var transport: String
        var destination: String
        var inbound: Bool
        var uid: UInt32
        var gid: UInt32
        var interface: String?
        var verdict: String
        var port: UInt16?
        var tproxy: Bool?
        var steps: [Step]
        var unrecognizedRules: [String]

        init(_ trace: PacketTrace) {
            transport = trace.query.transport.rawValue
            destination = SocketAddress(trace.query.destination, trace.query.destinationPort).description
            inbound = trace.query.inbound
            uid = trace.query.uid
            gid = trace.query.gid
            interface = trace.interface
            switch trace.verdict {
            case .captured(let port, let tproxy):
                verdict = "captured"
                self.port = port
                self.tproxy = tproxy
            case .passes: verdict = "passes"
            case .dropped: verdict = "dropped"
            case .noRoute: verdict = "no-route"
            }
            steps = trace.steps.map { Step(chain: $0.chain, comment: $0.comment, rule: $0.rule) }
            unrecognizedRules = trace.unrecognizedRules
        }

        func json() throws -> String { try encodeJSON(self) }
    }

    func json() throws -> String { try encodeJSON(self) }
}

private func encodeJSON(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}
