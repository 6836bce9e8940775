@testable import Capture
import Foundation
import Netfilter
import Testing

/// The rendered table: what each flag family contributes, and the recorded spec.
@Suite struct RulesetRendererTests {
    func render(_ options: [CaptureOption: String] = [:]) throws -> Ruleset {
        RulesetRenderer.render(try CaptureSpec(options: options))
    }

    func rules(_ ruleset: Ruleset, _ chain: String) -> [String] {
        ruleset.chain(named: chain)?.rules.map(\.text) ?? []
    }

    @Test func redirectModeHasNatChainsOnly() throws {
        let ruleset = try render()
        #expect(ruleset.chains.compactMap(\.hook).map(\.type) == ["nat", "nat"])
        #expect(ruleset.chain(named: "mangle_prerouting") == nil)
        #expect(rules(ruleset, "inbound_redirect") == [
            "meta l4proto tcp counter packets 0 bytes 0 redirect to :15006 comment \"to the inbound capture port (-z)\"",
        ])
        #expect(rules(ruleset, "inbound").contains(
            "tcp dport { 15020, 15021, 15090 } counter packets 0 bytes 0 return comment \"-d: inbound ports excluded from capture\""))
    }

    @Test func everyRuleHasACounterAndAComment() throws {
        let ruleset = try render([.interceptionMode: "TPROXY", .redirectDNS: "true", .dnsServers: "10.0.0.10,fd00::a",
                                  .kubeVirtInterfaces: "kv0", .excludeInterfaces: "eth1", .dropInvalid: "true"])
        for chain in ruleset.chains {
            for rule in chain.rules {
                #expect(rule.text.contains(" counter packets 0 bytes 0") || rule.text.hasPrefix("counter packets 0 bytes 0"))
                #expect(!rule.comment.isEmpty && rule.comment.utf8.count <= 128)
            }
        }
    }

    @Test func outboundRuleOrderFollowsIstio() throws {
        let comments = try render([.outboundExcludePorts: "22", .outboundExcludeCIDRs: "10.96.0.0/12", .outboundPorts: "9000"])
            .chain(named: "outbound")!.rules.map(\.comment)
        let order = ["-o: outbound ports excluded from capture (TCP and UDP)",
                     "proxy's inbound passthrough to the application (IPv4)",
                     "proxy uid to its own pod address: through the inbound capture (IPv4)",
                     "application to itself over loopback: not captured",
                     "proxy uid: its own traffic is not captured",
                     "proxy gid: its own traffic is not captured",
                     "to localhost: not captured (IPv4)",
                     "-x 10.96.0.0/12: excluded from capture",
                     "-q: outbound ports captured",
                     "-i *: all other outbound TCP captured"]
        let positions = order.map { comments.firstIndex(of: $0) }
        #expect(!positions.contains(nil), "\(comments)")
        #expect(positions.compactMap { $0 } == positions.compactMap { $0 }.sorted())
    }

    @Test func tproxyModeMarksAndDiverts() throws {
        let ruleset = try render([.interceptionMode: "TPROXY", .tproxyMark: "77"])
        #expect(rules(ruleset, "inbound_tproxy").first ==
            "meta l4proto tcp ip daddr != 127.0.0.1 counter packets 0 bytes 0 tproxy ip to :15006 meta mark set 0x0000004d accept comment \"new inbound connection: to the inbound capture port (-z) unchanged (IPv4)\"")
        #expect(rules(ruleset, "mangle_output").last ==
            "meta l4proto tcp ct mark 0x0000004d counter packets 0 bytes 0 meta mark set ct mark comment \"replies on TPROXY connections: route back to the proxy\"")
        // Inbound goes through the mangle table, not nat, in TPROXY mode.
        #expect(!rules(ruleset, "prerouting").contains { $0.contains("jump inbound") })
    }

    @Test func inboundPortListAndNoInbound() throws {
        let listed = try render([.inboundPorts: "8080,80"])
        #expect(rules(listed, "inbound").contains {
            $0.hasPrefix("tcp dport { 80, 8080 } counter packets 0 bytes 0 jump inbound_redirect")
        })
        let none = try render([.inboundPorts: ""])
        #expect(none.chain(named: "inbound") == nil)
        #expect(!rules(none, "prerouting").contains { $0.contains("jump inbound") })
    }

    @Test func outboundCIDRListAndKubeVirtInterfaces() throws {
        let ruleset = try render([.outboundCIDRs: "10.0.0.0/8,fd00::/8", .kubeVirtInterfaces: "kv0"])
        #expect(rules(ruleset, "outbound").suffix(2) == [
            "ip daddr 10.0.0.0/8 counter packets 0 bytes 0 jump outbound_redirect comment \"-i 10.0.0.0/8: captured\"",
            "ip6 daddr fd00::/8 counter packets 0 bytes 0 jump outbound_redirect comment \"-i fd00::/8: captured\"",
        ])
        #expect(rules(ruleset, "prerouting").prefix(3).map { $0.components(separatedBy: " counter").first! } == [
            "iifname \"kv0\" ip daddr 10.0.0.0/8", "iifname \"kv0\" ip6 daddr fd00::/8", "iifname \"kv0\"",
        ])
    }

    @Test func dnsCaptureUsesConntrackZones() throws {
        let ruleset = try render([.redirectDNS: "true", .dnsServers: "10.0.0.10"])
        #expect(rules(ruleset, "outbound_dns") == [
            "meta l4proto { tcp, udp } th dport 53 ip daddr 10.0.0.10 counter packets 0 bytes 0 redirect to :15053 comment \"--redirect-dns: DNS to the resolv.conf nameservers to the DNS proxy (IPv4)\"",
        ])
        #expect(rules(ruleset, "raw_output").contains { $0.contains("udp dport 53 meta skuid 1337") && $0.contains("ct zone set 1") })
        // The proxy's own TCP DNS to its pod address is not redirected to itself.
        #expect(rules(ruleset, "outbound").contains { $0.contains("tcp dport != { 53, 15008 } meta skuid 1337") })
    }

    @Test func theSpecIsRecordedInChunksThatFitNftablesComments() throws {
        let spec = try CaptureSpec(options: [.outboundExcludeCIDRs: (1...40).map { "10.\($0).0.0/16" }.joined(separator: ",")])
        let record = RulesetRenderer.render(spec).chain(named: "capture_spec")!.rules
        #expect(record.count > 5)
        #expect(record.allSatisfy { $0.comment.utf8.count <= 128 })
        let listing = RulesetRenderer.render(spec).tableText
        let installed = InstalledTable(listing: listing)
        #expect(try RulesetRenderer.recoverSpec(fromComments: installed.chain(named: "capture_spec")!.rules.compactMap(\.comment)) == spec)
    }
}
