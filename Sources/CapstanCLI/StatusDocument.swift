import Capture
import FoundationEssentials
import HTTPEndpoints
import Netfilter
import Supervisor

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
    var sidecar: Sidecar

    init(_ capture: InstalledCapture, namespace: String, sidecar: Sidecar) {
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
        self.sidecar = sidecar
    }

    /// What the sidecar reports; a part that could not be read is left out, and `problems` says why.
    struct Sidecar: Encodable {
        struct Certificate: Encodable {
            var identity: String?
            var serialNumber: String
            /// RFC 3339.
            var expiry: String
            /// Negative once expired.
            var secondsLeft: Int
        }
        struct Listener: Encodable {
            var name: String
            var address: String
        }

        var agentAnswering: Bool
        var statusPort: Int
        var adminPort: Int
        /// Why the agent did not answer.
        var reason: String?
        var ready: Bool?
        var unmetConditions: [String]?
        var certificate: Certificate?
        /// True when `/certs` answered and lists no certificate the proxy presents.
        var presentsNoCertificate: Bool?
        var xdsUpstreamConnected: Bool?
        /// By service: CDS, EDS, LDS, SDS; a service that accepted nothing yet is absent.
        var acceptedVersions: [String: String]?
        var proxyState: String?
        var proxyRestarts: Int?
        var listeners: [Listener]?
        var problems: [String]?

        init(_ outcome: Result<SidecarStatus, OneShotHTTPClient.Failure>, reader: SidecarStatusReader, now: Date) {
            statusPort = reader.statusPort
            adminPort = reader.adminPort
            switch outcome {
            case .failure(let failure):
                agentAnswering = false
                reason = failure.reason
            case .success(let status):
                agentAnswering = true
                ready = status.ready
                unmetConditions = status.ready == nil ? nil : status.unmetConditions
                switch status.certificate {
                case .certificate(let found)?:
                    certificate = Certificate(identity: found.identity, serialNumber: found.serialNumber,
                                              expiry: found.expiry.formatted(.iso8601),
                                              secondsLeft: Int(found.expiry.timeIntervalSince(now).rounded(.down)))
                case .nothing?:
                    presentsNoCertificate = true
                case nil:
                    break
                }
                xdsUpstreamConnected = status.upstreamConnected
                acceptedVersions = status.acceptedVersions
                proxyState = status.proxyState
                proxyRestarts = status.proxyRestarts
                listeners = status.listeners?.map { Listener(name: $0.name, address: $0.address) }
                problems = status.problems.isEmpty ? nil : status.problems
            }
        }
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
