@testable import DataPlane
import NIOCore
import Testing

/// Envoy's priority load, panic with priorities and locality weights, on the examples of Envoy's
/// architecture overview ("Priority levels", "Panic threshold", "Locality weighted load balancing"),
/// and a cluster that fails over and splits by locality as hosts are ejected.
@Suite struct PriorityLoadTests {
    /// Two priorities of 100 hosts, `first` and `second` of them available, the default factor (140).
    func load(_ first: Int, _ second: Int, panicThreshold: Double = 50) -> PriorityLoad {
        PriorityLoad(available: [first, second], total: [100, 100], overprovisioningFactor: 140, panicThreshold: panicThreshold)
    }

    @Test func priorityLoadFollowsEnvoysTable() {
        #expect(load(100, 100).percent == [100, 0])
        #expect(load(72, 72).percent == [100, 0])
        #expect(load(71, 71).percent == [99, 1])
        #expect(load(50, 60).percent == [70, 30])
        #expect(load(25, 100).percent == [35, 65])
        // Not enough health in all: scaled up by 100 / 70.
        #expect(load(25, 25, panicThreshold: 0).percent == [50, 50])
        // A factor of 100 spills over as soon as a host is out.
        #expect(PriorityLoad(available: [9, 10], total: [10, 10], overprovisioningFactor: 100, panicThreshold: 50).percent == [90, 10])
        // Three priorities: what the first two cannot take goes to the third.
        #expect(PriorityLoad(available: [2, 1, 4], total: [4, 4, 4], overprovisioningFactor: 140, panicThreshold: 50).percent == [70, 30, 0])
    }

    @Test func panicIsPerPriorityOnlyWhenTheTotalIsShort() {
        // Enough health over all priorities: no panic, however low one priority is.
        #expect(load(25, 100).panic == [false, false])
        #expect(load(0, 100).percent == [0, 100] && load(0, 100).panic == [false, false])
        // Short in total: the priority below the threshold is in panic, the other not.
        let partly = load(5, 65)
        #expect(partly.panic == [true, false])
        #expect(partly.percent.reduce(0, +) == 100 && partly.percent[1] >= 92)
        // Every priority in panic: load by the number of hosts.
        let total = PriorityLoad(available: [1, 0], total: [10, 30], overprovisioningFactor: 140, panicThreshold: 50)
        #expect(total.panic == [true, true] && total.percent == [25, 75])
        // Nothing available and panic disabled: all to priority 0 (which has no host to give).
        let none = PriorityLoad(available: [0, 0], total: [2, 2], overprovisioningFactor: 140, panicThreshold: 0)
        #expect(none.percent == [100, 0] && none.panic == [false, false])
        #expect(load(50, 60).priority(for: 69) == 0 && load(50, 60).priority(for: 70) == 1)
    }

    @Test func localityWeightsFollowEnvoysTable() {
        // X weighs 1, Y weighs 2 and is fully available; X's share as its hosts go.
        func share(ofX available: Int) -> Int {
            let x = PriorityLoad.localityWeight(1, available: available, total: 100, overprovisioningFactor: 140)
            let y = PriorityLoad.localityWeight(2, available: 100, total: 100, overprovisioningFactor: 140)
            return Int((x / (x + y) * 100).rounded())
        }
        #expect(share(ofX: 100) == 33)
        #expect(share(ofX: 70) == 33)
        #expect(share(ofX: 50) == 26)
        #expect(share(ofX: 25) == 15)
        #expect(share(ofX: 0) == 0)
        #expect(PriorityLoad.localityWeight(0, available: 1, total: 1, overprovisioningFactor: 140) == 0)
    }

    func cluster(localities: [BootstrapConfig.Cluster.Locality], hosts: [Int], weighted: Bool = false) throws -> ClusterRuntime {
        var endpoints: [BootstrapConfig.Cluster.Endpoint] = []
        for (locality, count) in hosts.enumerated() {
            for host in 0..<count {
                endpoints.append(.init(try SocketAddress(ipAddress: "192.0.2.\(10 * (locality + 1) + host)", port: 80), locality: locality))
            }
        }
        var config = BootstrapConfig.Cluster(name: "svc", discovery: .endpoints(endpoints))
        config.localities = localities
        config.localityWeighted = weighted
        config.outlierDetection = { var detection = OutlierDetectionConfig(); detection.consecutive5xx = 1; detection.maxEjectionPercent = 100; return detection }()
        return ClusterRuntime(config)
    }

