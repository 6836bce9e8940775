import Configuration
import FoundationEssentials

/// What `capstan status` shows of a pod's sidecar, as the agent's status port and the proxy's admin API
/// report it: readiness, the workload identity and its certificate, the xDS state, the proxy's state and
/// its listeners. A part whose endpoint did not answer (or answered something unreadable) is nil, shown as
/// unknown, and `problems` says why.
public struct SidecarStatus: Sendable, Equatable {
    /// The workload certificate the proxy presents, from `/certs`.
    public struct Certificate: Sendable, Equatable {
        /// The leaf's SPIFFE ID (`spiffe://cluster.local/ns/shop/sa/payments`); nil when it has none.
        public var identity: String?
        /// Lowercase hex, as Envoy prints it.
        public var serialNumber: String
        public var expiry: Date

        public init(identity: String?, serialNumber: String, expiry: Date) {
            self.identity = identity
            self.serialNumber = serialNumber
            self.expiry = expiry
        }
    }

    /// What `/certs` says the proxy presents.
    public enum PresentedCertificate: Sendable, Equatable {
        case certificate(Certificate)
        /// No TLS context presents one (no mTLS in the configuration, or its SDS secret has not come).
        case nothing
    }

    /// A listener the proxy has open, from `/listeners`.
    public struct Listener: Sendable, Equatable {
        public var name: String
        /// `0.0.0.0:15001`, `[::]:15006`.
        public var address: String

        public init(name: String, address: String) {
            self.name = name
            self.address = address
        }
    }

    /// The xDS services whose accepted versions are reported, in the order Envoy applies them.
    public static let services = ["CDS", "EDS", "LDS", "SDS"]

    /// `/healthz/ready` answered 200.
    public var ready: Bool?
    /// Why not ready, as `/healthz/ready` lists it; empty when ready or unknown.
    public var unmetConditions: [String] = []
    public var certificate: PresentedCertificate?
    /// The agent's xDS relay has its stream to the control plane up (`capstan_agent_xds_upstream_connected`).
    public var upstreamConnected: Bool?
    /// `capstan_agent_proxy_restarts_total`.
    public var proxyRestarts: Int?
    /// The last accepted version by service (``services``), from the proxy's `/config_dump`; a service
    /// without a key has accepted nothing yet. Several versions in force at once are joined by commas.
    public var acceptedVersions: [String: String]?
    /// The proxy's server state (`LIVE`, `PRE_INITIALIZING`, `DRAINING`), from `/ready`.
    public var proxyState: String?
    public var listeners: [Listener]?
    /// Each part that could not be read: which endpoint, and why.
    public var problems: [String] = []

    public init() {}

    // MARK: Reading the answers

    /// A reply that is not what the endpoint answers: names the endpoint and what was wrong.
    public struct UnreadableAnswer: Error, CustomStringConvertible, Sendable, Equatable {
        public var description: String
    }

    /// `/healthz/ready`: 200 is ready; 503 is not, with the body's reasons (`not ready: A; B`).
    public static func readiness(status: Int, body: String) throws(UnreadableAnswer) -> (ready: Bool, unmet: [String]) {
        switch status {
        case 200:
            return (true, [])
        case 503:
            let text = body.trimmingNewlines
            let prefix = "not ready: "
            guard text.hasPrefix(prefix) else { return (false, text.isEmpty ? [] : [text]) }
            let reasons = text.dropFirst(prefix.count).split(separator: "; ").map(String.init)
            return (false, reasons)
        default:
            throw UnreadableAnswer(description: "/healthz/ready answered \(status): \(body.trimmingNewlines)")
        }
    }

