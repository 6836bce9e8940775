import CMNL
#if canImport(Glibc)
import Glibc
#endif

/// IPv4 or IPv6, as the kernel's address families.
public enum AddressFamily: String, Sendable, Hashable, CaseIterable, Codable {
    case ipv4, ipv6

    var kernelValue: UInt8 { self == .ipv4 ? UInt8(AF_INET) : UInt8(AF_INET6) }
}

/// `ip rule add fwmark MARK lookup TABLE`: packets carrying the mark consult the table.
public struct FirewallMarkRule: Sendable, Hashable, Codable {
    public var family: AddressFamily
    public var mark: UInt32
    public var table: UInt32
    /// The rule's preference; chosen by the kernel when added.
    public var priority: UInt32?

    public init(family: AddressFamily, mark: UInt32, table: UInt32, priority: UInt32? = nil) {
        self.family = family
        self.mark = mark
        self.table = table
        self.priority = priority
    }

    /// Same mark and table, whatever the priority.
    public func sameSelector(as other: FirewallMarkRule) -> Bool {
        family == other.family && mark == other.mark && table == other.table
    }
}

/// `ip route add local default dev lo table TABLE`: deliver everything looked up in the table locally.
public struct LocalDefaultRoute: Sendable, Hashable, Codable {
    public var family: AddressFamily
    public var table: UInt32

    public init(family: AddressFamily, table: UInt32) {
        self.family = family
        self.table = table
    }
}

/// An rtnetlink request the kernel refused.
public struct NetlinkError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let errno: Int32
    public var description: String { "rtnetlink \(operation): \(String(cString: strerror(errno)))" }
}

/// An rtnetlink socket (libmnl): the fwmark rules and local routes TPROXY needs, route lookups, and
/// loopback addresses.
///
/// Like ``NFTablesSession``, it talks to the namespace of the thread that created it.
public final class RoutingSocket {
    private let socket: OpaquePointer
    private let portID: UInt32
    private var sequence: UInt32
    private var buffer: [UInt8]

    public init() throws(NetlinkError) {
        guard let socket = mnl_socket_open(NETLINK_ROUTE) else {
            throw NetlinkError(operation: "open", errno: errno)
        }
        guard mnl_socket_bind(socket, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let error = errno
            mnl_socket_close(socket)
            throw NetlinkError(operation: "bind", errno: error)
        }
        self.socket = socket
        self.portID = mnl_socket_get_portid(socket)
        self.sequence = UInt32(truncatingIfNeeded: time(nil))
        // libmnl's MNL_SOCKET_BUFFER_SIZE: rtnetlink dump messages are at most a page (8 KiB cap).
        self.buffer = [UInt8](repeating: 0, count: 8192)
    }

    deinit {
        mnl_socket_close(socket)
    }

    // MARK: Rules

    /// The fwmark rules of a family (rules without a mark are not listed).
    public func firewallMarkRules(family: AddressFamily) throws(NetlinkError) -> [FirewallMarkRule] {
        var rules: [FirewallMarkRule] = []
        try dump(type: UInt16(RTM_GETRULE), family: family, headerSize: MemoryLayout<fib_rule_hdr>.size) { header, attributes in
            let hdr = header.assumingMemoryBound(to: fib_rule_hdr.self).pointee
            guard let mark = attributes.u32(Int(FRA_FWMARK)) else { return }
            let table = attributes.u32(Int(FRA_TABLE)) ?? UInt32(hdr.table)
            rules.append(FirewallMarkRule(family: family, mark: mark, table: table,
                                          priority: attributes.u32(Int(FRA_PRIORITY))))
        }
        return rules
    }

    public func add(_ rule: FirewallMarkRule) throws(NetlinkError) {
        try request(type: UInt16(RTM_NEWRULE), flags: NLM_F_CREATE | NLM_F_EXCL,
                    operation: "add rule fwmark \(rule.mark) lookup \(rule.table)") { nlh in
            Self.putRule(rule, into: nlh)
        }
    }

