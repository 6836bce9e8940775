import CapstanTestSupport
import Foundation
import Netfilter
import Testing

/// Re-runs, replacement, cleanup, refused input and `--run-validation`.
@Suite struct InitLifecycleTests {
    let any = IPAddress("::")!

    @Test func rerunWithTheSameFlagsChangesNothingAndOtherFlagsReplace() throws {
        try withSandbox { sandbox in
            try sandbox.initialize(["-m", "TPROXY"])
            let probe = ConnectionProbe()
            try probe.listenLikeTheProxy(in: sandbox.pod, tproxy: true)
            #expect(probe.connect(to: SocketAddress(Sandbox.remoteV4, 80), from: sandbox.pod).listener == "outbound")
            let before = try sandbox.podRuleset()

            let again = try sandbox.capstan(["init", "-m", "TPROXY", "--network-namespace", sandbox.pod.path!])
            #expect(again.status == 0)
            #expect(again.standardOutput.contains("unchanged"), "\(again)")
            // Same rules, counters included: nothing was rewritten.
            #expect(try sandbox.podRuleset() == before)

            try sandbox.initialize(["-m", "REDIRECT", "-i", "198.51.100.0/24"])
            let after = try sandbox.podRuleset()
            #expect(!after.contains("mangle_prerouting"))
            #expect(after.contains("ip daddr 198.51.100.0/24"))
            #expect(!after.contains("jump outbound_redirect comment \"-i *"))
        }
    }

    @Test func cleanupRemovesTableAndRouting() throws {
        try withSandbox { sandbox in
            try sandbox.initialize(["-m", "TPROXY"])
            let cleanup = try sandbox.capstan(["init", "--cleanup-only", "--network-namespace", sandbox.pod.path!])
            #expect(cleanup.status == 0, "\(cleanup)")
            #expect(!(try sandbox.podRuleset()).contains("capstan"))
            let marks = try sandbox.pod.run {
                try RoutingSocket().firewallMarkRules(family: .ipv4) + RoutingSocket().firewallMarkRules(family: .ipv6)
            }
            #expect(marks.isEmpty)
            let routes = try sandbox.pod.run {
                try RoutingSocket().localDefaultRoutes(family: .ipv4, table: 133) + RoutingSocket().localDefaultRoutes(family: .ipv6, table: 133)
            }
            #expect(routes.isEmpty)
            let status = try sandbox.capstan(["status", "--network-namespace", sandbox.pod.path!])
            #expect(status.status == 1)
            #expect(status.standardOutput.contains("not installed"))
            // A second cleanup has nothing to do and still succeeds.
            #expect(try sandbox.capstan(["init", "--cleanup-only", "--network-namespace", sandbox.pod.path!]).status == 0)
        }
    }

    static let badInputs: [(arguments: [String], environment: [String: String], mentions: [String])] = [
        (["-i", "10.0.0.0/33"], [:], ["-i/--istio-service-cidr", "10.0.0.0/33"]),
        (["-x", "300.1.2.3/8"], [:], ["-x/--istio-service-exclude-cidr", "300.1.2.3"]),
        (["-p", "0"], [:], ["-p/--envoy-port", "\"0\""]),
        (["-z", "65536"], [:], ["-z/--inbound-capture-port", "65536"]),
        (["-m", "MAGIC"], [:], ["-m/--istio-inbound-interception-mode", "MAGIC"]),
        (["-u", "proxy"], [:], ["-u/--proxy-uid", "proxy"]),
        (["-b", "80,http"], [:], ["-b/--istio-inbound-ports", "http"]),
        (["-c", "eth/0"], [:], ["-c/--istio-exclude-interfaces", "eth/0"]),
        (["-r", "254"], [:], ["-r/--istio-inbound-tproxy-route-table", "254"]),
        (["-t", "1338"], [:], ["-t/--istio-inbound-tproxy-mark", "1338"]),
        (["-i", "*,10.0.0.0/8"], [:], ["-i/--istio-service-cidr", "*,10.0.0.0/8"]),
        (["--dns-servers", "resolver"], ["REDIRECT_DNS": "true"], ["--dns-servers", "resolver"]),
        ([], ["ENVOY_PORT": "fifteen"], ["-p/--envoy-port", "fifteen"]),
        ([], ["REDIRECT_DNS": "maybe"], ["--redirect-dns", "maybe"]),
        (["--probe-timeout", "soon"], [:], ["--probe-timeout", "soon"]),
        (["--no-such-flag"], [:], ["--no-such-flag"]),
    ]

    @Test(arguments: badInputs.indices)
    func badInputIsRefusedAndLeavesTheKernelAsItWas(index: Int) throws {
        let bad = Self.badInputs[index]
        try withSandbox { sandbox in
            try sandbox.initialize(["-m", "TPROXY"])
            let before = try sandbox.podRuleset()
            let result = try sandbox.capstan(["init"] + bad.arguments + ["--network-namespace", sandbox.pod.path!],
                                             environment: bad.environment)
            #expect(result.status == 2, "\(bad.arguments) \(result)")
            for word in bad.mentions {
                #expect(result.standardError.contains(word), "stderr should name \(word): \(result.standardError)")
            }
            #expect(try sandbox.podRuleset() == before)
            #expect(try sandbox.capstan(["status", "--network-namespace", sandbox.pod.path!]).status == 0)
        }
    }

    @Test func missingOrWrongNamespaceIsAUsageError() throws {
        let result = try ChildProcess.run(Sandbox.capstanExecutable, ["init", "--network-namespace", "/run/netns/capstan-no-such-namespace"])
        #expect(result.status == 2)
        #expect(result.standardError.contains("/run/netns/capstan-no-such-namespace"))
        let notANamespace = try ChildProcess.run(Sandbox.capstanExecutable, ["status", "--network-namespace", "/etc/passwd"])
        #expect(notANamespace.status == 2)
        #expect(notANamespace.standardError.contains("\"/etc/passwd\" for --network-namespace: not a network namespace"))
    }

    @Test func dryRunPrintsTheScriptAndTouchesNothing() throws {
        try withSandbox { sandbox in
            let before = try sandbox.podRuleset()
            let result = try sandbox.capstan(["init", "-n", "-m", "TPROXY", "--network-namespace", sandbox.pod.path!])
            #expect(result.status == 0)
            #expect(result.standardOutput.contains("table inet capstan {"))
            #expect(result.standardOutput.contains("tproxy ip to :15006"))
            #expect(result.standardOutput.contains("ip -6 rule add fwmark 1337 lookup 133"))
            #expect(try sandbox.podRuleset() == before)
        }
    }

    @Test func validationPassesWithCaptureAndFailsWithout() throws {
        try withSandbox { sandbox in
            let path = sandbox.pod.path!
            let without = try sandbox.capstan(["init", "--skip-rule-apply", "--run-validation", "--probe-timeout", "1s",
                                               "--network-namespace", path])
            #expect(without.status == 126, "\(without)")
            #expect(without.standardError.contains("validation failed"))

            let with = try sandbox.capstan(["init", "--run-validation", "--network-namespace", path])
            #expect(with.status == 0, "\(with)")
            #expect(with.standardOutput.contains("validation passed"))

            // A validation that runs as another uid than the proxy's is not captured: it must fail.
            try sandbox.initialize(["-u", "4242"])
            let wrongUID = try sandbox.capstan(["init", "--skip-rule-apply", "--run-validation", "-u", "1337",
                                                "--probe-timeout", "1s", "--network-namespace", path])
            #expect(wrongUID.status == 126, "\(wrongUID)")
        }
    }
}
