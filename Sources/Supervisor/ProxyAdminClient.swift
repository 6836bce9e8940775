import Configuration
import HTTPEndpoints
import NIOCore
import NIOHTTP1
import NIOPosix

/// The agent's side of the proxy's admin API on 127.0.0.1 (Envoy's paths): its state, inbound drain,
/// open inbound connections, and its Prometheus text. Every call has a deadline (1 s by default).
public struct ProxyAdminClient: Sendable {
    public let host: String
    public let port: Int
    private let http: OneShotHTTPClient

    public init(port: Int = 15000, host: String = "127.0.0.1", timeout: Duration = .seconds(1),
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.host = host
        self.port = port
        http = OneShotHTTPClient(timeout: timeout, group: group)
    }

    /// `GET /ready`: the server state as Envoy names it (`LIVE`, `PRE_INITIALIZING`, `DRAINING`).
    /// Envoy answers 503 with the state when it is not LIVE; that is an answer, not a failure.
    public func state() async throws(OneShotHTTPClient.Failure) -> String {
        let response = try await call(.GET, "/ready", accepting: [200, 503])
        return response.body.trimmingNewlines
    }

    /// `POST /drain_listeners?inboundonly&graceful`: inbound listeners stop accepting, their open
    /// connections run on; outbound keeps working.
    public func drainInbound() async throws(OneShotHTTPClient.Failure) {
        _ = try await call(.POST, "/drain_listeners?inboundonly&graceful")
    }

    /// The ports of the inbound listeners: those `/config_dump` says are `INBOUND`.
    public func inboundPorts() async throws(OneShotHTTPClient.Failure) -> Set<Int> {
        let dump = try await call(.GET, "/config_dump")
        do {
            return try Self.inboundPorts(configDump: dump.body)
        } catch {
            throw OneShotHTTPClient.Failure(url: url("/config_dump"), reason: "unreadable config dump: \(error)")
        }
    }

    /// Open connections on the listeners of `ports`, by their `downstream_cx_active` in `/stats` (Envoy
    /// names a listener's stats by its address and port).
    public func activeConnections(onPorts ports: Set<Int>) async throws(OneShotHTTPClient.Failure) -> Int {
        if ports.isEmpty { return 0 }
        return Self.activeConnections(stats: try await call(.GET, "/stats").body, ports: ports)
    }

    /// Open connections on the inbound listeners.
    public func activeInboundConnections() async throws(OneShotHTTPClient.Failure) -> Int {
        try await activeConnections(onPorts: try await inboundPorts())
    }

    /// `GET /stats/prometheus`: the proxy's metrics, in Prometheus text.
    public func prometheusText() async throws(OneShotHTTPClient.Failure) -> String {
        try await call(.GET, "/stats/prometheus").body
    }

    // MARK: Reading the answers

    /// The ports of listeners whose `traffic_direction` is `INBOUND`, static or dynamic.
    static func inboundPorts(configDump text: String) throws -> Set<Int> {
        let dump = try ConfigValue.parse(json: text)
        guard case .array(let configs)? = dump["configs"] else { return [] }
        var listeners: [ConfigValue] = []
        for config in configs {
            if case .array(let entries)? = config["static_listeners"] {
                listeners += entries.compactMap { $0["listener"] }
            }
            if case .array(let entries)? = config["dynamic_listeners"] {
                listeners += entries.compactMap { $0["active_state"]?["listener"] }
            }
        }
        var ports: Set<Int> = []
        for listener in listeners where listener["traffic_direction"]?.stringValue == "INBOUND" {
            if case .number(let port)? = listener["address"]?["socket_address"]?["port_value"], let whole = Int(exactly: port) {
                ports.insert(whole)
            }
        }
        return ports
    }

    /// Sums `listener.ADDRESS_PORT.downstream_cx_active: N` over `ports`.
    static func activeConnections(stats text: String, ports: Set<Int>) -> Int {
        var total = 0
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[0].hasPrefix("listener."), parts[0].hasSuffix(".downstream_cx_active") else { continue }
            let listener = parts[0].dropFirst("listener.".count).dropLast(".downstream_cx_active".count)
            guard let underscore = listener.lastIndex(of: "_"), let port = Int(listener[listener.index(after: underscore)...]),
                  ports.contains(port), let value = Int(parts[1].drop(while: { $0 == " " })) else { continue }
            total += value
        }
        return total
    }

    // MARK: Requests

    private func url(_ path: String) -> String { "http://\(host):\(port)\(path)" }

    private func call(_ method: HTTPMethod, _ path: String, accepting statuses: Set<Int> = [200])
        async throws(OneShotHTTPClient.Failure) -> OneShotHTTPClient.Response {
        let response = try await http.request(method, host: host, port: port, path: path)
        guard statuses.contains(response.status) else {
            throw OneShotHTTPClient.Failure(url: url(path), reason: "answered \(response.status): \(response.body.trimmingNewlines)")
        }
        return response
    }
}

extension String {
    /// Without the line ends an answer finishes with.
    var trimmingNewlines: String {
        var text = Substring(self)
        while let last = text.last, last == "\n" || last == "\r" || last == " " { text.removeLast() }
        return String(text)
    }
}
