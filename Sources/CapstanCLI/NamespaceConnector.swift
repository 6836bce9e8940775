#if canImport(Glibc)
import Glibc
import HTTPEndpoints
#endif
import Netfilter
import Supervisor

/// Connections to a network namespace's loopback (the sidecar's status port and the proxy's admin API),
/// each made by a thread inside that namespace, so that `capstan status --network-namespace` reaches the
/// pod's 127.0.0.1 and not the node's.
struct NamespaceConnector {
    /// A connection that could not be made.
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    let namespace: NetworkNamespace

    /// For ``OneShotHTTPClient``: a socket connected to `host:port` in ``namespace``, its descriptor the caller's.
    var connector: OneShotHTTPClient.Connector {
        { [namespace] host, port, timeout in
            guard let address = IPAddress(host) else { throw Failure(description: "\"\(host)\" is not an IP address") }
            guard let port = UInt16(exactly: port), port != 0 else { throw Failure(description: "\(port) is not a TCP port") }
            let (seconds, attoseconds) = timeout.components
            let milliseconds = Int32(clamping: max(1, seconds * 1000 + attoseconds / 1_000_000_000_000_000))
            return try namespace.run {
                let socket = try ProbeSocket.tcp(address.family)
                try socket.connect(to: SocketAddress(address, port), timeoutMilliseconds: milliseconds)
                // The probe socket closes its own descriptor when it goes: hand over a duplicate.
                let descriptor = fcntl(socket.fd, F_DUPFD_CLOEXEC, 0)
                guard descriptor >= 0 else { throw Failure(description: "dup: \(String(cString: strerror(errno)))") }
                return descriptor
            }
        }
    }
}
