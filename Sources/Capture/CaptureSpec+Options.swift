import Netfilter

extension CaptureSpec {
    /// Builds a spec from raw option values (flags or environment); missing options take their defaults.
    ///
    /// Every value is checked before anything else happens, so a refused input never reaches the kernel.
    /// Lists are comma-separated; empty items are ignored, so `""` is an empty list.
    public init(options: [CaptureOption: String]) throws(CaptureSpecError) {
        self.init()
        let parser = OptionReader(options: options)
        outboundCapturePort = try parser.port(.envoyPort) ?? outboundCapturePort
        inboundCapturePort = try parser.port(.inboundCapturePort) ?? inboundCapturePort
        inboundTunnelPort = try parser.port(.inboundTunnelPort) ?? inboundTunnelPort
        proxyUIDs = try parser.ids(.proxyUID) ?? proxyUIDs
        // The gid defaults to the uid, as in istio-iptables.
        proxyGIDs = try parser.ids(.proxyGID) ?? proxyUIDs
        interceptionMode = try parser.mode(.interceptionMode) ?? interceptionMode
        tproxyMark = try parser.mark(.tproxyMark) ?? tproxyMark
        tproxyRouteTable = try parser.routeTable(.tproxyRouteTable) ?? tproxyRouteTable
        inboundPorts = try parser.portSelection(.inboundPorts) ?? inboundPorts
        inboundExcludePorts = try parser.ports(.inboundExcludePorts) ?? inboundExcludePorts
        outboundDestinations = try parser.destinations(.outboundCIDRs) ?? outboundDestinations
        outboundExcludeCIDRs = try parser.prefixes(.outboundExcludeCIDRs) ?? outboundExcludeCIDRs
        outboundPorts = try parser.ports(.outboundPorts) ?? outboundPorts
        outboundExcludePorts = try parser.ports(.outboundExcludePorts) ?? outboundExcludePorts
        kubeVirtInterfaces = try parser.interfaces(.kubeVirtInterfaces) ?? kubeVirtInterfaces
        excludeInterfaces = try parser.interfaces(.excludeInterfaces) ?? excludeInterfaces
        dropInvalid = try parser.switchValue(.dropInvalid) ?? false

        let redirectDNS = try parser.switchValue(.redirectDNS) ?? false
        let captureAllDNS = try parser.switchValue(.captureAllDNS) ?? false
        let servers = try parser.addresses(.dnsServers) ?? []
        if redirectDNS {
            dns = captureAllDNS ? .all : (servers.isEmpty ? .off : .nameservers(servers))
        }

        if tproxyMark == Self.proxyToSelfMark {
            throw CaptureSpecError(option: CaptureOption.tproxyMark.displayName, value: String(tproxyMark),
                                   reason: "\(Self.proxyToSelfMark) marks the proxy's connections to its own pod")
        }
    }

    /// The mark TPROXY mode puts on the proxy's connections to its own pod address over `lo`
    /// (Istio's `outboundMark`).
    public static let proxyToSelfMark: UInt32 = 1338

    /// Every option spelled out as `--name=value`, in a fixed order: parsing these gives back the same spec.
    public var canonicalArguments: [String] {
        canonicalValues.map { "--\($0.0.longName)=\($0.1)" }
    }

    /// The compact form the kernel's table records: short names where istio-iptables has them, and
    /// options whose value is an empty list (their default) left out. Parses back to the same spec.
    public var recordedArguments: [String] {
        canonicalValues.compactMap { option, value in
            if value.isEmpty && option.defaultsToEmpty { return nil }
            return option.shortName.map { "-\($0)=\(value)" } ?? "--\(option.longName)=\(value)"
        }
    }

