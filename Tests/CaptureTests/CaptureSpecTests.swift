import Capture
import Netfilter
import Testing

/// Parsing and validating istio-iptables' flags into a ``CaptureSpec``.
@Suite struct CaptureSpecTests {
    @Test func defaultsAreTheSidecarInjectorDefaults() throws {
        let spec = try CaptureSpec(options: [:])
        #expect(spec.outboundCapturePort == 15001)
        #expect(spec.inboundCapturePort == 15006)
        #expect(spec.inboundTunnelPort == 15008)
        #expect(spec.proxyUIDs == [1337])
        #expect(spec.proxyGIDs == [1337])
        #expect(spec.interceptionMode == .redirect)
        #expect(spec.inboundPorts == .all)
        #expect(spec.inboundExcludePorts == [15020, 15021, 15090])
        #expect(spec.outboundDestinations == .all)
        #expect(spec.dns == .off)
    }

    @Test func gidDefaultsToTheUID() throws {
        let spec = try CaptureSpec(options: [.proxyUID: "2000,1999"])
        #expect(spec.proxyUIDs == [1999, 2000])
        #expect(spec.proxyGIDs == [1999, 2000])
    }

    @Test func emptyListsTurnCaptureOff() throws {
        let spec = try CaptureSpec(options: [.inboundPorts: "", .outboundCIDRs: ""])
        #expect(spec.inboundPorts == .only([]))
        #expect(spec.outboundDestinations == .only([]))
        #expect(!spec.capturesInbound)
    }

    @Test func listsAreTrimmedSortedAndDeduplicated() throws {
        let spec = try CaptureSpec(options: [
            .outboundExcludePorts: " 443, 22,,443 ",
            .outboundExcludeCIDRs: "10.1.2.3/8, 2001:db8::1/32,192.0.2.7",
            .excludeInterfaces: "eth1,eth0,eth1",
            .interceptionMode: "tproxy",
        ])
        #expect(spec.outboundExcludePorts == [22, 443])
        // Host bits are cleared, a bare address is a host prefix.
        #expect(spec.outboundExcludeCIDRs.map(\.cidrText) == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"])
        #expect(spec.excludeInterfaces == ["eth0", "eth1"])
        #expect(spec.interceptionMode == .tproxy)
    }

    @Test func dnsCaptureNeedsRedirectDNS() throws {
        #expect(try CaptureSpec(options: [.captureAllDNS: "true"]).dns == .off)
        #expect(try CaptureSpec(options: [.redirectDNS: "true", .captureAllDNS: "true"]).dns == .all)
        let servers = try CaptureSpec(options: [.redirectDNS: "1", .dnsServers: "10.0.0.10,fd00::a"])
        #expect(servers.dns == .nameservers([IPAddress("10.0.0.10")!, IPAddress("fd00::a")!]))
        // No nameserver to capture: DNS capture is off, as in istio-iptables.
        #expect(try CaptureSpec(options: [.redirectDNS: "true", .dnsServers: ""]).dns == .off)
    }

    static let refusals: [(CaptureOption, String, String)] = [
        (.outboundCIDRs, "10.0.0.0/33", "prefix length must be 0-32 for IPv4"),
        (.outboundCIDRs, "2001:db8::/129", "prefix length must be 0-128 for IPv6"),
        (.outboundExcludeCIDRs, "10.0.0/8", "\"10.0.0\" is not an IPv4 or IPv6 address"),
        (.outboundExcludeCIDRs, "*", "\"*\" is not allowed here"),
        (.outboundCIDRs, "*,10.0.0.0/8", "\"*\" cannot be combined with CIDRs"),
        (.envoyPort, "0", "a port must be 1-65535"),
        (.envoyPort, "65536", "a port must be 1-65535"),
        (.inboundCapturePort, "-1", "not a number"),
        (.inboundPorts, "80,http", "not a number"),
        (.proxyUID, "istio-proxy", "not a number"),
        (.proxyUID, "4294967295", "an id must be 0-4294967294"),
        (.proxyGID, "", "at least one id is required"),
        (.interceptionMode, "MAGIC", "must be REDIRECT or TPROXY"),
        (.tproxyMark, "0", "a mark must be 1-4294967295"),
        (.tproxyMark, "1338", "1338 marks the proxy's connections to its own pod"),
        (.tproxyRouteTable, "255", "tables 253-255 are the kernel's"),
        (.excludeInterfaces, "eth0;rm", "not a valid interface name"),
        (.kubeVirtInterfaces, "a-very-long-interface-name", "at most 15 characters"),
        (.redirectDNS, "perhaps", "must be true or false"),
        (.dnsServers, "dns.local", "not an IPv4 or IPv6 address"),
    ]

    @Test(arguments: refusals.indices)
    func badValuesAreRefusedWithTheFlagAndValueNamed(index: Int) {
        let (option, value, reason) = Self.refusals[index]
        var options: [CaptureOption: String] = option == .dnsServers ? [.redirectDNS: "true"] : [:]
        options[option] = value
        #expect {
            try CaptureSpec(options: options)
        } throws: { error in
            guard let error = error as? CaptureSpecError else { return false }
            return error.option == option.displayName && error.description.contains(reason)
                && error.description.contains("\"")
        }
    }

    @Test func canonicalArgumentsRoundTrip() throws {
        let specs = [
            try CaptureSpec(options: [:]),
            try CaptureSpec(options: [.interceptionMode: "TPROXY", .tproxyMark: "77", .tproxyRouteTable: "1000",
                                      .inboundPorts: "80,8080", .outboundCIDRs: "10.0.0.0/8,fd00::/8",
                                      .outboundExcludeCIDRs: "10.96.0.0/12", .outboundPorts: "9000",
                                      .outboundExcludePorts: "22", .kubeVirtInterfaces: "kv0",
                                      .excludeInterfaces: "eth9", .redirectDNS: "true", .dnsServers: "10.0.0.10",
                                      .dropInvalid: "true", .proxyUID: "1,2", .proxyGID: "3"]),
            try CaptureSpec(options: [.inboundPorts: "", .outboundCIDRs: "", .redirectDNS: "true", .captureAllDNS: "true"]),
        ]
        for spec in specs {
            #expect(try CaptureSpec(canonicalArguments: spec.canonicalArguments) == spec)
            #expect(try CaptureSpec(canonicalArguments: spec.recordedArguments) == spec)
        }
        #expect(try CaptureSpec(options: [:]).recordedArguments.joined(separator: " ")
                == "-p=15001 -z=15006 -e=15008 -u=1337 -g=1337 -m=REDIRECT -t=1337 -r=133 -b=* -d=15020,15021,15090 -i=*")
    }

    @Test func environmentNamesAreTheLongNamesInUpperSnakeCase() {
        #expect(CaptureOption.envoyPort.environmentName == "ENVOY_PORT")
        #expect(CaptureOption.outboundExcludePorts.environmentName == "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE")
        #expect(CaptureOption.outboundCIDRs.displayName == "-i/--istio-service-cidr")
        #expect(CaptureOption.redirectDNS.displayName == "--redirect-dns")
    }

    @Test func resolvConfNameservers() {
        let text = """
            # generated
            search default.svc.cluster.local
            nameserver 10.96.0.10
            nameserver fe80::1%eth0
            nameserver not-an-address
            options ndots:5
            """
        #expect(ResolvConf.nameservers(in: text) == [IPAddress("10.96.0.10")!, IPAddress("fe80::1")!])
    }
}
