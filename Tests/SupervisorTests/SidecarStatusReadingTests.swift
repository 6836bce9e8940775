import FoundationEssentials
import Glibc
import HTTPEndpoints
import Supervisor
import Synchronization
import Testing

/// `capstan status`'s view of a sidecar: each endpoint's answer read on its own (from answers captured
/// from a real agent and proxy, ``SidecarAnswers``), and the reader against real loopback servers,
/// including endpoints that are missing, stuck or not there at all.
@Suite struct SidecarStatusReadingTests {
    static let clientID = "spiffe://cluster.local/ns/shop/sa/client"

    @Test func readinessIsTheAgentsAnswerWithItsReasons() throws {
        let ready = try SidecarStatus.readiness(status: 200, body: SidecarAnswers.ready)
        #expect(ready.ready && ready.unmet.isEmpty)
        let notReady = try SidecarStatus.readiness(status: 503, body: SidecarAnswers.notReady)
        #expect(!notReady.ready)
        #expect(notReady.unmet == ["proxy not LIVE (admin API not answering)", "LDS not accepted yet",
                                   "CDS not accepted yet", "no valid certificate"])
        #expect(throws: SidecarStatus.UnreadableAnswer.self) { try SidecarStatus.readiness(status: 404, body: "not found\n") }
    }

    @Test func agentMetricsGiveTheUpstreamAndTheRestarts() {
        let ready = SidecarStatus.agentMetrics(SidecarAnswers.readyMetrics)
        #expect(ready.upstreamConnected == true && ready.proxyRestarts == 0)
        let notReady = SidecarStatus.agentMetrics(SidecarAnswers.notReadyMetrics)
        #expect(notReady.upstreamConnected == false && notReady.proxyRestarts == 0)
        // The proxy's families alone (its own :15090) carry neither.
        let proxyOnly = SidecarAnswers.readyMetrics.split(separator: "\n").filter { !$0.contains("capstan_agent") }.joined(separator: "\n")
        let missing = SidecarStatus.agentMetrics(proxyOnly)
        #expect(missing.upstreamConnected == nil && missing.proxyRestarts == nil)
    }

    @Test func proxyStateAndListenersInEnvoysTextForms() throws {
        #expect(try SidecarStatus.proxyState(status: 200, body: SidecarAnswers.proxyReady) == "LIVE")
        #expect(throws: SidecarStatus.UnreadableAnswer.self) { try SidecarStatus.proxyState(status: 404, body: "not found\n") }
        #expect(try SidecarStatus.listeners(SidecarAnswers.listeners) == [
            .init(name: "virtualOutbound", address: "[::]:15001"), .init(name: "virtualInbound", address: "[::]:15006"),
        ])
        #expect(try SidecarStatus.listeners("") == [])
        #expect(throws: SidecarStatus.UnreadableAnswer.self) { try SidecarStatus.listeners("not found\n") }
    }

    @Test func acceptedVersionsComeFromEachDumpsVersionInfo() throws {
        #expect(try SidecarStatus.acceptedVersions(configDump: SidecarAnswers.configDump)
                == ["CDS": "1", "EDS": "1", "LDS": "2", "SDS": "1"])
        // Dumps of other kinds (Envoy's routes, scoped routes, …) say nothing of these services.
        let otherKind = SidecarAnswers.configDump.replacingOccurrences(of: "envoy.admin.v3.EndpointsConfigDump",
                                                                       with: "envoy.admin.v3.RoutesConfigDump")
        #expect(try SidecarStatus.acceptedVersions(configDump: otherKind) == ["CDS": "1", "LDS": "2", "SDS": "1"])
        #expect(throws: SidecarStatus.UnreadableAnswer.self) { try SidecarStatus.acceptedVersions(configDump: "not found\n") }
        #expect(throws: SidecarStatus.UnreadableAnswer.self) { try SidecarStatus.acceptedVersions(configDump: "{}") }
    }

    @Test func theWorkloadCertificateIsTheLeafWithASpiffeID() throws {
        let presented = try SidecarStatus.certificate(certs: SidecarAnswers.certs)
        #expect(presented == .certificate(.init(identity: Self.clientID, serialNumber: "24ad4513fdbf960c7eb00f4c5e23e35fecd55b5c",
                                                expiry: Date(timeIntervalSince1970: 1_795_348_854))))
        #expect(try SidecarStatus.certificate(certs: #"{"certificates" : []}"#) == .nothing)
        #expect(throws: SidecarStatus.UnreadableAnswer.self) { try SidecarStatus.certificate(certs: "[]") }
        let badTime = SidecarAnswers.certs.replacingOccurrences(of: "2026-11-22T12:00:54Z", with: "tomorrow")
        #expect(throws: SidecarStatus.UnreadableAnswer.self) { try SidecarStatus.certificate(certs: badTime) }
    }

    // MARK: The reader

    /// The agent's status port and the proxy's admin API on loopback, answering what a real sidecar did.
    static func sidecar(adminRoutes: (inout EndpointRoutes) -> Void = { _ in }) async throws -> (agent: LoopbackServer, admin: LoopbackServer) {
        var status = EndpointRoutes()
        status.get("/healthz/ready") { _ in EndpointResponse(.ok, SidecarAnswers.ready) }
        status.get("/stats/prometheus") { _ in .prometheus(SidecarAnswers.readyMetrics) }
        var admin = EndpointRoutes()
        admin.get("/ready") { _ in EndpointResponse(.ok, SidecarAnswers.proxyReady) }
        admin.get("/listeners") { _ in EndpointResponse(.ok, SidecarAnswers.listeners) }
        admin.get("/config_dump") { request in
            // The reader must ask for the endpoints too.
            request.query["include_eds"] == nil ? EndpointResponse(.badRequest, "include_eds expected\n")
                : EndpointResponse(.ok, SidecarAnswers.configDump, contentType: "application/json")
        }
        admin.get("/certs") { _ in EndpointResponse(.ok, SidecarAnswers.certs, contentType: "application/json") }
        adminRoutes(&admin)
        return (try await LoopbackServer(status), try await LoopbackServer(admin))
    }

    @Test func theReaderPutsEveryAnswerTogether() async throws {
        let (agent, admin) = try await Self.sidecar()
        defer { Task { await agent.close(); await admin.close() } }
        let status = try await SidecarStatusReader(statusPort: agent.port, adminPort: admin.port).read()
        #expect(status.problems == [])
        #expect(status.ready == true && status.unmetConditions.isEmpty)
        #expect(status.upstreamConnected == true && status.proxyRestarts == 0)
        #expect(status.proxyState == "LIVE")
        #expect(status.acceptedVersions == ["CDS": "1", "EDS": "1", "LDS": "2", "SDS": "1"])
        #expect(status.listeners?.map(\.name) == ["virtualOutbound", "virtualInbound"])
        guard case .certificate(let certificate)? = status.certificate else {
            Issue.record("no certificate: \(String(describing: status.certificate))")
            return
        }
        #expect(certificate.identity == Self.clientID)
    }

    @Test func aStuckOrMissingEndpointLeavesOnlyItsPartUnknown() async throws {
        let (agent, admin) = try await Self.sidecar { routes in
            routes.get("/certs", async: { _ in
                try? await Task.sleep(for: .seconds(10))
                return EndpointResponse(.ok, SidecarAnswers.certs)
            })
            routes.get("/listeners") { _ in .notFound }
        }
        defer { Task { await agent.close(); await admin.close() } }
        let clock = ContinuousClock()
        let started = clock.now
        let status = try await SidecarStatusReader(statusPort: agent.port, adminPort: admin.port, timeout: .milliseconds(200)).read()
        // Well under the stuck endpoint's 10 s, with room for a loaded machine.
        #expect(started.duration(to: clock.now) < .seconds(4), "a stuck endpoint costs its own deadline only")
        #expect(status.certificate == nil && status.listeners == nil)
        #expect(status.proxyState == "LIVE" && status.acceptedVersions?["LDS"] == "2" && status.ready == true)
        #expect(status.problems.sorted() == [
            "http://127.0.0.1:\(admin.port)/certs: no answer within 200ms",
            "http://127.0.0.1:\(admin.port)/listeners: answered 404: not found",
        ])
    }

    @Test func noAgentOnTheStatusPortIsAFailureNotAStatus() async throws {
        let reserved = try ReservedPort()
        do {
            _ = try await SidecarStatusReader(statusPort: reserved.port, adminPort: reserved.port).read()
            Issue.record("read a status from a port nothing listens on")
        } catch {
            #expect(error.url == "http://127.0.0.1:\(reserved.port)/healthz/ready")
            #expect(error.reason.hasPrefix("cannot connect"), "\(error)")
        }
    }

    @Test func aConnectorOpensEveryConnectionAndItsFailureIsThePartsReason() async throws {
        let (agent, admin) = try await Self.sidecar()
        defer { Task { await agent.close(); await admin.close() } }
        let adminPort = admin.port
        let asked = Mutex<[Int]>([])
        let reader = SidecarStatusReader(statusPort: agent.port, adminPort: adminPort, connector: { host, port, _ in
            asked.withLock { $0.append(port) }
            guard port != adminPort else { throw ConnectorRefusal(port: port) }
            return try Self.connectedSocket(host: host, port: port)
        })
        let status = try await reader.read()
        #expect(asked.withLock { $0 }.sorted() == ([agent.port, agent.port] + Array(repeating: adminPort, count: 4)).sorted())
        #expect(status.ready == true && status.upstreamConnected == true)
        #expect(status.proxyState == nil && status.listeners == nil && status.acceptedVersions == nil && status.certificate == nil)
        #expect(status.problems.count == 4 && status.problems.allSatisfy { $0.contains("refused by the test's connector") }, "\(status.problems)")
    }

    struct ConnectorRefusal: Error, CustomStringConvertible {
        var port: Int
        var description: String { "port \(port) refused by the test's connector" }
    }

    /// A blocking TCP connection to `host:port` (IPv4 loopback), its descriptor handed over.
    static func connectedSocket(host: String, port: Int) throws -> Int32 {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw ConnectorRefusal(port: port) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { close(descriptor); throw ConnectorRefusal(port: port) }
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { close(descriptor); throw ConnectorRefusal(port: port) }
        return descriptor
    }
}
