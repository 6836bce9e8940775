import HTTPEndpoints
import NIOHTTP1
import Synchronization

/// A real HTTP server on loopback answering as the proxy's admin API does (`/ready`, `/config_dump`,
/// `/stats`, `/drain_listeners`, `/stats/prometheus`), with an inbound connection count the test sets.
final class FakeProxyAdmin: Sendable {
    let server: LoopbackServer
    /// `POST /drain_listeners` calls, as their sorted query keys (`graceful&inboundonly`).
    let drainCalls = CallLog()
    let state = Mutex("LIVE")
    /// Open connections on the inbound listener (15006); the outbound one (15001) always has 4.
    let inboundConnections = Mutex(0)
    /// After the first drain, the inbound count drops to 0 this long later (nil: never on its own).
    let dropsToZeroAfterDrain = Mutex<Duration?>(nil)
    private let drainedAt = Mutex<ContinuousClock.Instant?>(nil)

    static let configDump = """
        {"configs": [
          {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "static_clusters": []},
          {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
           "static_listeners": [{"listener": {"name": "virtualOutbound", "traffic_direction": "OUTBOUND",
             "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}}}}],
           "dynamic_listeners": [{"name": "virtualInbound", "active_state": {"version_info": "1", "listener": {
             "name": "virtualInbound", "traffic_direction": "INBOUND",
             "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15006}}}}}]}
        ]}
        """

    init() async throws {
        let box = Box()
        var routes = EndpointRoutes()
        routes.get("/ready") { _ in
            let state = box.admin?.state.withLock { $0 } ?? "LIVE"
            return EndpointResponse(state == "LIVE" ? .ok : .serviceUnavailable, state + "\n")
        }
        routes.get("/config_dump") { _ in EndpointResponse(.ok, Self.configDump, contentType: "application/json") }
        routes.get("/stats") { _ in
            let inbound = box.admin?.currentInbound ?? 0
            return EndpointResponse(.ok, """
                cluster_manager.cds.update_success: 1
                listener.0.0.0.0_15001.downstream_cx_active: 4
                listener.0.0.0.0_15001.downstream_cx_total: 9
                listener.0.0.0.0_15006.downstream_cx_active: \(inbound)
                listener.0.0.0.0_15006.downstream_cx_total: 12
                listener.admin.downstream_cx_active: 1
                server.state: 0

                """)
        }
        routes.post("/drain_listeners") { request in
            box.admin?.drainCalls.record(request.query.keys.sorted().joined(separator: "&"))
            box.admin?.drainedAt.withLock { $0 = $0 ?? ContinuousClock.now }
            return EndpointResponse(.ok, "OK\n")
        }
        routes.get("/stats/prometheus") { _ in .prometheus("envoy_server_state 0\n") }
        server = try await LoopbackServer(routes)
        box.admin = self
    }

    var port: Int { server.port }

    private var currentInbound: Int {
        if let after = dropsToZeroAfterDrain.withLock({ $0 }), let drained = drainedAt.withLock({ $0 }),
           drained.duration(to: .now) >= after {
            return 0
        }
        return inboundConnections.withLock { $0 }
    }

    func close() async { await server.close() }

    /// Lets the routes (made before the server exists) reach it.
    private final class Box: @unchecked Sendable {
        private let lock = Mutex<FakeProxyAdmin?>(nil)
        var admin: FakeProxyAdmin? {
            get { lock.withLock { $0 } }
            set { lock.withLock { $0 = newValue } }
        }
    }
}
