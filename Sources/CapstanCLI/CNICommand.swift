import NodeAgent
#if canImport(Glibc)
import Glibc
#endif

/// `capstan cni`, also run as `capstan-cni` (the name a CNI configuration's `type` uses): the CNI
/// plugin. The runtime passes everything in `CNI_*` variables and on standard input, so like `init` it
/// skips the argument parser and starts as fast as the binary can.
enum CNICommand {
    static func main() -> Int32 {
        let response = CNIPlugin().run(environment: ProcessEnvironmentReader.all, stdin: readStandardInput())
        if !response.output.isEmpty { writeLine(response.output) }
        if response.exitStatus != 0 { writeLine("capstan-cni: \(response.output)", to: 2) }
        return response.exitStatus
    }

    private static func readStandardInput() -> String {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += chunk[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
