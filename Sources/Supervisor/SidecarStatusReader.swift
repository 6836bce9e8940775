import Configuration
import HTTPEndpoints
import NIOCore
import NIOPosix

/// Reads a ``SidecarStatus`` over plain HTTP/1.1 on loopback: the agent's status port (`/healthz/ready`,
/// `/stats/prometheus`) and the proxy's admin API (`/ready`, `/listeners`, `/config_dump?include_eds`,
/// `/certs`). Every request has a short deadline, so a stuck endpoint costs one part of the answer, never
/// the whole.
public struct SidecarStatusReader: Sendable {
    public let host: String
    public let statusPort: Int
    public let adminPort: Int
    private let http: OneShotHTTPClient

    /// `connector` opens the connections (``OneShotHTTPClient/Connector``), e.g. inside a pod's network
    /// namespace; nil connects from this process's own.
    public init(statusPort: Int = 15020, adminPort: Int = 15000, host: String = "127.0.0.1",
                timeout: Duration = .milliseconds(500), connector: OneShotHTTPClient.Connector? = nil,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.host = host
        self.statusPort = statusPort
        self.adminPort = adminPort
        http = OneShotHTTPClient(timeout: timeout, group: group, connector: connector)
    }

    /// The sidecar's status; throws when the agent does not answer on the status port at all (no
    /// sidecar, or not started yet). Parts that do not answer are left unknown.
    public func read() async throws(OneShotHTTPClient.Failure) -> SidecarStatus {
        let readiness = try await http.request(.GET, host: host, port: statusPort, path: "/healthz/ready")
        async let metrics = fetch(statusPort, "/stats/prometheus")
        async let state = fetch(adminPort, "/ready", accepting: [200, 503])
        async let listeners = fetch(adminPort, "/listeners")
        async let dump = fetch(adminPort, "/config_dump?include_eds")
        async let certs = fetch(adminPort, "/certs")
        let answers = (metrics: await metrics, state: await state, listeners: await listeners, dump: await dump, certs: await certs)

        var problems: [String] = []
        /// The part read from `fetched`, or nil with the reason in `problems`.
        func part<Part>(_ fetched: Result<OneShotHTTPClient.Response, OneShotHTTPClient.Failure>,
                        _ read: (OneShotHTTPClient.Response) throws(SidecarStatus.UnreadableAnswer) -> Part) -> Part? {
            switch fetched {
            case .failure(let failure):
                problems.append(failure.description)
                return nil
            case .success(let response):
                do {
                    return try read(response)
                } catch {
                    problems.append(error.description)
                    return nil
                }
            }
        }
        var status = SidecarStatus()
        if let (ready, unmet) = part(.success(readiness), { answer throws(SidecarStatus.UnreadableAnswer) in
            try SidecarStatus.readiness(status: answer.status, body: answer.body)
        }) {
            status.ready = ready
            status.unmetConditions = unmet
        }
        if let (connected, restarts) = part(answers.metrics, { SidecarStatus.agentMetrics($0.body) }) {
            status.upstreamConnected = connected
            status.proxyRestarts = restarts
            if connected == nil || restarts == nil {
                problems.append("http://\(host):\(statusPort)/stats/prometheus: no capstan_agent_xds_upstream_connected or capstan_agent_proxy_restarts_total sample")
            }
        }
        status.proxyState = part(answers.state) { answer throws(SidecarStatus.UnreadableAnswer) in
            try SidecarStatus.proxyState(status: answer.status, body: answer.body)
        }
        status.listeners = part(answers.listeners) { answer throws(SidecarStatus.UnreadableAnswer) in
            try SidecarStatus.listeners(answer.body)
        }
        status.acceptedVersions = part(answers.dump) { answer throws(SidecarStatus.UnreadableAnswer) in
            try SidecarStatus.acceptedVersions(configDump: answer.body)
        }
        status.certificate = part(answers.certs) { answer throws(SidecarStatus.UnreadableAnswer) in
            try SidecarStatus.certificate(certs: answer.body)
        }
        status.problems = problems
        return status
    }

    /// One GET; a status outside `accepting` is a failure naming the URL.
    private func fetch(_ port: Int, _ path: String, accepting statuses: Set<Int> = [200]) async -> Result<OneShotHTTPClient.Response, OneShotHTTPClient.Failure> {
        do {
            let response = try await http.request(.GET, host: host, port: port, path: path)
            guard statuses.contains(response.status) else {
                return .failure(OneShotHTTPClient.Failure(url: "http://\(host):\(port)\(path)",
                                                        reason: "answered \(response.status): \(response.body.trimmingNewlines.prefix(200))"))
            }
            return .success(response)
        } catch {
            return .failure(error)
        }
    }
}
