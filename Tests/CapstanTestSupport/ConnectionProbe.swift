import CMNL
import Netfilter
#if canImport(Glibc)
import Glibc
#endif

/// Where a probe connection ended up.
public enum Arrival: Equatable, Sendable, CustomStringConvertible {
    /// Accepted by the listener with this label; the addresses as that listener's socket sees them.
    case accepted(listener: String, local: SocketAddress, peer: SocketAddress, originalDestination: SocketAddress?)
    /// Refused, timed out, or accepted by no listener we own.
    case failed(String)

    public var listener: String? {
        if case .accepted(let listener, _, _, _) = self { return listener }
        return nil
    }

    public var description: String {
        switch self {
        case .accepted(let listener, let local, let peer, let original):
            "accepted by \(listener) (local \(local), peer \(peer), original destination \(original.map(\.description) ?? "none"))"
        case .failed(let reason):
            "failed: \(reason)"
        }
    }
}

/// Labeled listening sockets in the sandbox's namespaces, and probe connections that report which
/// listener accepted them: the ground truth capture tests compare against.
public final class ConnectionProbe: @unchecked Sendable {
    private var listeners: [(label: String, socket: ProbeSocket)] = []

    public init() {}

    /// Listens on `address` inside `namespace`; IPv6 listeners are dual-stack.
    public func listen(_ label: String, in namespace: NetworkNamespace, on address: SocketAddress,
                       transparent: Bool = false) throws {
        let socket = try namespace.run {
            try ProbeSocket.listener(on: address, transparent: transparent)
        }
        listeners.append((label, socket))
    }

    /// The capture listeners of a pod: outbound, inbound (transparent in TPROXY mode) on all addresses.
    public func listenLikeTheProxy(in pod: NetworkNamespace, outbound: UInt16 = 15001, inbound: UInt16 = 15006,
                                   tproxy: Bool = false) throws {
        try listen("outbound", in: pod, on: SocketAddress(IPAddress("::")!, outbound))
        try listen("inbound", in: pod, on: SocketAddress(IPAddress("::")!, inbound), transparent: tproxy)
    }

    /// Connects from `namespace` as `uid`/`gid` (the socket's owner, which capture rules match on),
    /// optionally from `source`, and reports which of our listeners accepted the connection.
    public func connect(to target: SocketAddress, from namespace: NetworkNamespace, uid: UInt32 = 0, gid: UInt32 = 0,
                        source: IPAddress? = nil, timeoutMilliseconds: Int32 = 2000) -> Arrival {
        let client: ProbeSocket
        do {
            client = try ProbeSocket.tcp(target.address.family, in: namespace, uid: uid, gid: gid)
            if let source { try client.bind(SocketAddress(source, 0)) }
            try client.connect(to: target, timeoutMilliseconds: timeoutMilliseconds)
        } catch {
            return .failed("\(error)")
        }
        let clientAddress = client.localAddress
        for _ in 0..<50 {
            for (label, listener) in listeners {
                guard let accepted = try? listener.accept(timeoutMilliseconds: 0) else { continue }
                guard let local = accepted.localAddress, let peer = accepted.peerAddress else { continue }
                // Only the connection this probe made counts.
                guard peer.port == clientAddress?.port else { continue }
                return .accepted(listener: label, local: local, peer: peer, originalDestination: accepted.originalDestination)
            }
            usleep(20_000)
        }
        return .failed("connected, but none of the probe's listeners accepted the connection")
    }
}