    /// The agent's samples in `/stats/prometheus`: whether the xDS upstream is connected, and the proxy's
    /// restarts. Either is nil when its sample is missing.
    public static func agentMetrics(_ text: String) -> (upstreamConnected: Bool?, proxyRestarts: Int?) {
        var connected: Bool?
        var restarts: Int?
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let fields = line.split(separator: " ")
            guard fields.count == 2, let value = Double(fields[1]) else { continue }
            switch fields[0] {
            case "capstan_agent_xds_upstream_connected": connected = value == 1
            case "capstan_agent_proxy_restarts_total": restarts = Int(exactly: value)
            default: continue
            }
        }
        return (connected, restarts)
    }

    /// `/ready` of the proxy: its state word (`LIVE`, …), answered with 200 when LIVE and 503 otherwise.
    public static func proxyState(status: Int, body: String) throws(UnreadableAnswer) -> String {
        let state = body.trimmingNewlines
        guard status == 200 || status == 503, !state.isEmpty,
              state.allSatisfy({ ("A"..."Z").contains($0) || $0 == "_" }) else {
            throw UnreadableAnswer(description: "/ready answered \(status) with \"\(state.prefix(80))\", not a server state")
        }
        return state
    }

    /// `/listeners` in Envoy's text form: `NAME::ADDRESS:PORT`, one per line.
    public static func listeners(_ text: String) throws(UnreadableAnswer) -> [Listener] {
        var listeners: [Listener] = []
        for line in text.split(separator: "\n") {
            guard let separator = line.firstRange(of: "::"), separator.lowerBound != line.startIndex,
                  separator.upperBound != line.endIndex else {
                throw UnreadableAnswer(description: "/listeners line \"\(line.prefix(80))\" is not NAME::ADDRESS")
            }
            listeners.append(Listener(name: String(line[..<separator.lowerBound]), address: String(line[separator.upperBound...])))
        }
        return listeners
    }

    /// The accepted versions in Envoy's `/config_dump?include_eds`: `version_info` of the clusters and the
    /// listeners dumps (CDS, LDS), and of each endpoint assignment and each secret (EDS, SDS).
    public static func acceptedVersions(configDump text: String) throws(UnreadableAnswer) -> [String: String] {
        let dump: ConfigValue
        do {
            dump = try ConfigValue.parse(json: text)
        } catch {
            throw UnreadableAnswer(description: "/config_dump is not JSON: \(error)")
        }
        guard case .array(let configs)? = dump["configs"] else {
            throw UnreadableAnswer(description: "/config_dump has no \"configs\" list")
        }
        var versions: [String: Set<String>] = [:]
        func add(_ service: String, _ version: ConfigValue?) {
            if let version = version?.stringValue, !version.isEmpty { versions[service, default: []].insert(version) }
        }
        func each(_ list: ConfigValue?, _ body: (ConfigValue) -> Void) {
            if case .array(let entries)? = list { entries.forEach(body) }
        }
        for config in configs {
            switch config["@type"]?.stringValue {
            case "type.googleapis.com/envoy.admin.v3.ClustersConfigDump": add("CDS", config["version_info"])
            case "type.googleapis.com/envoy.admin.v3.ListenersConfigDump": add("LDS", config["version_info"])
            case "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump":
                each(config["dynamic_endpoint_configs"]) { add("EDS", $0["version_info"]) }
            case "type.googleapis.com/envoy.admin.v3.SecretsConfigDump":
                each(config["dynamic_active_secrets"]) { add("SDS", $0["version_info"]) }
            default: continue
            }
        }
        return versions.mapValues { $0.sorted().joined(separator: ",") }
    }

    /// The workload certificate in Envoy's `/certs`: the leaf presented whose subject alt names hold a
    /// SPIFFE ID (the latest to expire, if contexts differ); without one, the first leaf.
    public static func certificate(certs text: String) throws(UnreadableAnswer) -> PresentedCertificate {
        let answer: ConfigValue
        do {
            answer = try ConfigValue.parse(json: text)
        } catch {
            throw UnreadableAnswer(description: "/certs is not JSON: \(error)")
        }
        guard case .array(let contexts)? = answer["certificates"] else {
            throw UnreadableAnswer(description: "/certs has no \"certificates\" list")
        }
        var found: [Certificate] = []
        for context in contexts {
            guard case .array(let chain)? = context["cert_chain"] else { continue }
            for details in chain {
                guard let serial = details["serial_number"]?.stringValue, let expiry = details["expiration_time"]?.stringValue else {
                    throw UnreadableAnswer(description: "/certs has a cert_chain entry without serial_number or expiration_time")
                }
                guard let date = try? Date(expiry, strategy: .iso8601) else {
                    throw UnreadableAnswer(description: "/certs expiration_time \"\(expiry)\" is not an RFC 3339 time")
                }
                var identity: String?
                if case .array(let names)? = details["subject_alt_names"] {
                    identity = names.compactMap { $0["uri"]?.stringValue }.first { $0.hasPrefix("spiffe://") }
                }
                found.append(Certificate(identity: identity, serialNumber: serial, expiry: date))
            }
        }
        let workload = found.filter { $0.identity != nil }
        guard let chosen = workload.max(by: { $0.expiry < $1.expiry }) ?? found.first else { return .nothing }
        return .certificate(chosen)
    }
}
