@testable import DataPlane
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
