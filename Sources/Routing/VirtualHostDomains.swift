import Configuration

/// Which virtual host serves an authority, as Envoy chooses: an exact domain; else the longest matching
/// `*suffix` wildcard (`*.foo.com`, `*-bar.foo.com`; the `*` never matches nothing); else the longest
/// matching `prefix*` wildcard; else the virtual host of `*`. Hosts compare case-insensitively. The port
/// is part of the host unless the configuration sets `ignore_port_in_host_matching`. Built once: a
/// dictionary of exact domains and wildcard lists sorted longest first.
struct VirtualHostDomains: Sendable {
    /// Keyed by substrings so that a request's authority is looked up without being copied.
    private var exact: [Substring: Int] = [:]
    /// `*suffix` wildcards without the `*`, longest first.
    private var suffixes: [(suffix: String, virtualHost: Int)] = []
    /// `prefix*` wildcards without the `*`, longest first.
    private var prefixes: [(prefix: String, virtualHost: Int)] = []
    private var anyHost: Int?

    /// `domains[i]` lists virtual host i's domains; `paths[i]` is its path, for refusals.
    init(domains: [[String]], paths: [String]) throws(ConfigError) {
        var seen: [String: Int] = [:]
        for (virtualHost, list) in domains.enumerated() {
            guard !list.isEmpty else {
                throw ConfigError(path: "\(paths[virtualHost]).domains", message: "needs at least one domain")
            }
            for (index, given) in list.enumerated() {
                let path = "\(paths[virtualHost]).domains[\(index)]"
                let domain = given.lowercased()
                guard !domain.isEmpty, !domain.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) else {
                    throw ConfigError(path: path, message: "\"\(given)\" is not a domain")
                }
                if let other = seen[domain] {
                    throw ConfigError(path: path, message: "\"\(given)\" is also \(paths[other])'s: a domain must be unique across virtual hosts")
                }
                seen[domain] = virtualHost
                if domain == "*" {
                    anyHost = virtualHost
                } else if domain.hasPrefix("*") {
                    suffixes.append((String(domain.dropFirst()), virtualHost))
                } else if domain.hasSuffix("*") {
                    prefixes.append((String(domain.dropLast()), virtualHost))
                } else {
                    exact[Substring(domain)] = virtualHost
                }
            }
        }
        suffixes.sort { $0.suffix.utf8.count > $1.suffix.utf8.count }
        prefixes.sort { $0.prefix.utf8.count > $1.prefix.utf8.count }
    }

    /// The index of the virtual host for `host` (lowercased already, port removed if it should be).
    func virtualHost(for host: Substring) -> Int? {
        if let found = exact[host] { return found }
        let count = host.utf8.count
        for (suffix, virtualHost) in suffixes where count > suffix.utf8.count && host.hasSuffix(suffix) { return virtualHost }
        for (prefix, virtualHost) in prefixes where count > prefix.utf8.count && host.hasPrefix(prefix) { return virtualHost }
        return anyHost
    }

    /// An authority's host and port: `foo:80` → (`foo`, `80`), `[::1]:80` → (`[::1]`, `80`); `foo` and
    /// `[::1]` have no port. Only digits after the last colon make a port.
    static func splitPort(_ authority: Substring) -> (host: Substring, port: Substring?) {
        guard let colon = authority.lastIndex(of: ":") else { return (authority, nil) }
        let port = authority[authority.index(after: colon)...]
        // An IPv6 address without brackets, or with the colon inside them, has no port.
        if let close = authority.lastIndex(of: "]"), close > colon { return (authority, nil) }
        if authority.first != "[", authority[..<colon].contains(":") { return (authority, nil) }
        guard !port.isEmpty, port.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
            return (authority, nil)
        }
        return (authority[..<colon], port)
    }
}
