import HTTPTypes
import Routing
import Testing

/// Route hash policies: what a request hashes to, as Envoy combines them, and the cookie made for a
/// client that has none.
struct HashPolicyTests {
    @Test func xxHash64MatchesTheReferenceVectors() {
        #expect(XXHash64.hash("") == 0xEF46_DB37_51D8_E999)
        #expect(XXHash64.hash("a") == 0xD24E_C4F1_A98C_6E5B)
        #expect(XXHash64.hash("abc") == 0x44BC_2CF5_AD77_0999)
        // Over 32 bytes: the four-lane path.
        #expect(XXHash64.hash("Nobody inspects the spammish repetition") == 0xFBCE_A83C_8A37_8BF1)
    }

    func policies(_ json: String) throws -> [HashPolicy] {
        let table = try routeTable(oneHost(routes: #"{"match": {"prefix": "/"}, "route": {"cluster": "c", "hash_policy": [\#(json)]}}"#))
        guard case .forward(let forwarding)? = table.route(request(), randomValue: 0)?.action else { return [] }
        return forwarding.hashPolicies
    }

    @Test func aHeaderHashesTheSameForTheSameUserAndNothingWithoutIt() throws {
        let byUser = try policies(#"{"header": {"header_name": "end-user"}}"#)
        func hash(_ headers: [(String, String)]) -> UInt64? {
            HashPolicy.hash(byUser, request: request(headers: headers), sourceIP: "10.0.0.1", sourceAddress: "10.0.0.1:4000").value
        }
        #expect(hash([("end-user", "jason")]) == XXHash64.hash("jason"))
        #expect(hash([("end-user", "jason")]) != hash([("end-user", "kate")]))
        #expect(hash([]) == nil)
    }

    @Test func policiesCombineUntilATerminalOneFindsAValue() throws {
        let both = try policies(#"{"header": {"header_name": "x-a"}, "terminal": true}, {"connection_properties": {"source_ip": true}}"#)
        let withHeader = HashPolicy.hash(both, request: request(headers: [("x-a", "1")]), sourceIP: "10.0.0.1", sourceAddress: nil)
        #expect(withHeader.value == XXHash64.hash("1"), "terminal: the source IP is not mixed in")
        let withoutHeader = HashPolicy.hash(both, request: request(), sourceIP: "10.0.0.1", sourceAddress: nil)
        #expect(withoutHeader.value == XXHash64.hash("10.0.0.1"))
        let mixed = try policies(#"{"header": {"header_name": "x-a"}}, {"query_parameter": {"name": "u"}}"#)
        let a = XXHash64.hash("1"), u = XXHash64.hash("7")
        #expect(HashPolicy.hash(mixed, request: request("h", "/p?x=2&u=7", headers: [("x-a", "1")]), sourceIP: nil, sourceAddress: nil).value
                == ((a << 1) | (a >> 63)) ^ u)
    }

    @Test func aMissingCookieWithATTLIsMadeFromTheClientsAddress() throws {
        let cookie = try policies(#"{"cookie": {"name": "user", "ttl": "3600s", "path": "/"}}"#)
        let made = HashPolicy.hash(cookie, request: request(), sourceIP: "10.0.0.1", sourceAddress: "10.0.0.1:4000")
        let setCookie = try #require(made.setCookie)
        #expect(setCookie.hasPrefix("user=\""))
        #expect(setCookie.hasSuffix("\"; Max-Age=3600; Path=/; HttpOnly"))
        // The client sends it back: the same hash, and nothing more to set.
        let value = String(setCookie.dropFirst(6).prefix(16))
        let returned = HashPolicy.hash(cookie, request: request(headers: [("cookie", "a=b; user=\"\(value)\"")]), sourceIP: "10.0.0.9",
                                       sourceAddress: "10.0.0.9:5000")
        #expect(returned.value == made.value)
        #expect(returned.setCookie == nil)
        let noTTL = try policies(#"{"cookie": {"name": "user"}}"#)
        #expect(HashPolicy.hash(noTTL, request: request(), sourceIP: "10.0.0.1", sourceAddress: "10.0.0.1:4000").value == nil)
    }

    @Test(arguments: [
        (#"{"header": {"header_name": "bad name"}}"#, "hash_policy[0].header.header_name"),
        (#"{"cookie": {}}"#, "hash_policy[0].cookie.name"),
        (#"{"connection_properties": {}}"#, "hash_policy[0].connection_properties.source_ip"),
        (#"{"terminal": true}"#, "hash_policy[0]"),
    ])
    func refusalsNameTheField(policy: String, field: String) throws {
        let error = try refusal(oneHost(routes: #"{"match": {"prefix": "/"}, "route": {"cluster": "c", "hash_policy": [\#(policy)]}}"#))
        #expect(error?.path.hasSuffix(field) == true, "\(String(describing: error))")
    }
}
