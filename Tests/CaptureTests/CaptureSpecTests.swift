import Capture
import Netfilter
import Testing

@Suite struct CaptureSpecTests {
    @Test func defaultsAreTheSidecarInjectorDefaults() throws {
        let spec = try CaptureSpec(options: [:])
        #expect(spec.outboundCapturePort == 15001)
        #expect(spec.inboundCapturePort == 15006)
    }
}
