import Capture
import Foundation
import Netfilter
import Testing

/// Reading the kernel's listing back, and comparing it with the rendered table.
@Suite struct InstalledTableTests {
    let ruleset = RulesetRenderer.render(CaptureSpec())

    @Test func listingParsesIntoChainsRulesAndCounters() {
        let listing = ruleset.tableText.replacingOccurrences(
            of: "counter packets 0 bytes 0 jump outbound comment",
            with: "counter packets 12 bytes 720 jump outbound comment")
        let table = InstalledTable(listing: listing)
        #expect(table.chains.map(\.name) == ruleset.chains.map(\.name))
        let output = table.chain(named: "output")!
        #expect(output.hookText == "type nat hook output priority -100; policy accept;")
        #expect(output.rules.first?.packets == 12)
        #expect(output.rules.first?.bytes == 720)
        // Counters are zeroed in the text, so the rule compares with the rendered one.
        #expect(output.rules.first?.text == ruleset.chain(named: "output")!.rules.first?.text)
        #expect(output.rules.first?.comment == "locally originated traffic: outbound capture")
    }

    @Test func identicalListingHasNoDrift() {
        let drift = CaptureDrift(expected: ruleset, installed: InstalledTable(listing: ruleset.tableText),
                                 expectedRouting: .none, installedRouting: .none)
        #expect(drift.isClean)
    }

    @Test func driftNamesMissingExtraAndChangedRules() {
        var listing = ruleset.tableText
        let outboundRedirect = ruleset.chain(named: "outbound_redirect")!.rules[0].text
        listing = listing.replacingOccurrences(of: outboundRedirect, with: outboundRedirect.replacingOccurrences(of: ":15001", with: ":15002"))
        let localhost = ruleset.chain(named: "outbound")!.rules.first { $0.comment.hasPrefix("to localhost") }!.text
        listing = listing.replacingOccurrences(of: "\t\t\(localhost)\n", with: "")
        listing = listing.replacingOccurrences(of: "\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n",
                                               with: "\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tcounter packets 3 bytes 9 accept\n")
        let drift = CaptureDrift(expected: ruleset, installed: InstalledTable(listing: listing),
                                 expectedRouting: PolicyRoutingPlan(rules: [FirewallMarkRule(family: .ipv4, mark: 1337, table: 133)], routes: []),
                                 installedRouting: .none)
        #expect(drift.differences.count == 4, "\(drift.differences)")
        #expect(drift.differences.contains(.changedRule(chain: "outbound_redirect", expected: outboundRedirect,
                                                        found: outboundRedirect.replacingOccurrences(of: ":15001", with: ":15002"))))
        #expect(drift.differences.contains(.missingRule(chain: "outbound", rule: localhost)))
        #expect(drift.differences.contains(.extraRule(chain: "output", rule: "counter packets 0 bytes 0 accept")))
        #expect(drift.differences.contains(.missingRoutingRule(FirewallMarkRule(family: .ipv4, mark: 1337, table: 133))))
    }

    @Test func missingAndForeignChains() {
        let listing = ruleset.tableText
            .replacingOccurrences(of: "\tchain outbound_redirect {", with: "\tchain renamed_by_hand {")
        let drift = CaptureDrift(expected: ruleset, installed: InstalledTable(listing: listing), expectedRouting: .none, installedRouting: .none)
        #expect(drift.differences.contains(.missingChain("outbound_redirect")))
        #expect(drift.differences.contains(.extraChain("renamed_by_hand")))
    }

    @Test func traversalOrderFollowsHooksThenJumps() {
        let names = InstalledTable(listing: ruleset.tableText).chainsInTraversalOrder.map(\.name)
        #expect(names == ["prerouting", "inbound", "inbound_redirect", "output", "outbound", "outbound_redirect", "capture_spec"])
    }
}
