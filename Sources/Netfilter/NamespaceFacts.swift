/// What a network namespace has, read from the kernel by a thread inside it.
public struct NamespaceFacts: Sendable, Equatable {
    /// IPv6 is enabled (the stack exists and `lo` has it on).
    public var hasIPv6: Bool
    /// Local TCP ports something listens on, IPv4 or IPv6.
    public var listeningTCPPorts: Set<UInt16>

    public init(hasIPv6: Bool, listeningTCPPorts: Set<UInt16>) {
        self.hasIPv6 = hasIPv6
        self.listeningTCPPorts = listeningTCPPorts
    }

    /// Reads the facts of the calling thread's namespace (`/proc/sys/net` and `/proc/thread-self/net`
    /// follow the thread, not the process).
    ///
    /// Listing listeners walks the kernel's whole TCP socket table (milliseconds), so only `status` asks.
    public static func current(includingListeners: Bool = false) -> NamespaceFacts {
        let ipv6 = SystemFile.read("/proc/sys/net/ipv6/conf/lo/disable_ipv6").map { $0.hasPrefix("0") } ?? false
        var ports = Set<UInt16>()
        if includingListeners {
            for file in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
                ports.formUnion(listeningPorts(inSocketTable: SystemFile.read(file) ?? ""))
            }
        }
        return NamespaceFacts(hasIPv6: ipv6, listeningTCPPorts: ports)
    }

    /// Parses `/proc/net/tcp`: `sl local_address rem_address st …`, addresses as `HEXADDR:HEXPORT`,
    /// state `0A` is LISTEN.
    static func listeningPorts(inSocketTable table: String) -> Set<UInt16> {
        var ports = Set<UInt16>()
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 3, fields[3] == "0A", let colon = fields[1].lastIndex(of: ":"),
                  let port = UInt16(fields[1][fields[1].index(after: colon)...], radix: 16) else { continue }
            ports.insert(port)
        }
        return ports
    }
}
