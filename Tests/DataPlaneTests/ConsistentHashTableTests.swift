@testable import DataPlane
import NIOCore
import Routing
import Testing

/// RING_HASH and MAGLEV: a user's hash keeps its endpoint, users spread by weight, and a change of
/// endpoints moves few of them.
@Suite struct ConsistentHashTableTests {
    static let users = (0..<1000).map { XXHash64.hash("user-\($0)") }

    func cluster(_ policy: BootstrapConfig.Cluster.LoadBalancing, _ ips: [String], weights: [Int]? = nil) throws -> ClusterRuntime {
        let endpoints = try ips.enumerated().map { index, ip in
            BootstrapConfig.Cluster.Endpoint(try SocketAddress(ipAddress: ip, port: 8080), weight: weights?[index] ?? 1)
        }
        return ClusterRuntime(.init(name: "hashed", discovery: .endpoints(endpoints), loadBalancing: policy))
    }

    func picks(_ cluster: ClusterRuntime) throws -> [String] {
        let original = try SocketAddress(ipAddress: "10.0.0.1", port: 80)
        return try Self.users.map { try cluster.endpoint(originalDestination: original, hash: $0).get().address.ipAddress ?? "" }
    }

    @Test(arguments: [BootstrapConfig.Cluster.LoadBalancing.ringHash(minimumSize: 1024, maximumSize: 8_388_608), .maglev(tableSize: 65_537)])
    func usersStayAndSpreadAndFewMoveWhenAnEndpointGoes(policy: BootstrapConfig.Cluster.LoadBalancing) throws {
        let three = ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
        let before = try picks(try cluster(policy, three))
        #expect(try picks(try cluster(policy, three)) == before, "the same endpoints, the same choices")
        for ip in three {
            #expect((233...433).contains(before.filter { $0 == ip }.count), "a third of the users each, roughly: \(ip)")
        }
        // Without the last endpoint, its users move; of the others' users, most stay (a ring's points
        // per endpoint grow as endpoints go, as Envoy sizes it, so some do move; Maglev moves few).
        let after = try picks(try cluster(policy, Array(three.dropLast())))
        let stayed = zip(before, after).filter { $0.0 != "192.0.2.12" }
        let kept = stayed.filter { $0.0 == $0.1 }.count
        #expect(kept * 10 >= stayed.count * 7, "\(kept) of \(stayed.count) kept their endpoint")
        #expect(zip(before, after).allSatisfy { $0.0 != "192.0.2.12" || $0.1 != "192.0.2.12" })
        // Weights: three to one.
        let weighted = try picks(try cluster(policy, Array(three.dropLast()), weights: [3, 1]))
        #expect((650...850).contains(weighted.filter { $0 == "192.0.2.10" }.count))
    }

    @Test func withoutAHashTheChoiceIsRandom() throws {
        let hashed = try cluster(.maglev(tableSize: 65_537), ["192.0.2.10", "192.0.2.11"])
        let original = try SocketAddress(ipAddress: "10.0.0.1", port: 80)
        let seen = Set(try (0..<100).map { _ in try hashed.endpoint(originalDestination: original).get().address })
        #expect(seen.count == 2)
    }
}