    private var canonicalValues: [(CaptureOption, String)] {
        func list(_ items: [some CustomStringConvertible]) -> String { items.map(\.description).joined(separator: ",") }
        var arguments: [(CaptureOption, String)] = [
            (.envoyPort, String(outboundCapturePort)),
            (.inboundCapturePort, String(inboundCapturePort)),
            (.inboundTunnelPort, String(inboundTunnelPort)),
            (.proxyUID, list(proxyUIDs)),
            (.proxyGID, list(proxyGIDs)),
            (.interceptionMode, interceptionMode.rawValue),
            (.tproxyMark, String(tproxyMark)),
            (.tproxyRouteTable, String(tproxyRouteTable)),
        ]
        switch inboundPorts {
        case .all: arguments.append((.inboundPorts, "*"))
        case .only(let ports): arguments.append((.inboundPorts, list(ports)))
        }
        arguments.append((.inboundExcludePorts, list(inboundExcludePorts)))
        switch outboundDestinations {
        case .all: arguments.append((.outboundCIDRs, "*"))
        case .only(let prefixes): arguments.append((.outboundCIDRs, list(prefixes.map(\.cidrText))))
        }
        arguments += [
            (.outboundExcludeCIDRs, list(outboundExcludeCIDRs.map(\.cidrText))),
            (.outboundPorts, list(outboundPorts)),
            (.outboundExcludePorts, list(outboundExcludePorts)),
            (.kubeVirtInterfaces, list(kubeVirtInterfaces)),
            (.excludeInterfaces, list(excludeInterfaces)),
        ]
        switch dns {
        case .off: break
        case .all: arguments += [(.redirectDNS, "true"), (.captureAllDNS, "true")]
        case .nameservers(let servers): arguments += [(.redirectDNS, "true"), (.dnsServers, list(servers))]
        }
        if dropInvalid { arguments.append((.dropInvalid, "true")) }
        return arguments
    }

    /// Parses what ``canonicalArguments`` or ``recordedArguments`` wrote.
    public init(canonicalArguments arguments: [String]) throws(CaptureSpecError) {
        var options: [CaptureOption: String] = [:]
        for argument in arguments {
            guard let equals = argument.firstIndex(of: "=") else {
                throw CaptureSpecError(option: "recorded spec", value: argument, reason: "expected --name=value")
            }
            let name = argument[..<equals].drop { $0 == "-" }
            guard let option = CaptureOption.allCases.first(where: {
                $0.longName == name || ($0.shortName.map { String($0) } == String(name))
            }) else {
                throw CaptureSpecError(option: "recorded spec", value: argument, reason: "unknown option")
            }
            options[option] = String(argument[argument.index(after: equals)...])
        }
        try self.init(options: options)
    }
}

extension IPPrefix {
    /// Always `ADDR/LEN`, also for hosts: the form flags and records use.
    public var cidrText: String { "\(address)/\(length)" }
}

/// Reads and checks one option at a time; each reader returns nil when the option is absent.
private struct OptionReader {
    let options: [CaptureOption: String]

    private func fail(_ option: CaptureOption, _ value: some StringProtocol, _ reason: String) -> CaptureSpecError {
        CaptureSpecError(option: option.displayName, value: String(value), reason: reason)
    }

    private func items(_ option: CaptureOption) -> [Substring]? {
        options[option].map { $0.split(separator: ",").map { $0.trimmingSpaces() }.filter { !$0.isEmpty } }
    }

    private func number<N: FixedWidthInteger>(_ option: CaptureOption, _ text: Substring, in range: ClosedRange<N>, what: String) throws(CaptureSpecError) -> N {
        guard !text.isEmpty, text.allSatisfy(\.isASCIIDigit) else { throw fail(option, text, "not a number") }
        guard let value = N(text), range.contains(value) else {
            throw fail(option, text, "\(what) must be \(range.lowerBound)-\(range.upperBound)")
        }
        return value
    }

    private func single(_ option: CaptureOption) -> Substring? {
        options[option].map { $0.trimmingSpaces() }
    }

    func port(_ option: CaptureOption) throws(CaptureSpecError) -> UInt16? {
        guard let text = single(option) else { return nil }
        return try number(option, text, in: 1...65535, what: "a port")
    }

    func ports(_ option: CaptureOption) throws(CaptureSpecError) -> [UInt16]? {
        guard let items = items(option) else { return nil }
        var ports: [UInt16] = []
        for item in items {
            if item == "*" { throw fail(option, options[option]!, "\"*\" is not allowed here; list ports") }
            ports.append(try number(option, item, in: 1...65535, what: "a port"))
        }
        return ports.sortedUnique()
    }

    /// Whether a list option is `*` (everything); nil when absent. `*` stands alone.
    private func isWildcard(_ option: CaptureOption, listing what: String) throws(CaptureSpecError) -> Bool? {
        guard let items = items(option) else { return nil }
        guard items.contains("*") else { return false }
        guard items.count == 1 else { throw fail(option, options[option]!, "\"*\" cannot be combined with \(what)") }
        return true
    }

    func portSelection(_ option: CaptureOption) throws(CaptureSpecError) -> CaptureSpec.PortSelection? {
        guard let all = try isWildcard(option, listing: "ports") else { return nil }
        return all ? .all : .only(try ports(option) ?? [])
    }