    func picks(_ cluster: ClusterRuntime, _ count: Int = 4000) throws -> [String: Int] {
        let original = try SocketAddress(ipAddress: "10.0.0.1", port: 80)
        var counts: [String: Int] = [:]
        for _ in 0..<count { counts[try cluster.endpoint(originalDestination: original).get().address.ipAddress ?? "", default: 0] += 1 }
        return counts
    }

    @Test func ejectedHostsSpillTheirPriorityOverToTheNext() throws {
        // Priority 0: .10 and .11 (zone a); priority 1: .20 and .21 (zone b).
        let runtime = try cluster(localities: [.init(name: "r/a/", priority: 0), .init(name: "r/b/", priority: 1)], hosts: [2, 2])
        #expect(try picks(runtime, 400).keys.sorted() == ["192.0.2.10", "192.0.2.11"])
        // One of two out: priority 0's health is 70 %, so 30 % go to priority 1.
        runtime.outlierDetector?.record(.response(status: 500), host: 0)
        let spilled = try picks(runtime)
        #expect(spilled["192.0.2.10"] == nil)
        let second = (spilled["192.0.2.20"] ?? 0) + (spilled["192.0.2.21"] ?? 0)
        #expect((1000...1400).contains(second), "\(spilled)")
        // Both out: all to priority 1, and no panic (its health makes the total 100 %).
        runtime.outlierDetector?.record(.response(status: 500), host: 1)
        #expect(try picks(runtime, 400).keys.sorted() == ["192.0.2.20", "192.0.2.21"])
        #expect(runtime.stats.outlierDetection.panics.value == 0)
        // Everything out: total panic, every host again.
        runtime.outlierDetector?.record(.response(status: 500), host: 2)
        runtime.outlierDetector?.record(.response(status: 500), host: 3)
        #expect(try picks(runtime, 400).count == 4)
        #expect(runtime.stats.outlierDetection.panics.value == 400)
    }

    @Test func localitiesTakeTheirWeightScaledByTheirHealth() throws {
        // One priority, zone a weighs 80 (one host), zone b 20 (one host).
        let runtime = try cluster(localities: [.init(name: "r/a/", priority: 0, weight: 80), .init(name: "r/b/", priority: 0, weight: 20)],
                                  hosts: [1, 1], weighted: true)
        let split = try picks(runtime)
        #expect((3040...3360).contains(split["192.0.2.10"] ?? 0), "\(split)")
        // Zone a's host out: its effective weight is 0, zone b takes everything.
        runtime.outlierDetector?.record(.response(status: 500), host: 0)
        #expect(try picks(runtime, 400) == ["192.0.2.20": 400])
        // Without locality_weighted_lb_config, the weights are not used (as in Envoy): round robin.
        let plain = try cluster(localities: [.init(priority: 0, weight: 80), .init(priority: 0, weight: 20)], hosts: [1, 1])
        #expect(try picks(plain, 400) == ["192.0.2.10": 200, "192.0.2.20": 200])
    }
}

extension PriorityLoadTests {
    @Test func clustersListsEachHostsLocalityAndPriority() throws {
        let runtime = try cluster(localities: [.init(name: "us-east/a/s1", priority: 0), .init(name: "us-east/b/", priority: 1)], hosts: [1, 1])
        #expect(runtime.hostLines.contains("svc::192.0.2.20:80::zone::b"))
        #expect(runtime.hostLines.contains("svc::192.0.2.20:80::priority::1"))
        #expect(runtime.hostLines.contains("svc::192.0.2.10:80::sub_zone::s1"))
        #expect(runtime.hostLines.contains("svc::192.0.2.10:80::region::us-east"))
    }
}

