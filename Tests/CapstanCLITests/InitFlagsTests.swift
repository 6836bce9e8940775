@testable import CapstanCLI
import Capture
import Testing

/// `capstan init` reads command lines the way istio-iptables (pflag) does.
@Suite struct InitFlagsTests {
    @Test func shortLongInlineAndAttachedValues() throws {
        let flags = try InitFlags(arguments: ["-p", "15001", "--inbound-capture-port=15006", "-e15008", "-u=1337",
                                              "-i", "*", "-x", "", "--redirect-dns", "--capture-all-dns=false", "-n"])
        #expect(flags.options[.envoyPort] == "15001")
        #expect(flags.options[.inboundCapturePort] == "15006")
        #expect(flags.options[.inboundTunnelPort] == "15008")
        #expect(flags.options[.proxyUID] == "1337")
        #expect(flags.options[.outboundCIDRs] == "*")
        #expect(flags.options[.outboundExcludeCIDRs] == "")
        #expect(flags.options[.redirectDNS] == "true")
        #expect(flags.options[.captureAllDNS] == "false")
        #expect(flags.settings[.dryRun] == "true")
    }

    @Test func theIstioInjectorsCommandLineIsAccepted() throws {
        // As the sidecar injector writes istio-init's arguments.
        let flags = try InitFlags(arguments: ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
                                              "-x", "", "-b", "*", "-d", "15090,15021,15020",
                                              "--log_output_level=default:info"])
        #expect(flags.ignored == ["log_output_level"])
        let spec = try CaptureSpec(options: flags.options)
        #expect(spec == CaptureSpec())
    }

    @Test func refusalsNameTheArgument() {
        for (arguments, mention) in [(["--bogus"], "\"--bogus\""), (["-p"], "-p"), (["stray"], "\"stray\""),
                                     (["-Q", "1"], "\"-Q\""), (["--", "x"], "\"x\"")] {
            #expect {
                try InitFlags(arguments: arguments)
            } throws: { error in
                "\(error)".contains(mention)
            }
        }
    }

    @Test func helpListsEveryFlagWithItsEnvironmentVariable() throws {
        for option in CaptureOption.allCases {
            #expect(InitFlags.helpText.contains(option.displayName))
            #expect(InitFlags.helpText.contains("[\(option.environmentName)]"))
        }
        #expect(try InitFlags(arguments: ["--help"]).help)
    }
}
