import Authorization
import Configuration
import Testing

@Suite struct CIDRRangeTests {
    @Test func ipv4RangesMaskTheirAddressAndMatchMappedAddresses() throws {
        let range = try CIDRRange(address: "10.1.2.3", length: 8, path: "r")
        #expect(range.description == "10.0.0.0/8")
        #expect(range.contains(try #require(IPAddress("10.200.0.1"))))
        #expect(!range.contains(try #require(IPAddress("11.0.0.1"))))
        // An IPv4-mapped IPv6 address is the IPv4 address.
        #expect(range.contains(try #require(IPAddress("::ffff:10.9.9.9"))))
        #expect(!range.contains(try #require(IPAddress("fd00::a09:909"))))
    }

    @Test func zeroLengthRangesMatchTheirFamilyOnly() throws {
        let v4 = try CIDRRange(address: "0.0.0.0", length: 0, path: "r")
        let v6 = try CIDRRange(address: "::", length: 0, path: "r")
        #expect(v4.contains(try #require(IPAddress("192.0.2.1"))))
        #expect(!v4.contains(try #require(IPAddress("2001:db8::1"))))
        #expect(v6.contains(try #require(IPAddress("2001:db8::1"))))
    }

    @Test func ipv6PrefixesCrossTheHalves() throws {
        let range = try CIDRRange(address: "2001:db8:ffff:ffff:8000::", length: 65, path: "r")
        #expect(range.contains(try #require(IPAddress("2001:db8:ffff:ffff:ffff::1"))))
        #expect(!range.contains(try #require(IPAddress("2001:db8:ffff:ffff:7fff::1"))))
        #expect(try CIDRRange(address: "fd00::1", length: nil, path: "r").contains(try #require(IPAddress("fd00::1"))))
    }

    @Test func badRangesAreRefusedByName() {
        #expect(throws: ConfigError(path: "r.address_prefix", message: "\"10.0.0\" is not an IP address")) {
            try CIDRRange(address: "10.0.0", length: 8, path: "r")
        }
        #expect(throws: ConfigError(path: "r.prefix_len", message: "33 is out of range 0-32 for 10.0.0.0")) {
            try CIDRRange(address: "10.0.0.0", length: 33, path: "r")
        }
    }
}