    func ids(_ option: CaptureOption) throws(CaptureSpecError) -> [UInt32]? {
        guard let items = items(option) else { return nil }
        guard !items.isEmpty else { throw fail(option, "", "at least one id is required") }
        var ids: [UInt32] = []
        for item in items {
            // 4294967295 is (uid_t)-1, "no id".
            ids.append(try number(option, item, in: 0...UInt32.max - 1, what: "an id"))
        }
        return ids.sortedUnique()
    }

    func mode(_ option: CaptureOption) throws(CaptureSpecError) -> CaptureSpec.InterceptionMode? {
        guard let text = single(option) else { return nil }
        guard let mode = CaptureSpec.InterceptionMode(rawValue: text.uppercased()) else {
            throw fail(option, text, "must be REDIRECT or TPROXY")
        }
        return mode
    }

    func mark(_ option: CaptureOption) throws(CaptureSpecError) -> UInt32? {
        guard let text = single(option) else { return nil }
        return try number(option, text, in: 1...UInt32.max, what: "a mark")
    }

    func routeTable(_ option: CaptureOption) throws(CaptureSpecError) -> UInt32? {
        guard let text = single(option) else { return nil }
        let table: UInt32 = try number(option, text, in: 1...UInt32.max, what: "a route table")
        // 253 default, 254 main, 255 local: the kernel's own tables.
        guard !(253...255).contains(table) else { throw fail(option, text, "tables 253-255 are the kernel's default, main and local tables") }
        return table
    }

    func prefixes(_ option: CaptureOption) throws(CaptureSpecError) -> [IPPrefix]? {
        guard let items = items(option) else { return nil }
        var prefixes: [IPPrefix] = []
        for item in items {
            if item == "*" { throw fail(option, options[option]!, "\"*\" is not allowed here; list CIDRs") }
            guard let prefix = IPPrefix(item) else { throw fail(option, item, Self.prefixProblem(item)) }
            prefixes.append(prefix)
        }
        return prefixes.sortedUnique()
    }

    private static func prefixProblem(_ text: Substring) -> String {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard let address = IPAddress(parts[0]) else { return "\"\(parts[0])\" is not an IPv4 or IPv6 address" }
        let family = address.family == .ipv4 ? "IPv4" : "IPv6"
        return "prefix length must be 0-\(address.bitCount) for \(family)"
    }

    func destinations(_ option: CaptureOption) throws(CaptureSpecError) -> CaptureSpec.DestinationSelection? {
        guard let all = try isWildcard(option, listing: "CIDRs") else { return nil }
        return all ? .all : .only(try prefixes(option) ?? [])
    }

    func addresses(_ option: CaptureOption) throws(CaptureSpecError) -> [IPAddress]? {
        guard let items = items(option) else { return nil }
        var addresses: [IPAddress] = []
        for item in items {
            guard let address = IPAddress(item) else { throw fail(option, item, "not an IPv4 or IPv6 address") }
            addresses.append(address)
        }
        return addresses.sortedUnique()
    }

    func interfaces(_ option: CaptureOption) throws(CaptureSpecError) -> [String]? {
        guard let items = items(option) else { return nil }
        for item in items {
            // IFNAMSIZ is 16 with the terminating NUL; names also land inside nftables strings.
            guard item.utf8.count <= 15 else { throw fail(option, item, "interface names are at most 15 characters") }
            guard item != ".", item != "..",
                  item.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.@+".contains($0)) }) else {
                throw fail(option, item, "not a valid interface name")
            }
        }
        return items.map(String.init).sortedUnique()
    }

    func switchValue(_ option: CaptureOption) throws(CaptureSpecError) -> Bool? {
        guard let text = single(option) else { return nil }
        guard let value = Bool(switchText: String(text)) else { throw fail(option, text, "must be true or false") }
        return value
    }
}

extension Array where Element: Comparable {
    /// Sorted, each value once.
    func sortedUnique() -> [Element] {
        var result: [Element] = []
        for value in sorted() where result.last != value { result.append(value) }
        return result
    }
}

extension StringProtocol {
    func trimmingSpaces() -> Substring {
        let scalars = self[...]
        let start = scalars.firstIndex { !$0.isWhitespace } ?? scalars.endIndex
        let end = scalars.lastIndex { !$0.isWhitespace }.map { scalars.index(after: $0) } ?? start
        return Substring(scalars[start..<end])
    }
}

extension Bool {
    /// `true/false`, `1/0`, `yes/no`, `on/off` (any case), as flags and environment variables spell switches.
    public init?(switchText text: String) {
        switch text.trimmingSpaces().lowercased() {
        case "true", "1", "yes", "on": self = true
        case "false", "0", "no", "off", "": self = false
        default: return nil
        }
    }
}
