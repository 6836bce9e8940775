import NIOCore

/// What a stub resolver is told by resolv.conf(5): nameservers in order, the search list and the options
/// that change how it asks (`ndots`, `timeout`, `attempts`).
public struct ResolverConfiguration: Sendable, Hashable {
    public static let defaultPath = "/etc/resolv.conf"

    /// `nameserver` lines in order (a link-local zone such as `%eth0` is dropped); at most three are used
    /// by glibc, all are kept here.
    public var nameservers: [HostAddress]
    /// The port queries go to (53; tests point it elsewhere).
    public var port: Int
    /// `search` (or `domain`) list: suffixes tried for names with fewer than `ndots` dots.
    public var searchDomains: [String]
    /// `options ndots:N` (default 1, at most 15).
    public var ndots: Int
    /// `options timeout:N`: how long one nameserver is waited for (default 5 s, at most 30).
    public var timeout: TimeAmount
    /// `options attempts:N`: rounds through the nameserver list (default 2, at most 5).
    public var attempts: Int

    public init(nameservers: [HostAddress], port: Int = 53, searchDomains: [String] = [], ndots: Int = 1,
                timeout: TimeAmount = .seconds(5), attempts: Int = 2) {
        self.nameservers = nameservers
        self.port = port
        self.searchDomains = searchDomains
        self.ndots = ndots
        self.timeout = timeout
        self.attempts = attempts
    }

    /// Reads resolv.conf text as glibc does: unknown keywords and options, and `nameserver` values that are
    /// not addresses, are skipped; the last `search`/`domain` line wins.
    public init(parsing text: String) {
        self.init(nameservers: [])
        for rawLine in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let line = rawLine.prefix { $0 != "#" && $0 != ";" }
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let keyword = fields.first else { continue }
            switch keyword {
            case "nameserver":
                guard fields.count >= 2, let address = HostAddress(fields[1].split(separator: "%")[0]) else { continue }
                nameservers.append(address)
            case "search", "domain":
                searchDomains = fields.dropFirst().map { String($0.hasSuffix(".") ? $0.dropLast() : $0) }
            case "options":
                for option in fields.dropFirst() {
                    let parts = option.split(separator: ":", maxSplits: 1)
                    guard parts.count == 2, let value = Int(parts[1]), value >= 0 else { continue }
                    switch parts[0] {
                    case "ndots": ndots = min(value, 15)
                    case "timeout": timeout = .seconds(Int64(max(1, min(value, 30))))
                    case "attempts": attempts = max(1, min(value, 5))
                    default: continue
                    }
                }
            default:
                continue
            }
        }
    }

    /// The nameservers as socket addresses on `port`.
    public var nameserverAddresses: [SocketAddress] {
        nameservers.compactMap { try? SocketAddress(ipAddress: $0.description, port: port) }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension ResolverConfiguration {
    /// Reads resolv.conf at `path` (nil when it cannot be read; at most 64 KiB are read).
    public static func text(atPath path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 65536 {
            let count = fread(&chunk, 1, chunk.count, file)
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
