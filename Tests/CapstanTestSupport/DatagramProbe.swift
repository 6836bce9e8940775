import CMNL
import Netfilter
#if canImport(Glibc)
import Glibc
#endif

/// UDP sockets in the sandbox and a datagram sent as some uid: which socket receives it (DNS capture).
public final class DatagramProbe: @unchecked Sendable {
    private var receivers: [(label: String, fd: Int32)] = []

    public init() {}

    deinit {
        for receiver in receivers { close(receiver.fd) }
    }

    /// A UDP socket bound to `address` in `namespace` (IPv6 ones are dual-stack).
    public func listen(_ label: String, in namespace: NetworkNamespace, on address: SocketAddress) throws {
        let fd = try namespace.run { () throws -> Int32 in
            let fd = socket(address.address.family == .ipv4 ? AF_INET : AF_INET6, Int32(SOCK_DGRAM.rawValue), 0)
            guard fd >= 0 else { throw SandboxError("udp socket: \(errno)") }
            var off: Int32 = 0
            if address.address.family == .ipv6 {
                setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &off, socklen_t(MemoryLayout<Int32>.size))
            }
            guard address.withSockAddr({ bind(fd, $0, $1) }) == 0 else {
                close(fd)
                throw SandboxError("udp bind \(address): \(errno)")
            }
            return fd
        }
        receivers.append((label, fd))
    }

    /// Sends one datagram to `target` from a socket owned by `uid`/`gid`; the label of the receiver, or nil.
    public func send(to target: SocketAddress, from namespace: NetworkNamespace, uid: UInt32 = 0, gid: UInt32 = 0) throws -> String? {
        let marker = "probe-\(UInt64.random(in: 0...UInt64.max))"
        try namespace.run {
            setfsgid(__gid_t(gid))
            setfsuid(__uid_t(uid))
            let fd = socket(target.address.family == .ipv4 ? AF_INET : AF_INET6, Int32(SOCK_DGRAM.rawValue), 0)
            guard fd >= 0 else { throw SandboxError("udp socket: \(errno)") }
            defer { close(fd) }
            let bytes = Array(marker.utf8)
            let sent = target.withSockAddr { address, length in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, address, length) }
            }
            guard sent == bytes.count else { throw SandboxError("udp send to \(target): \(errno)") }
        }
        for _ in 0..<50 {
            for receiver in receivers {
                var buffer = [UInt8](repeating: 0, count: 512)
                let count = buffer.withUnsafeMutableBytes { recv(receiver.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if count > 0, String(decoding: buffer[..<count], as: UTF8.self) == marker { return receiver.label }
            }
            usleep(10_000)
        }
        return nil
    }
}
