// Glibc's socket types are also reached through CMNL's headers; which module a whole-module build
// credits them to varies, so import both.
import CMNL
#if canImport(Glibc)
import Glibc
#endif

/// A socket call that failed.
public struct SocketError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let errno: Int32
    public var description: String { "\(operation): \(String(cString: strerror(errno)))" }
}

/// A plain TCP socket with timeouts, for probing what capture does to real connections
/// (`--run-validation`, tests). The proxy's data path uses SwiftNIO instead.
///
/// The socket belongs to the network namespace of the thread that creates it, for its whole life.
public final class ProbeSocket {
    public let fd: Int32

    private init(fd: Int32) {
        self.fd = fd
    }

    deinit {
        close(fd)
    }

    /// A new TCP socket; IPv6 sockets are dual-stack.
    public static func tcp(_ family: AddressFamily) throws(SocketError) -> ProbeSocket {
        let fd = socket(family == .ipv4 ? AF_INET : AF_INET6, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError(operation: "socket", errno: errno) }
        let probe = ProbeSocket(fd: fd)
        if family == .ipv6 { try probe.setOption(Int32(IPPROTO_IPV6), IPV6_V6ONLY, 0, "IPV6_V6ONLY") }
        return probe
    }

    /// A listening socket; `transparent` accepts TPROXY'd connections for any address.
    public static func listener(on address: SocketAddress, transparent: Bool = false, reusePort: Bool = false) throws(SocketError) -> ProbeSocket {
        let probe = try tcp(address.address.family)
        try probe.setOption(SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR")
        if reusePort { try probe.setOption(SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT") }
        if transparent {
            // IP_TRANSPARENT (19) and IPV6_TRANSPARENT (75).
            if address.address.family == .ipv4 {
                try probe.setOption(Int32(IPPROTO_IP), 19, 1, "IP_TRANSPARENT")
            } else {
                try probe.setOption(Int32(IPPROTO_IPV6), 75, 1, "IPV6_TRANSPARENT")
            }
        }
        try probe.bind(address)
        guard listen(probe.fd, 1024) == 0 else { throw SocketError(operation: "listen \(address)", errno: errno) }
        return probe
    }

    public func setOption(_ level: Int32, _ name: Int32, _ value: Int32, _ label: String) throws(SocketError) {
        var value = value
        guard setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw SocketError(operation: "setsockopt \(label)", errno: errno)
        }
    }

    public func bind(_ address: SocketAddress) throws(SocketError) {
        let result = address.withSockAddr { Glibc.bind(fd, $0, $1) }
        guard result == 0 else { throw SocketError(operation: "bind \(address)", errno: errno) }
    }

    /// Connects, giving up after `timeoutMilliseconds`.
    public func connect(to address: SocketAddress, timeoutMilliseconds: Int32) throws(SocketError) {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        defer { _ = fcntl(fd, F_SETFL, flags) }
        let result = address.withSockAddr { Glibc.connect(fd, $0, $1) }
        if result == 0 { return }
        guard errno == EINPROGRESS else { throw SocketError(operation: "connect \(address)", errno: errno) }
        guard try wait(for: Int16(POLLOUT), timeoutMilliseconds: timeoutMilliseconds) else {
            throw SocketError(operation: "connect \(address)", errno: ETIMEDOUT)
        }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
        guard error == 0 else { throw SocketError(operation: "connect \(address)", errno: error) }
    }

    /// The next connection, or nil if none arrives in time.
    public func accept(timeoutMilliseconds: Int32) throws(SocketError) -> ProbeSocket? {
        guard try wait(for: Int16(POLLIN), timeoutMilliseconds: timeoutMilliseconds) else { return nil }
        let client = Glibc.accept(fd, nil, nil)
        guard client >= 0 else { throw SocketError(operation: "accept", errno: errno) }
        return ProbeSocket(fd: client)
    }

    /// Whether `events` arrived within the timeout.
    public func wait(for events: Int16, timeoutMilliseconds: Int32) throws(SocketError) -> Bool {
        var descriptor = pollfd(fd: fd, events: events, revents: 0)
        while true {
            let ready = poll(&descriptor, 1, timeoutMilliseconds)
            if ready < 0 && errno == EINTR { continue }
            guard ready >= 0 else { throw SocketError(operation: "poll", errno: errno) }
            return ready > 0
        }
    }

    public var localAddress: SocketAddress? { address(getsockname) }

    public var peerAddress: SocketAddress? { address(getpeername) }

    private func address(_ query: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { query(fd, $0, &length) }
        }
        return result == 0 ? SocketAddress(storage: storage) : nil
    }

    /// `SO_ORIGINAL_DST`: where the client meant to connect before REDIRECT.
    public var originalDestination: SocketAddress? { OriginalDestination.of(socket: fd) }
}

extension ProbeSocket {
    /// Writes all of `bytes`, blocking.
    public func sendAll(_ bytes: [UInt8]) throws(SocketError) {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0 && errno == EINTR { continue }
            guard sent > 0 else { throw SocketError(operation: "send", errno: errno) }
            offset += sent
        }
    }

    /// Ends this side's writing (half-close): the peer reads end of stream, and can still answer.
    public func shutdownOutput() {
        shutdown(fd, Int32(SHUT_WR))
    }

    /// Reads exactly `count` bytes, or fewer if the peer closes first.
    public func receive(count: Int, timeoutMilliseconds: Int32 = 5000) throws(SocketError) -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while result.count < count {
            guard try wait(for: Int16(POLLIN), timeoutMilliseconds: timeoutMilliseconds) else {
                throw SocketError(operation: "receive", errno: ETIMEDOUT)
            }
            let wanted = min(chunk.count, count - result.count)
            let received = chunk.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, wanted, 0) }
            if received < 0 && errno == EINTR { continue }
            guard received >= 0 else { throw SocketError(operation: "receive", errno: errno) }
            if received == 0 { break }
            result += chunk[..<received]
        }
        return result
    }
}
