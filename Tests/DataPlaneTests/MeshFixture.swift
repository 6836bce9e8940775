@testable import DataPlane
import NIOCore
import NIOPosix
import XDS

/// Everything one mesh TLS test runs, on loopback: a CA, an event loop for test peers, an SDS server
/// (the agent's part), upstream echo servers and the proxy under test, in this process. `tearDown`
/// stops them all.
final class MeshFixture: @unchecked Sendable {
    let ca: TestCertificateAuthority
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let sds = TestSDSServer()
    private(set) var servers: [TestEchoServer] = []
    private(set) var proxy: Proxy?

    static let frontend = "spiffe://cluster.local/ns/shop/sa/frontend"
    static let payments = "spiffe://cluster.local/ns/shop/sa/payments"
    static let orders = "spiffe://cluster.local/ns/shop/sa/orders"

    init() async throws {
        ca = try TestCertificateAuthority()
        try await sds.start()
    }

    var runtime: ProxyRuntime { proxy!.runtime }

    /// Serves `default` (this proxy's certificate, for `identity`) and `ROOTCA` (`roots`, the CA's by default).
    func publishSecrets(version: String, identity: String = MeshFixture.frontend, rootPEM: String? = nil) throws -> TestCertificateAuthority.Credentials {
        let credentials = try ca.issue(identity)
        try sds.publish(version: version, [TestSDSServer.certificate("default", credentials),
                                           TestSDSServer.trust("ROOTCA", rootPEM: rootPEM ?? ca.rootPEM)])
        return credentials
    }

    func echoServer(tag: String, tls credentials: TestCertificateAuthority.Credentials? = nil) async throws -> TestEchoServer {
        let context = try credentials.map { try $0.context(server: true, roots: [try ca.root]) }
        let server = try await TestEchoServer.start(group: group, tag: tag, tls: context)
        servers.append(server)
        return server
    }

    /// Starts the proxy with these resources (decoded as from istiod) as its static configuration, plus
    /// the `sds-grpc` cluster pointing at the SDS server's socket, and waits until it is LIVE (which
    /// takes the SDS secrets).
    func startProxy(listeners: [Envoy_Config_Listener_V3_Listener], clusters: [Envoy_Config_Cluster_V3_Cluster],
                    configure: (inout ProxyOptions) -> Void = { _ in }) async throws -> Proxy {
        var staticClusters = try clusters.map { try XDSResourceDecoder.cluster($0).cluster }
        staticClusters.append(try sdsClusterConfig)
        var options = ProxyOptions()
        options.adminPort = 0
        options.statsPort = 0
        options.concurrency = 1
        options.controlPlaneBackoff = .init(initial: .milliseconds(50), maximum: .milliseconds(500))
        options.bootstrap = BootstrapConfig(listeners: try listeners.map { try XDSResourceDecoder.listener($0) }, clusters: staticClusters,
                                            adminPort: nil, dynamicResources: nil, warnings: [])
        configure(&options)
        let proxy = Proxy(options: options)
        self.proxy = proxy
        try proxy.start()
        let deadline = ContinuousClock.now + .seconds(10)
        while proxy.state != .live && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        return proxy
    }

    /// A proxy made by the test (not started by the fixture), stopped by `tearDown`.
    func adopt(_ proxy: Proxy) {
        self.proxy = proxy
    }

    /// The bootstrap's `sds-grpc` cluster: the SDS server's socket.
    var sdsClusterConfig: BootstrapConfig.Cluster {
        get throws {
            BootstrapConfig.Cluster(name: IstioShapes.sdsCluster, discovery: .endpoints([.init(try SocketAddress(unixDomainSocketPath: sds.path))]))
        }
    }

    func client(port: Int, credentials: TestCertificateAuthority.Credentials? = nil, alpn: [String] = []) async throws -> TestClient {
        let context = try credentials.map { try $0.context(server: false, roots: [try ca.root], alpn: alpn) }
        return try await TestClient.connect(group: group, port: port, tls: context)
    }

    /// Waits until `condition` holds, for up to `seconds`.
    func eventually(within seconds: Double = 5, _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while !condition() && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        return condition()
    }

    func tearDown() {
        if let proxy {
            proxy.stop()
            try? proxy.waitUntilStopped()
        }
        for server in servers { server.close() }
        sds.stop()
        try? group.syncShutdownGracefully()
    }
}