/// Envoy's degraded load: DEGRADED hosts take what their priorities' healthy hosts leave, by their own
/// health, and count toward panic; with locality weights, their localities by their degraded hosts.
extension PriorityLoadTests {
    @Test func degradedHostsTakeWhatTheHealthyOnesLeaveAsEnvoyComputesIt() {
        // Envoy's own example: healths of 10, 20 and 10 %, degraded 20, 10 and 0 %: 16/28/14 % to the
        // healthy hosts (the first takes rounding's 2 points), 28/14/0 % to the degraded ones.
        let three = PriorityLoad(available: [10, 20, 10], degraded: [20, 10, 0], total: [100, 100, 100], overprovisioningFactor: 100,
                                 panicThreshold: 0)
        #expect(three.percent == [16, 28, 14] && three.degradedPercent == [28, 14, 0])
        #expect(three.choice(for: 57) == (2, false) && three.choice(for: 58) == (0, true) && three.choice(for: 99) == (1, true))
        // One priority, 3 healthy and 5 degraded of 10: healths 42 and 70, so 42 % and the 58 % left.
        let one = PriorityLoad(available: [3], degraded: [5], total: [10], overprovisioningFactor: 140, panicThreshold: 50)
        #expect(one.percent == [42] && one.degradedPercent == [58] && one.panic == [false])
        // Only degraded hosts: all to them.
        let only = PriorityLoad(available: [0], degraded: [2], total: [2], overprovisioningFactor: 140, panicThreshold: 50)
        #expect(only.percent == [0] && only.degradedPercent == [100])
        // Degraded hosts count against panic: 1 healthy and 1 degraded of 10 is 20 %, below 50 %.
        let short = PriorityLoad(available: [1], degraded: [1], total: [10], overprovisioningFactor: 140, panicThreshold: 50)
        #expect(short.panic == [true] && short.percent == [100] && short.degradedPercent == [0])
        let enough = PriorityLoad(available: [3], degraded: [3], total: [10], overprovisioningFactor: 140, panicThreshold: 50)
        #expect(enough.panic == [false] && enough.percent == [50] && enough.degradedPercent == [50])
    }

    @Test func aDegradedHostTakesItsShareAndIsListedSo() throws {
        // Priority 0: .10 healthy, .11 degraded, and three hosts EDS gave as unhealthy: healths 28 and 28.
        var config = BootstrapConfig.Cluster(name: "svc", discovery: .endpoints([.init(try SocketAddress(ipAddress: "192.0.2.10", port: 80)),
                                                                                 .init(try SocketAddress(ipAddress: "192.0.2.11", port: 80), degraded: true)]))
        config.localities = [.init(name: "r/a/", priority: 0, unavailable: 3)]
        config.healthyPanicThreshold = 0
        let runtime = ClusterRuntime(config)
        #expect(runtime.priorityPlan?.allAvailable.percent == [50] && runtime.priorityPlan?.allAvailable.degradedPercent == [50])
        let split = try picks(runtime)
        #expect((1800...2200).contains(split["192.0.2.11"] ?? 0), "\(split)")
        #expect(runtime.hostLines.contains("svc::192.0.2.11:80::health_flags::/degraded_eds_health"))
        #expect(runtime.hostLines.contains("svc::192.0.2.10:80::health_flags::healthy"))
        // Beside a priority whose healthy hosts make 100 % (3 of 4 × 140 %), the degraded host takes nothing.
        var healthy = config
        healthy.discovery = .endpoints(try ["192.0.2.10", "192.0.2.12", "192.0.2.13"].map { .init(try SocketAddress(ipAddress: $0, port: 80)) }
                                       + [.init(try SocketAddress(ipAddress: "192.0.2.11", port: 80), degraded: true)])
        healthy.localities = [.init(name: "r/a/", priority: 0)]
        #expect(try picks(ClusterRuntime(healthy), 400)["192.0.2.11"] == nil)
    }

    @Test func localitiesTakeTheirTurnsInAFixedOrderByEffectiveWeight() throws {
        let localities: [BootstrapConfig.Cluster.Locality] = [.init(name: "r/a/", priority: 0, weight: 80), .init(name: "r/b/", priority: 0, weight: 20)]
        let first = try cluster(localities: localities, hosts: [1, 1], weighted: true)
        let second = try cluster(localities: localities, hosts: [1, 1], weighted: true)
        let original = try SocketAddress(ipAddress: "10.0.0.1", port: 80)
        let orderOf = { (runtime: ClusterRuntime) in try (0..<1000).map { _ in try runtime.endpoint(originalDestination: original).get().address.ipAddress ?? "" } }
        let order = try orderOf(first)
        // The same order for the same weights, and 80 % within a few turns over 1,000 (not a random draw's ±25).
        #expect(try orderOf(second) == order)
        let toA = order.filter { $0 == "192.0.2.10" }.count
        #expect((795...805).contains(toA), "\(toA)")
        // Spread out: never more than a short run of the light locality in the first hundred.
        #expect(!order.prefix(100).joined(separator: ",").contains(Array(repeating: "192.0.2.20", count: 3).joined(separator: ",")))
    }
}
