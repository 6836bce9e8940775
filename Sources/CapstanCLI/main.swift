import Capture
var opts: [CaptureOption: String] = [:]
for a in CommandLine.arguments.dropFirst() {
  let p = a.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
  opts[CaptureOption(rawValue: String(p[0]))!] = String(p[1])
}
do { let spec = try CaptureSpec(options: opts); print(RulesetRenderer.render(spec).replacementScript, terminator: "") } catch { print(error) }
