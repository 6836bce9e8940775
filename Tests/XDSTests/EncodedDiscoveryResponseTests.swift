import GRPCCore
import SwiftProtobuf
import Testing
@testable import XDS

/// The ADS server's hand-encoded responses are the bytes SwiftProtobuf would encode, and equal
/// subscriptions are one shared value.
@Suite struct EncodedDiscoveryResponseTests {
    /// Three clusters, the second with a name long enough for multi-byte lengths.
    let list: XDSResourceList = {
        let clusters = ["outbound|80||a.shop.svc.cluster.local", "outbound|8080|v1|" + String(repeating: "b", count: 300) + ".example",
                        "outbound|9000||c.example"].map { name -> (name: String, resource: Google_Protobuf_Any) in
            var cluster = Envoy_Config_Cluster_V3_Cluster()
            cluster.name = name
            cluster.connectTimeout = .init(seconds: 10)
            return (name, try! .packed(cluster, as: .cluster))
        }
        return XDSResourceList(clusters)
    }()

    func encoded(_ response: EncodedDiscoveryResponse) throws -> [UInt8] {
        try EncodedDiscoveryResponse.Serializer().serialize(response)
    }

    func expected(_ resources: [Google_Protobuf_Any], version: String = "7", nonce: String = "3") throws -> [UInt8] {
        var response = DiscoveryResponse()
        response.versionInfo = version
        response.typeURL = XDSResourceType.cluster.typeURL
        response.nonce = nonce
        response.resources = resources
        return try response.serializedBytes()
    }

    @Test func everyResourceEncodesAsSwiftProtobufDoes() throws {
        let bytes = try encoded(.init(versionInfo: "7", typeURL: XDSResourceType.cluster.typeURL, nonce: "3", list: list, selection: nil))
        #expect(bytes == (try expected(list.resources.map(\.resource))))
        let decoded = try DiscoveryResponse(serializedBytes: bytes)
        #expect(try decoded.resources.map { try Envoy_Config_Cluster_V3_Cluster(unpackingAny: $0).name } == list.resources.map(\.name))
    }

    @Test func aSelectionSendsThoseResourcesInItsOrder() throws {
        let bytes = try encoded(.init(versionInfo: "7", typeURL: XDSResourceType.cluster.typeURL, nonce: "3", list: list, selection: [0, 2]))
        #expect(bytes == (try expected([list.resources[0].resource, list.resources[2].resource])))
        let none = try encoded(.init(versionInfo: "", typeURL: XDSResourceType.cluster.typeURL, nonce: "12", list: list, selection: []))
        #expect(none == (try expected([], version: "", nonce: "12")))
    }

    @Test func equalSubscriptionsAreSharedAndSelectInTheListsOrder() {
        let subscriptions = ResourceSubscriptions()
        let first = subscriptions.subscription(to: ["outbound|9000||c.example", "unknown", "outbound|80||a.shop.svc.cluster.local"])
        let again = subscriptions.subscription(to: ["outbound|9000||c.example", "unknown", "outbound|80||a.shop.svc.cluster.local"])
        let other = subscriptions.subscription(to: ["outbound|9000||c.example"])
        #expect(first === again)
        #expect(first !== other)
        #expect(first.selection(in: list) == [0, 2])
        // Asked again about the same list (answered from the last selection) and about another one.
        #expect(first.selection(in: list) == [0, 2])
        #expect(first.selection(in: XDSResourceList(Array(list.resources.suffix(1)))) == [0])
        #expect(other.selection(in: list) == [2])
    }
}
