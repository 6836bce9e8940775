import Configuration
import Testing

/// Kubernetes downward API files of labels and annotations, as the kubelet writes them.
@Suite struct DownwardAPIFileTests {
    @Test func readsQuotedAndEscapedValues() throws {
        let text = #"""
        app="reviews"
        empty=""
        sidecar.istio.io/status="{\"containers\":[\"istio-proxy\"]}"
        multi="a\nb\tc\\d"
        nbsp="x\u00a0y"
        """#
        let entries = try DownwardAPIFile.parse(text + "\n", path: "labels")
        #expect(entries == ["app": "reviews", "empty": "", "sidecar.istio.io/status": #"{"containers":["istio-proxy"]}"#,
                            "multi": "a\nb\tc\\d", "nbsp": "x\u{a0}y"])
    }

    @Test(arguments: [("app=reviews", "labels:1"), ("=\"x\"", "labels:1"), ("a=\"x\"\nb=\"unterminated", "labels:2"),
                      ("a=\"x\\q\"", "labels:1")])
    func refusesWhatIsNotKeyEqualsQuotedValue(text: String, place: String) {
        let error = #expect(throws: ConfigError.self) { try DownwardAPIFile.parse(text, path: "labels") }
        #expect(error?.path == place)
    }
}
