import Configuration
@testable import DataPlane
import HTTPProxy
import NIOCore
import Testing
import XDS

/// A cluster's choices under a retry's `previous_priorities` load, and Envoy's slow start: the factor, how
/// it shares picks between a host that just joined and one that did not, and how it is decoded.
@Suite struct RetryPriorityAndSlowStartTests {
    func address(_ ip: String, _ port: Int = 80) throws -> SocketAddress { try SocketAddress(ipAddress: ip, port: port) }

    /// Priority 0: .10; priority 1: .20 (one locality each).
    func twoPriorities() throws -> ClusterRuntime {
        var config = BootstrapConfig.Cluster(name: "svc", discovery: .endpoints([.init(try address("192.0.2.10"), locality: 0),
                                                                                 .init(try address("192.0.2.20"), locality: 1)]))
        config.localities = [.init(name: "r/a/", priority: 0), .init(name: "r/b/", priority: 1)]
        return ClusterRuntime(config)
    }

    @Test func aRetryUnderPreviousPrioritiesGoesToThePriorityNotTried() throws {
        let cluster = try twoPriorities()
        let downstream = DownstreamConnectionInfo(remoteAddress: try address("192.0.2.1", 40000), localAddress: try address("10.0.0.1"))
        let first = try cluster.chooseEndpoint(for: downstream, hash: nil).get()
        #expect(first.address.ipAddress == "192.0.2.10" && first.priority == 0)
        var priorities = PreviousPriorities(updateFrequency: 1)
        priorities.attempted(priority: first.priority)
        for _ in 0..<20 {
            let retry = try cluster.chooseEndpoint(for: downstream, hash: nil, priorities: &priorities).get()
            #expect(retry.address.ipAddress == "192.0.2.20" && retry.priority == 1)
        }
        // Below the update frequency, the cluster's own load: priority 0.
        var istiods = PreviousPriorities(updateFrequency: 2)
        istiods.attempted(priority: 0)
        #expect(try cluster.chooseEndpoint(for: downstream, hash: nil, priorities: &istiods).get().address.ipAddress == "192.0.2.10")
        istiods.attempted(priority: 0)
        #expect(try cluster.chooseEndpoint(for: downstream, hash: nil, priorities: &istiods).get().address.ipAddress == "192.0.2.20")
        // One priority (no plan): every endpoint is priority 0 and the retry load changes nothing.
        let flat = ClusterRuntime(.init(name: "flat", discovery: .endpoints([.init(try address("192.0.2.30"))])))
        var alone = PreviousPriorities(updateFrequency: 1)
        alone.attempted(priority: 0)
        #expect(try flat.chooseEndpoint(for: downstream, hash: nil, priorities: &alone).get().address.ipAddress == "192.0.2.30")
    }

    @Test func slowStartFactorFollowsEnvoysFormula() {
        let linear = BootstrapConfig.Cluster.SlowStart(window: .seconds(10))
        #expect(linear.factor(age: .seconds(5)) == 0.5)
        #expect(linear.factor(age: .seconds(10)) == 1 && linear.factor(age: .seconds(60)) == 1)
        // Never below the minimum weight (10 %), and at least 1 ms of the window counts.
        #expect(linear.factor(age: .zero) == 0.1 && linear.factor(age: .milliseconds(500)) == 0.1)
        // Aggression 2: the square root of the time share; a minimum of 0 lets a new host start at 1 ms.
        let aggressive = BootstrapConfig.Cluster.SlowStart(window: .seconds(100), aggression: 2, minimumWeight: 0)
        #expect(abs(aggressive.factor(age: .seconds(25)) - 0.5) < 1e-9)
        #expect(abs(aggressive.factor(age: .zero) - (0.001 / 100).squareRoot()) < 1e-12)
        // Envoy takes an aggression not above 0 as 1.
        #expect(BootstrapConfig.Cluster.SlowStart(window: .seconds(10), aggression: 0).aggression == 1)
    }

    /// A test clock, in nanoseconds of uptime (read and moved on the test's thread only).
    final class Clock: @unchecked Sendable {
        private var nanoseconds: UInt64 = 1_000_000_000_000
        var now: NIODeadline { .uptimeNanoseconds(nanoseconds) }
        func advance(_ amount: Duration) { nanoseconds += UInt64(amount.components.seconds) * 1_000_000_000 }
    }

