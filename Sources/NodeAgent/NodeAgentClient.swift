#if canImport(Glibc)
import Glibc
#endif

/// Talks to the node agent over its unix socket, blocking, within a deadline: used by the CNI plugin
/// (a short-lived process, where an event loop would cost more than the call) and by `capstan status`.
public struct NodeAgentClient: Sendable {
    public var socketPath: String
    public var timeout: Duration

    public init(socketPath: String, timeout: Duration) {
        self.socketPath = socketPath
        self.timeout = timeout
    }

    /// Why the agent could not be asked or did not answer.
    public struct Unreachable: Error, CustomStringConvertible, Sendable {
        public let socketPath: String
        public let reason: String
        public var description: String { "node agent at \(socketPath): \(reason)" }
    }

    public func send(_ request: AgentRequest) throws(Unreachable) -> AgentReply {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw failure("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let deadline = ContinuousClock.now + timeout

        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(socketPath.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw failure("socket path is longer than \(MemoryLayout.size(ofValue: address.sun_path) - 1) bytes")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: pathBytes) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw failure("connect: \(String(cString: strerror(errno)))") }

        let message = AgentWire.encode(request)
        var offset = 0
        while offset < message.count {
            try setTimeout(fd, SO_SNDTIMEO, until: deadline)
            let sent = message[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0 && errno == EINTR { continue }
            guard sent > 0 else { throw failure(errno == EAGAIN ? "timed out after \(timeout) sending" : "send: \(String(cString: strerror(errno)))") }
            offset += sent
        }

        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while reply.last != UInt8(ascii: "\n") {
            try setTimeout(fd, SO_RCVTIMEO, until: deadline)
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR { continue }
            if count == 0 { break }
            guard count > 0 else {
                throw failure(errno == EAGAIN ? "no answer within \(timeout)" : "receive: \(String(cString: strerror(errno)))")
            }
            reply += chunk[..<count]
        }
        guard !reply.isEmpty else { throw failure("closed the connection without an answer") }
        do {
            return try AgentWire.decode(AgentReply.self, from: reply)
        } catch {
            throw failure("answered something that is not a reply: \(error)")
        }
    }

    private func setTimeout(_ fd: Int32, _ option: Int32, until deadline: ContinuousClock.Instant) throws(Unreachable) {
        let remaining = deadline - .now
        guard remaining > .zero else { throw failure("no answer within \(timeout)") }
        let (seconds, attoseconds) = remaining.components
        var value = timeval(tv_sec: Int(seconds), tv_usec: max(1, Int(attoseconds / 1_000_000_000_000)))
        setsockopt(fd, SOL_SOCKET, option, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    private func failure(_ reason: String) -> Unreachable {
        Unreachable(socketPath: socketPath, reason: reason)
    }
}
