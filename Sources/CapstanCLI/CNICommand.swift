import Netfilter
import NodeAgent
#if canImport(Glibc)
import Glibc
#endif

/// `capstan cni`, also run as `capstan-cni` (the name a CNI configuration's `type` uses): the CNI
/// plugin. The runtime passes everything in `CNI_*` variables and on standard input, so like `init` it
/// skips the argument parser and starts as fast as the binary can.
enum CNICommand {
    static func main() -> Int32 {
        let response = CNIPlugin().run(environment: ProcessEnvironmentReader.all, stdin: SystemFile.read("/dev/stdin") ?? "")
        if !response.output.isEmpty { writeLine(response.output) }
        if response.exitStatus != 0 { writeLine("capstan-cni: \(response.output)", to: 2) }
        return response.exitStatus
    }
}
