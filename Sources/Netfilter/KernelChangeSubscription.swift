import CMNL
#if canImport(Glibc)
import Glibc
#endif

/// Netlink subscriptions that tell when a namespace's nftables ruleset, policy rules or routes change,
/// so a watcher can re-check capture within milliseconds of someone touching it.
///
/// Created on a thread inside the namespace (the sockets stay bound to it); the owner polls
/// ``descriptors`` for input and calls ``drain()``. Holding the sockets keeps the namespace alive.
public final class KernelChangeSubscription: @unchecked Sendable {
    private let sockets: [OpaquePointer]
    /// Non-blocking descriptors to poll for input.
    public let descriptors: [Int32]

    public init() throws(NetlinkError) {
        let nftables = UInt32(1) << (Self.nftablesGroup - 1)
        let routing = [RTNLGRP_IPV4_RULE, RTNLGRP_IPV6_RULE, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE]
            .reduce(UInt32(0)) { $0 | UInt32(1) << ($1.rawValue - 1) }
        var opened: [OpaquePointer] = []
        // SOCK_NONBLOCK and SOCK_CLOEXEC are O_NONBLOCK and O_CLOEXEC on Linux.
        for (bus, groups) in [(NETLINK_NETFILTER, nftables), (NETLINK_ROUTE, routing)] {
            guard let socket = mnl_socket_open2(bus, O_NONBLOCK | O_CLOEXEC) else {
                let error = errno
                opened.forEach { mnl_socket_close($0) }
                throw NetlinkError(operation: "open subscription", errno: error)
            }
            opened.append(socket)
            guard mnl_socket_bind(socket, groups, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
                let error = errno
                opened.forEach { mnl_socket_close($0) }
                throw NetlinkError(operation: "subscribe", errno: error)
            }
        }
        sockets = opened
        descriptors = opened.map { mnl_socket_get_fd($0) }
    }

    /// `NFNLGRP_NFTABLES` from <linux/netfilter/nfnetlink.h> (whose other definitions clash with glibc's
    /// socket types in a module build).
    private static let nftablesGroup: UInt32 = 7

    deinit {
        sockets.forEach { mnl_socket_close($0) }
    }

    /// Reads every pending notification; true if there was any (or the kernel dropped some for us).
    public func drain() -> Bool {
        var changed = false
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        for socket in sockets {
            while true {
                let received = buffer.withUnsafeMutableBytes { mnl_socket_recvfrom(socket, $0.baseAddress, $0.count) }
                if received > 0 { changed = true; continue }
                // ENOBUFS: notifications were lost because we were slow; something changed all the same.
                if received < 0 && errno == ENOBUFS { changed = true; continue }
                if received < 0 && errno == EINTR { continue }
                break
            }
        }
        return changed
    }
}
