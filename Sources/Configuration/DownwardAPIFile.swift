/// A Kubernetes downward API file of labels or annotations (`metadata.labels` projected into a volume,
/// as Istio's injector mounts them at /etc/istio/pod): one `key="value"` line each, the value quoted
/// and escaped as Go's `%q` writes it.
public enum DownwardAPIFile {
    /// The entries of `text`; `path` names the file in errors, with the line.
    public static func parse(_ text: String, path: String) throws(ConfigError) -> [String: String] {
        var entries: [String: String] = [:]
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            let place = "\(path):\(index + 1)"
            guard let equals = line.firstIndex(of: "="), equals != line.startIndex else {
                throw ConfigError(path: place, message: "expected key=\"value\"")
            }
            let key = String(line[..<equals])
            guard let value = unquote(line[line.index(after: equals)...]) else {
                throw ConfigError(path: place, message: "the value of \(key) is not a quoted string")
            }
            entries[key] = value
        }
        return entries
    }

    /// A Go-quoted string's text: `"a\"b\\n"` → `a"b\n`; nil when it is not one.
    private static func unquote(_ quoted: Substring) -> String? {
        guard quoted.count >= 2, quoted.first == "\"", quoted.last == "\"" else { return nil }
        var result = ""
        var characters = quoted.dropFirst().dropLast()[...]
        while let character = characters.popFirst() {
            if character == "\"" { return nil }
            guard character == "\\" else { result.append(character); continue }
            switch characters.popFirst() {
            case "n": result.append("\n")
            case "t": result.append("\t")
            case "r": result.append("\r")
            case "\\": result.append("\\")
            case "\"": result.append("\"")
            case "u":
                // Go writes a non-printable rune as \uXXXX.
                guard characters.count >= 4, let code = UInt32(String(characters.prefix(4)), radix: 16),
                      let scalar = Unicode.Scalar(code) else { return nil }
                result.unicodeScalars.append(scalar)
                characters = characters.dropFirst(4)
            default: return nil  // \x, \U and octal escapes: not in the labels and annotations Istio reads
            }
        }
        return result
    }
}
