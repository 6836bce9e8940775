import Logging
@testable import DataPlane
import HTTPProxy
import Testing
import XDS

/// Waiting for SDS secrets before LIVE: the secret store releases its waiters with the update that
/// brings the last secret they need, and the proxy turns LIVE then, or at the warming timeout.
@Suite struct ProxyWarmingTests {
    /// Polls `condition` until it holds or `seconds` pass.
    static func eventually(within seconds: Double = 10, _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while !condition() && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
        return condition()
    }

    /// A proxy (not started: no socket is bound) whose one cluster names `default` and `ROOTCA`.
    static func proxy(warmingTimeout: Duration) throws -> Proxy {
        var options = ProxyOptions()
        options.concurrency = 1
        options.warmingTimeout = warmingTimeout
        options.bootstrap = BootstrapConfig(listeners: [], clusters: [try TLSContextCacheTests.cluster(TLSContextCacheTests.payments, sni: "payments")],
                                            adminPort: nil, dynamicResources: nil, warnings: [])
        return Proxy(options: options)
    }

    static func shutDown(_ proxy: Proxy) {
        proxy.stop()
        try? proxy.waitUntilStopped()
    }

    @Test func becomeLiveIsReleasedByTheUpdateThatBringsTheLastSecret() async throws {
        let secrets = try TLSContextCacheTests.secrets(TestCertificateAuthority())
        // Far longer than the test waits: only the secrets' arrival can make it LIVE in time.
        let proxy = try Self.proxy(warmingTimeout: .seconds(300))
        defer { Self.shutDown(proxy) }
        proxy.becomeLive()
        #expect(proxy.state == .preInitializing)
        proxy.runtime.secrets.update(["default": try #require(secrets["default"])], version: "v1")
        #expect(proxy.state == .preInitializing)

        proxy.runtime.secrets.update(["ROOTCA": try #require(secrets["ROOTCA"])], version: "v1")
        #expect(await Self.eventually { proxy.state == .live })
    }

    @Test func becomeLiveWithTheSecretsThereIsImmediate() throws {
        let secrets = try TLSContextCacheTests.secrets(TestCertificateAuthority())
        let proxy = try Self.proxy(warmingTimeout: .seconds(300))
        defer { Self.shutDown(proxy) }
        proxy.runtime.secrets.update(secrets, version: "v1")
        proxy.becomeLive()
        #expect(proxy.state == .live)
    }

    @Test func withoutTheSecretsTheWarmingTimeoutStillEndsTheWait() async throws {
        let proxy = try Self.proxy(warmingTimeout: .milliseconds(200))
        defer { Self.shutDown(proxy) }
        let start = ContinuousClock.now
        proxy.becomeLive()
        #expect(proxy.state == .preInitializing)
        #expect(await Self.eventually { proxy.state == .live })
        #expect(ContinuousClock.now - start >= .milliseconds(200))
        #expect(proxy.runtime.secrets["default"] == nil)
    }

    @Test func waitersAreReleasedWhenAllTheirSecretsAreThereOrAtTheirDeadline() async throws {
        let secrets = try TLSContextCacheTests.secrets(TestCertificateAuthority())
        let store = SecretStore()
        let far = ContinuousClock.now + .seconds(300)
        async let both = store.waitForSecrets(["default", "ROOTCA"], until: far)
        async let one = store.waitForSecrets(["default"], until: far)
        async let never = store.waitForSecrets(["elsewhere"], until: ContinuousClock.now + .milliseconds(100))
        #expect(await never == false)
        store.update(["default": try #require(secrets["default"])], version: "v1")
        #expect(await one == true)
        store.update(["ROOTCA": try #require(secrets["ROOTCA"])], version: "v1")
        #expect(await both == true)
        // Secrets already there: no wait at all.
        #expect(await store.waitForSecrets(["default", "ROOTCA"], until: ContinuousClock.now) == true)
    }
}

/// Listeners waiting for their route configurations (RDS), as Envoy: subscribed by name once LDS is
/// accepted; a new listener is not in force until its routes come (or the warming timeout passes), a
/// changed one keeps its previous version serving meanwhile, and the proxy turns LIVE only with the
/// routes its first listeners need. The listeners here do not bind (istiod's per-port listeners), so no
/// socket is opened.
@Suite struct RouteWarmingTests {
    struct Harness {
        var proxy: Proxy
        var handler: DynamicResources
        var client: ADSClient

        init(warmingTimeout: Duration = .seconds(300)) {
            var options = ProxyOptions()
            options.concurrency = 1
            options.warmingTimeout = warmingTimeout
            let bootstrap = BootstrapConfig(listeners: [], clusters: [], adminPort: nil, dynamicResources: nil, warnings: [])
            options.bootstrap = bootstrap
            proxy = Proxy(options: options)
            let logger = Logger(label: "capstan.test.rds")
            client = ADSClient(server: .unixSocket(path: "/nonexistent/capstan-test-xds"), node: .init(), logger: logger)
            handler = DynamicResources(proxy: proxy, bootstrap: bootstrap, warmingTimeout: warmingTimeout, logger: logger)
        }

        var runtime: ProxyRuntime { proxy.runtime }

        func listeners(_ routes: [String: String], version: String) async throws -> ADSVerdict {
            var response = DiscoveryResponse()
            response.typeURL = XDSResourceType.listener.typeURL
            response.versionInfo = version
            response.resources = try routes.sorted { $0.key < $1.key }.map { name, route in
                try .packed(try HTTPConnectionManagerDecodingTests.listener(
                    HTTPConnectionManagerDecodingTests.manager { $0.rds.routeConfigName = route }, name: name), as: .listener)
            }
            return await handler.apply(response, type: .listener, client: client)
        }

        func routes(_ names: [String], version: String, status: UInt32 = 200) async throws -> ADSVerdict {
            var response = DiscoveryResponse()
            response.typeURL = XDSResourceType.route.typeURL
            response.versionInfo = version
            response.resources = try names.map { name in
                var proto = Envoy_Config_Route_V3_RouteConfiguration()
                proto.name = name
                proto.virtualHosts = [.with {
                    $0.name = "all"
                    $0.domains = ["*"]
                    $0.routes = [.with { $0.match.prefix = "/"; $0.directResponse.status = status }]
                }]
                return try .packed(proto, as: .route)
            }
            return await handler.apply(response, type: .route, client: client)
        }

        /// The route configuration the listener in force named `name` routes by.
        func routeName(of listener: String) -> String? {
            runtime.configuration.listeners[listener]?.chains.first?.httpConnectionManager?.discoveredRouteName
        }
    }

    @Test func aNewListenerWaitsForItsRoutesAndAChangedOneKeepsServing() async throws {
        let harness = Harness()
        defer { ProxyWarmingTests.shutDown(harness.proxy) }
        let runtime = harness.runtime

        #expect(try await harness.listeners(["0.0.0.0_8080": "8080"], version: "1") == .accept)
        #expect(runtime.configuration.listeners["0.0.0.0_8080"] == nil)
        #expect(runtime.versions.withLockedValue { $0.warmingListeners["0.0.0.0_8080"]?.waitingFor } == ["8080"])
        #expect(harness.client.subscribedNames(of: .route) == ["8080"])
        #expect(runtime.stats.envoyText.contains("listener_manager.total_listeners_warming: 1\n"))
        #expect(harness.proxy.state == .preInitializing)

        #expect(try await harness.routes(["8080"], version: "r1") == .accept)
        #expect(harness.routeName(of: "0.0.0.0_8080") == "8080")
        let manager = try #require(runtime.configuration.listeners["0.0.0.0_8080"]?.chains.first?.httpConnectionManager)
        #expect(runtime.configuration.routeTable(for: manager)?.name == "8080")
        #expect(runtime.versions.withLockedValue { $0.warmingListeners.isEmpty })
        #expect(await ProxyWarmingTests.eventually { harness.proxy.state == .live })
        #expect(runtime.stats.envoyText.contains("http.outbound_0.0.0.0_8080.rds.8080.update_success: 1\n"))

        // A new version naming other routes: the old one serves until they come.
        #expect(try await harness.listeners(["0.0.0.0_8080": "8080-v2"], version: "2") == .accept)
        #expect(harness.routeName(of: "0.0.0.0_8080") == "8080")
        #expect(runtime.configuration.routes["8080"] != nil)
        #expect(harness.client.subscribedNames(of: .route) == ["8080", "8080-v2"])
        #expect(runtime.versions.withLockedValue { $0.listeners["0.0.0.0_8080"]?.version } == "1")

        // A refused route configuration changes nothing.
        guard case .reject(let reason) = try await harness.routes(["8080-v2"], version: "r2", status: 700) else {
            Issue.record("not refused")
            return
        }
        #expect(reason.hasPrefix(#"route_config "8080-v2".virtual_hosts[0].routes[0]"#))
        #expect(harness.routeName(of: "0.0.0.0_8080") == "8080")
        #expect(runtime.stats.envoyText.contains("http.outbound_0.0.0.0_8080.rds.8080-v2.update_rejected: 1\n"))

        #expect(try await harness.routes(["8080-v2"], version: "r3") == .accept)
        #expect(harness.routeName(of: "0.0.0.0_8080") == "8080-v2")
        #expect(runtime.versions.withLockedValue { $0.listeners["0.0.0.0_8080"]?.version } == "2")
        // The old table is dropped with its subscription.
        #expect(harness.client.subscribedNames(of: .route) == ["8080-v2"])
        #expect(runtime.configuration.routes.keys.sorted() == ["8080-v2"])
        #expect(harness.proxy.configDump.contains("type.googleapis.com/envoy.admin.v3.RoutesConfigDump"))
        #expect(harness.proxy.configDump.contains("\"version_info\" : \"r3\""))
    }

    @Test func withoutItsRoutesAListenerGoesInForceAtTheWarmingTimeout() async throws {
        let harness = Harness(warmingTimeout: .milliseconds(200))
        defer { ProxyWarmingTests.shutDown(harness.proxy) }
        let start = ContinuousClock.now
        #expect(try await harness.listeners(["0.0.0.0_9090": "9090"], version: "1") == .accept)
        #expect(harness.proxy.state == .preInitializing)
        #expect(await ProxyWarmingTests.eventually { harness.runtime.configuration.listeners["0.0.0.0_9090"] != nil })
        #expect(ContinuousClock.now - start >= .milliseconds(200))
        #expect(await ProxyWarmingTests.eventually { harness.proxy.state == .live })
        // Without a table its requests get Envoy's 404; the table is taken when it comes.
        let manager = try #require(harness.runtime.configuration.listeners["0.0.0.0_9090"]?.chains.first?.httpConnectionManager)
        #expect(harness.runtime.configuration.routeTable(for: manager) == nil)
        #expect(try await harness.routes(["9090"], version: "r1") == .accept)
        #expect(harness.runtime.configuration.routeTable(for: manager)?.name == "9090")
    }
}
