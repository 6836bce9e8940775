/// The whole process environment, for sources that read several variables.
public enum ProcessEnvironmentReader {
    public static var all: [String: String] {
        var environment: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let item = String(cString: pointer)
            if let equals = item.firstIndex(of: "=") {
                environment[String(item[..<equals])] = String(item[item.index(after: equals)...])
            }
            entry += 1
        }
        return environment
    }
}

#if canImport(Glibc)
import Glibc
#endif
