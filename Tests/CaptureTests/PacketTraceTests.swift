import Capture
import Netfilter
import Testing

/// Target parsing for `--trace` and address types.
@Suite struct TraceTargetTests {
    @Test func parsesTransportAddressAndPort() throws {
        let v4 = try #require(TraceQuery.parseTarget("tcp:10.0.0.5:8080"))
        #expect(v4.0 == .tcp && v4.1 == IPAddress("10.0.0.5")! && v4.2 == 8080)
        let v6 = try #require(TraceQuery.parseTarget("udp:[2001:db8::1]:53"))
        #expect(v6.0 == .udp && v6.1 == IPAddress("2001:db8::1")! && v6.2 == 53)
        #expect(TraceQuery.parseTarget("tcp:2001:db8::1:443")?.1 == IPAddress("2001:db8::1")!)
        for bad in ["sctp:10.0.0.1:80", "tcp:10.0.0.1", "tcp:10.0.0.1:0", "tcp:host:80", "tcp:10.0.0.1:70000"] {
            #expect(TraceQuery.parseTarget(bad) == nil, "\(bad)")
        }
    }

    @Test func prefixesNormalizeAndContain() throws {
        let prefix = try #require(IPPrefix("10.1.2.3/8"))
        #expect(prefix.description == "10.0.0.0/8")
        #expect(prefix.contains(IPAddress("10.200.0.1")!))
        #expect(!prefix.contains(IPAddress("11.0.0.1")!))
        #expect(!prefix.contains(IPAddress("::ffff:10.0.0.1")!))
        #expect(IPPrefix("2001:db8::1")?.description == "2001:db8::1")
        #expect(IPPrefix("2001:db8::/33")!.contains(IPAddress("2001:db8:7fff::1")!))
        #expect(!IPPrefix("2001:db8::/33")!.contains(IPAddress("2001:db8:8000::1")!))
        #expect(IPPrefix("10.0.0.0/") == nil)
        #expect(IPPrefix("10.0.0.0/8/8") == nil)
    }
}
