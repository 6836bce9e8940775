#if canImport(Glibc)
import Glibc
#endif

/// An IP address and port, convertible to and from the kernel's `sockaddr_in`/`sockaddr_in6`.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16

    public init(_ address: IPAddress, _ port: UInt16) {
        self.address = address
        self.port = port
    }

    public var description: String {
        address.family == .ipv6 ? "[\(address)]:\(port)" : "\(address):\(port)"
    }

    /// Calls `body` with this address as a `sockaddr` of the right family and length.
    public func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        var storage = sockaddr_storage()
        let length: Int
        switch address.family {
        case .ipv4:
            length = MemoryLayout<sockaddr_in>.size
            withUnsafeMutableBytes(of: &storage) { raw in
                let sin = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in.self)
                sin.pointee.sin_family = sa_family_t(AF_INET)
                sin.pointee.sin_port = port.bigEndian
                withUnsafeMutableBytes(of: &sin.pointee.sin_addr) { $0.copyBytes(from: address.bytes) }
            }
        case .ipv6:
            length = MemoryLayout<sockaddr_in6>.size
            withUnsafeMutableBytes(of: &storage) { raw in
                let sin6 = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in6.self)
                sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                sin6.pointee.sin6_port = port.bigEndian
                withUnsafeMutableBytes(of: &sin6.pointee.sin6_addr) { $0.copyBytes(from: address.bytes) }
            }
        }
        return try withUnsafePointer(to: &storage) {
            try $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, socklen_t(length)) }
        }
    }

    /// Reads a `sockaddr_in`/`sockaddr_in6` (an IPv4-mapped IPv6 address reads as IPv4).
    public init?(storage: sockaddr_storage) {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            let sin = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in.self) }
            self.init(IPAddress(family: .ipv4, bytes: withUnsafeBytes(of: sin.sin_addr) { Array($0) }), UInt16(bigEndian: sin.sin_port))
        case AF_INET6:
            let sin6 = withUnsafeBytes(of: &storage) { $0.load(as: sockaddr_in6.self) }
            let bytes = withUnsafeBytes(of: sin6.sin6_addr) { Array($0) }
            let port = UInt16(bigEndian: sin6.sin6_port)
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
                self.init(IPAddress(family: .ipv4, bytes: Array(bytes[12...])), port)
            } else {
                self.init(IPAddress(family: .ipv6, bytes: bytes), port)
            }
        default:
            return nil
        }
    }
}

/// The destination a connection had before netfilter's REDIRECT/DNAT rewrote it (`SO_ORIGINAL_DST`).
public enum OriginalDestination {
    /// `SO_ORIGINAL_DST` for IPv4 and `IP6T_SO_ORIGINAL_DST` for IPv6 share the number 80.
    static let option: Int32 = 80

    /// The original destination of an accepted socket, or nil when the connection was not redirected.
    public static func of(socket fd: Int32) -> SocketAddress? {
        var local = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        guard withUnsafeMutablePointer(to: &local, {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }) == 0 else { return nil }
        // An IPv4 client on a dual-stack socket is looked up in the IPv4 conntrack table.
        let mapped = SocketAddress(storage: local)
        let ipv4 = Int32(local.ss_family) == AF_INET || mapped?.address.family == .ipv4
        var original = sockaddr_storage()
        length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let level = ipv4 ? Int32(IPPROTO_IP) : Int32(IPPROTO_IPV6)
        guard getsockopt(fd, level, option, &original, &length) == 0 else { return nil }
        return SocketAddress(storage: original)
    }
}