    public func delete(_ rule: FirewallMarkRule) throws(NetlinkError) {
        try request(type: UInt16(RTM_DELRULE), flags: 0, operation: "delete rule") { nlh in
            Self.putRule(rule, into: nlh)
        }
    }

    private static func putRule(_ rule: FirewallMarkRule, into nlh: UnsafeMutablePointer<nlmsghdr>) {
        let hdr = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<fib_rule_hdr>.size)!
            .assumingMemoryBound(to: fib_rule_hdr.self)
        hdr.pointee.family = rule.family.kernelValue
        hdr.pointee.action = UInt8(FR_ACT_TO_TBL)
        hdr.pointee.table = rule.table < 256 ? UInt8(rule.table) : 0
        mnl_attr_put_u32(nlh, UInt16(FRA_FWMARK), rule.mark)
        mnl_attr_put_u32(nlh, UInt16(FRA_FWMASK), 0xFFFF_FFFF)
        mnl_attr_put_u32(nlh, UInt16(FRA_TABLE), rule.table)
        if let priority = rule.priority {
            mnl_attr_put_u32(nlh, UInt16(FRA_PRIORITY), priority)
        }
    }

    // MARK: Routes

    /// The local default routes in `table` for a family.
    public func localDefaultRoutes(family: AddressFamily, table: UInt32) throws(NetlinkError) -> [LocalDefaultRoute] {
        var routes: [LocalDefaultRoute] = []
        try dump(type: UInt16(RTM_GETROUTE), family: family, headerSize: MemoryLayout<rtmsg>.size) { header, attributes in
            let rtm = header.assumingMemoryBound(to: rtmsg.self).pointee
            let routeTable = attributes.u32(Int(RTA_TABLE.rawValue)) ?? UInt32(rtm.rtm_table)
            guard routeTable == table, rtm.rtm_type == UInt8(RTN_LOCAL), rtm.rtm_dst_len == 0 else { return }
            routes.append(LocalDefaultRoute(family: family, table: table))
        }
        return routes
    }

    public func add(_ route: LocalDefaultRoute) throws(NetlinkError) {
        let loopback = try loopbackIndex()
        try request(type: UInt16(RTM_NEWROUTE), flags: NLM_F_CREATE | NLM_F_REPLACE,
                    operation: "add route local default dev lo table \(route.table)") { nlh in
            Self.putRoute(route, loopback: loopback, into: nlh)
        }
    }

    public func delete(_ route: LocalDefaultRoute) throws(NetlinkError) {
        let loopback = try loopbackIndex()
        try request(type: UInt16(RTM_DELROUTE), flags: 0, operation: "delete route local default dev lo table \(route.table)") { nlh in
            Self.putRoute(route, loopback: loopback, into: nlh)
        }
    }

    private func loopbackIndex() throws(NetlinkError) -> UInt32 {
        let index = if_nametoindex("lo")
        guard index != 0 else { throw NetlinkError(operation: "find interface lo", errno: errno) }
        return index
    }

    private static func putRoute(_ route: LocalDefaultRoute, loopback: UInt32, into nlh: UnsafeMutablePointer<nlmsghdr>) {
        let rtm = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<rtmsg>.size)!.assumingMemoryBound(to: rtmsg.self)
        rtm.pointee.rtm_family = route.family.kernelValue
        rtm.pointee.rtm_dst_len = 0
        rtm.pointee.rtm_table = route.table < 256 ? UInt8(route.table) : UInt8(RT_TABLE_UNSPEC.rawValue)
        rtm.pointee.rtm_protocol = UInt8(RTPROT_BOOT)
        rtm.pointee.rtm_scope = UInt8(RT_SCOPE_HOST.rawValue)
        rtm.pointee.rtm_type = UInt8(RTN_LOCAL)
        mnl_attr_put_u32(nlh, UInt16(RTA_TABLE.rawValue), route.table)
        mnl_attr_put_u32(nlh, UInt16(RTA_OIF.rawValue), loopback)
    }

    // MARK: Lookups and addresses

    /// The interface the kernel would send a packet to `destination` out of (`ip route get`), or nil when
    /// there is no route.
    public func outputInterface(toward destination: IPAddress) throws(NetlinkError) -> String? {
        let seq = nextSequence()
        let length: Int = buffer.withUnsafeMutableBytes { raw in
            let nlh = mnl_nlmsg_put_header(raw.baseAddress)!
            nlh.pointee.nlmsg_type = UInt16(RTM_GETROUTE)
            // With an acknowledgement after the answer, the exchange knows when it is over.
            nlh.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_ACK)
            nlh.pointee.nlmsg_seq = seq
            let rtm = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<rtmsg>.size)!.assumingMemoryBound(to: rtmsg.self)
            rtm.pointee.rtm_family = destination.family.kernelValue
            rtm.pointee.rtm_dst_len = UInt8(destination.bitCount)
            destination.bytes.withUnsafeBytes { mnl_attr_put(nlh, UInt16(RTA_DST.rawValue), $0.count, $0.baseAddress) }
            return Int(nlh.pointee.nlmsg_len)
        }
        var index: UInt32?
        do {
            try exchange(length: length, seq: seq, operation: "route lookup") { nlh in
                guard nlh.pointee.nlmsg_type == UInt16(RTM_NEWROUTE) else { return }
                index = NetlinkAttributes(message: nlh, headerSize: MemoryLayout<rtmsg>.size).u32(Int(RTA_OIF.rawValue))
            }
        } catch where [ENETUNREACH, EHOSTUNREACH, ESRCH].contains(error.errno) {
            return nil
        }
        guard let index else { return nil }
        var name = [CChar](repeating: 0, count: Int(IF_NAMESIZE) + 1)
        guard if_indextoname(index, &name) != nil else { return nil }
        return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Adds a host address to `lo` without duplicate address detection; an existing address is fine.
    public func addLoopbackAddress(_ address: IPAddress) throws(NetlinkError) {
        let loopback = try loopbackIndex()
        do {
            try request(type: UInt16(RTM_NEWADDR), flags: NLM_F_CREATE | NLM_F_EXCL, operation: "add address") { nlh in
                let ifa = mnl_nlmsg_put_extra_header(nlh, MemoryLayout<ifaddrmsg>.size)!
                    .assumingMemoryBound(to: ifaddrmsg.self)
                ifa.pointee.ifa_family = address.family.kernelValue
                ifa.pointee.ifa_prefixlen = UInt8(address.bitCount)
                ifa.pointee.ifa_flags = UInt8(IFA_F_NODAD)
                ifa.pointee.ifa_scope = UInt8(RT_SCOPE_HOST.rawValue)
                ifa.pointee.ifa_index = loopback
                address.bytes.withUnsafeBytes { mnl_attr_put(nlh, UInt16(IFA_LOCAL), $0.count, $0.baseAddress) }
                address.bytes.withUnsafeBytes { mnl_attr_put(nlh, UInt16(IFA_ADDRESS), $0.count, $0.baseAddress) }
            }
        } catch where error.errno == EEXIST {
            return
        }
    }

    // MARK: Transport

    private func nextSequence() -> UInt32 {
        sequence &+= 1
        return sequence
    }

    /// Sends one request and waits for the kernel's acknowledgement.
    private func request(
        type: UInt16, flags: Int32, operation: String,
        fill: (UnsafeMutablePointer<nlmsghdr>) -> Void
    ) throws(NetlinkError) {
        let seq = nextSequence()
        let length: Int = buffer.withUnsafeMutableBytes { raw in
            let nlh = mnl_nlmsg_put_header(raw.baseAddress)!
            nlh.pointee.nlmsg_type = type
            nlh.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_ACK | flags)
            nlh.pointee.nlmsg_seq = seq
            fill(nlh)
            return Int(nlh.pointee.nlmsg_len)
        }
        try exchange(length: length, seq: seq, operation: operation, onMessage: nil)
    }

    private typealias AttributeVisitor = (UnsafeRawPointer, NetlinkAttributes) -> Void

    /// Sends a dump request and hands each answer's fixed header and attributes to `visit`.
    private func dump(type: UInt16, family: AddressFamily, headerSize: Int, visit: AttributeVisitor) throws(NetlinkError) {
        let seq = nextSequence()
        let length: Int = buffer.withUnsafeMutableBytes { raw in
            let nlh = mnl_nlmsg_put_header(raw.baseAddress)!
            nlh.pointee.nlmsg_type = type
            nlh.pointee.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_DUMP)
            nlh.pointee.nlmsg_seq = seq
            // rtmsg and fib_rule_hdr both start with the family byte.
            let extra = mnl_nlmsg_put_extra_header(nlh, headerSize)!
            extra.storeBytes(of: family.kernelValue, as: UInt8.self)
            return Int(nlh.pointee.nlmsg_len)
        }
        try withoutActuallyEscaping(visit) { visit throws(NetlinkError) in
            try exchange(length: length, seq: seq, operation: "dump") { nlh in
                let header = mnl_nlmsg_get_payload(nlh)!
                visit(UnsafeRawPointer(header), NetlinkAttributes(message: nlh, headerSize: headerSize))
            }
        }
    }

    private func exchange(
        length: Int, seq: UInt32, operation: String,
        onMessage: ((UnsafePointer<nlmsghdr>) -> Void)?
    ) throws(NetlinkError) {
        let sent = buffer.withUnsafeBytes { mnl_socket_sendto(socket, $0.baseAddress, length) }
        guard sent >= 0 else { throw NetlinkError(operation: operation, errno: errno) }

        final class Context {
            let onMessage: ((UnsafePointer<nlmsghdr>) -> Void)?
            init(_ onMessage: ((UnsafePointer<nlmsghdr>) -> Void)?) { self.onMessage = onMessage }
        }
        let context = Context(onMessage)
        let callback: mnl_cb_t = { nlh, data in
            let context = Unmanaged<Context>.fromOpaque(data!).takeUnretainedValue()
            context.onMessage?(nlh!)
            return MNL_CB_OK
        }
        while true {
            let received = buffer.withUnsafeMutableBytes { mnl_socket_recvfrom(socket, $0.baseAddress, $0.count) }
            guard received > 0 else { throw NetlinkError(operation: operation, errno: errno) }
            let status = withExtendedLifetime(context) {
                buffer.withUnsafeBytes {
                    mnl_cb_run($0.baseAddress, received, seq, portID, callback,
                               Unmanaged.passUnretained(context).toOpaque())
                }
            }
            if status < 0 { throw NetlinkError(operation: operation, errno: errno) }
            if status == MNL_CB_STOP { return }
        }
    }
}

/// The attributes of one netlink message, by type.
struct NetlinkAttributes {
    private var values: [Int: (pointer: UnsafePointer<nlattr>, length: Int)] = [:]

    init(message nlh: UnsafePointer<nlmsghdr>, headerSize: Int) {
        let mutable = UnsafeMutablePointer(mutating: nlh)
        var attribute = mnl_nlmsg_get_payload_offset(nlh, headerSize)!.assumingMemoryBound(to: nlattr.self)
        var remaining = Int32(Int(nlh.pointee.nlmsg_len) - (UnsafeRawPointer(attribute) - UnsafeRawPointer(mutable)))
        while mnl_attr_ok(attribute, remaining) {
            values[Int(mnl_attr_get_type(attribute))] = (UnsafePointer(attribute), Int(mnl_attr_get_payload_len(attribute)))
            remaining -= Int32(truncatingIfNeeded: (Int(attribute.pointee.nla_len) + 3) & ~3)
            attribute = mnl_attr_next(attribute)!
        }
    }

    func u32(_ type: Int) -> UInt32? {
        guard let value = values[type], value.length >= 4 else { return nil }
        return mnl_attr_get_u32(value.pointer)
    }
}