    func picks(_ cluster: ClusterRuntime, _ count: Int) throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for _ in 0..<count { counts[try cluster.endpoint(originalDestination: try address("10.0.0.1")).get().address.ipAddress ?? "", default: 0] += 1 }
        return counts
    }

    @Test(arguments: [BootstrapConfig.Cluster.LoadBalancing.roundRobin, .leastRequest])
    func aHostThatJustJoinedRampsUpOverTheWindow(_ policy: BootstrapConfig.Cluster.LoadBalancing) throws {
        let clock = Clock()
        var config = BootstrapConfig.Cluster(name: "svc", discovery: .endpoints([.init(try address("192.0.2.10"))]))
        config.loadBalancing = policy
        config.slowStart = .init(window: .seconds(10))
        let old = ClusterRuntime(config, clock: { clock.now })
        // 60 s later, .11 joins: .10 keeps the time it joined (out of its window), .11 starts its own.
        clock.advance(.seconds(60))
        config.discovery = .endpoints([.init(try address("192.0.2.10")), .init(try address("192.0.2.11"))])
        let cluster = ClusterRuntime(config, previous: old, clock: { clock.now })
        #expect(cluster.joined[0] == old.joined[0] && cluster.joined[1] == clock.now)
        // Just joined: the minimum weight, 0.1 against 1 (LEAST_REQUEST: no request is open, each pick
        // ends at once).
        func share(of count: Int) throws -> Int {
            var counts: [String: Int] = [:]
            for _ in 0..<count {
                let choice = try cluster.endpoint(originalDestination: try address("10.0.0.1")).get()
                counts[choice.address.ipAddress ?? "", default: 0] += 1
                cluster.released(choice.index)
            }
            return (counts["192.0.2.11"] ?? 0) * 1000 / count
        }
        #expect((80...100).contains(try share(of: 1100)), "1 in 11")
        // Half the window: 0.5 against 1, a third of the picks.
        clock.advance(.seconds(5))
        #expect((323...343).contains(try share(of: 1500)), "1 in 3")
        // The window is over: equal shares, by the policy's own choice.
        clock.advance(.seconds(5))
        let after = try share(of: 1000)
        #expect(policy == .roundRobin ? after == 500 : (400...600).contains(after))
    }

    @Test func slowStartIsDecodedFromEitherLbConfigAndOnlyForItsPolicy() throws {
        var proto = Envoy_Config_Cluster_V3_Cluster()
        proto.name = "svc"
        proto.type = .static
        proto.lbPolicy = .roundRobin
        proto.roundRobinLbConfig.slowStartConfig.slowStartWindow = .init(seconds: 30)
        #expect(try XDSResourceDecoder.cluster(proto).cluster.slowStart == .init(window: .seconds(30), aggression: 1, minimumWeight: 0.1))
        #expect(try XDSResourceDecoder.cluster(proto).cluster.fieldsNotActedOn.isEmpty)
        // istiod's `warmup`: aggression and minimum given (its runtime key "(" is not read).
        proto.lbPolicy = .leastRequest
        proto.leastRequestLbConfig.slowStartConfig.slowStartWindow = .init(seconds: 30)
        proto.leastRequestLbConfig.slowStartConfig.aggression.defaultValue = 1.5
        proto.leastRequestLbConfig.slowStartConfig.aggression.runtimeKey = "("
        proto.leastRequestLbConfig.slowStartConfig.minWeightPercent.value = 25
        let decoded = try XDSResourceDecoder.cluster(proto).cluster
        #expect(decoded.slowStart == .init(window: .seconds(30), aggression: 1.5, minimumWeight: 0.25))
        #expect(decoded.fieldsNotActedOn.map(\.path) == ["least_request_lb_config.slow_start_config.aggression.runtime_key"])
        proto.lbPolicy = .roundRobin
        #expect(throws: ConfigError(path: #"cluster "svc".least_request_lb_config"#, message: "is for lb_policy LEAST_REQUEST")) {
            try XDSResourceDecoder.cluster(proto)
        }
        proto.lbPolicy = .leastRequest
        proto.leastRequestLbConfig.slowStartConfig.minWeightPercent.value = 120
        #expect(throws: ConfigError.self) { try XDSResourceDecoder.cluster(proto) }
    }
}
