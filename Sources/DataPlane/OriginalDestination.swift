import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// Where a captured connection was going before the capture rules sent it to the proxy.
enum OriginalDestination {
    /// `SO_ORIGINAL_DST` (IPv4) and `IP6T_SO_ORIGINAL_DST` (IPv6) share the number 80.
    private static let option = NIOBSDSocket.Option(rawValue: 80)

    /// REDIRECT: conntrack's pre-NAT destination. An IPv4 client on the dual-stack listener is looked
    /// up in the IPv4 table. Fails when the connection was not NAT'd.
    static func redirected(_ channel: Channel) -> EventLoopFuture<SocketAddress> {
        guard let provider = channel as? SocketOptionProvider, let local = channel.localAddress else {
            return channel.eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
        }
        let ipv4 = local.protocol == .inet || local.isIPv4Mapped
        let level = NIOBSDSocket.OptionLevel(rawValue: ipv4 ? CInt(IPPROTO_IP) : CInt(IPPROTO_IPV6))
        // sockaddr_in6 is large enough for either answer; the family field says which it is.
        let answer: EventLoopFuture<sockaddr_in6> = provider.unsafeGetSocketOption(level: level, name: option)
        return answer.flatMapThrowing { storage in
            var storage = storage
            if storage.sin6_family == sa_family_t(AF_INET) {
                return withUnsafeBytes(of: &storage) { SocketAddress($0.load(as: sockaddr_in.self)) }
            }
            return SocketAddress(storage)
        }
    }
}

extension SocketAddress {
    /// `::ffff:a.b.c.d`: an IPv4 peer on a dual-stack socket.
    var isIPv4Mapped: Bool {
        guard case .v6(let address) = self else { return false }
        let bytes = withUnsafeBytes(of: address.address.sin6_addr) { Array($0) }
        return bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF
    }

    /// The plain IPv4 form of a mapped address; other addresses unchanged.
    var unmapped: SocketAddress {
        guard isIPv4Mapped, case .v6(let address) = self else { return self }
        let bytes = withUnsafeBytes(of: address.address.sin6_addr) { Array($0) }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = address.address.sin6_port
        withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: bytes[12...]) }
        return SocketAddress(sin)
    }
}
