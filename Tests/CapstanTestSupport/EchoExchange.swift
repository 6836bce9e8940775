import Netfilter

/// One conversation with an ``EchoServer``: who the server saw, and whether everything came back.
public struct EchoExchange: Sendable, CustomStringConvertible {
    /// The client address the server saw.
    public var peerSeenByServer: String
    /// The address and port the server was reached at (which endpoint answered).
    public var serverAddress: String
    public var sent: [UInt8]
    public var echoed: [UInt8]

    public var intact: Bool { sent == echoed }

    /// Sizes and where the echo first differs; never the bytes themselves.
    public var description: String {
        let mismatch = zip(sent, echoed).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        return "echo exchange with \(peerSeenByServer): sent \(sent.count) bytes, got \(echoed.count) back"
            + (mismatch.map { ", first difference at byte \($0)" } ?? "")
    }

    /// Connects from `namespace` as `uid`/`gid`, sends `payload`, half-closes, and reads until the
    /// server closes.
    public static func run(to target: SocketAddress, from namespace: NetworkNamespace, uid: UInt32 = 1000,
                           gid: UInt32 = 1000, payload: [UInt8]) throws -> EchoExchange {
        let socket = try ProbeSocket.tcp(target.address.family, in: namespace, uid: uid, gid: gid)
        try socket.connect(to: target, timeoutMilliseconds: 2000)
        try socket.sendAll(payload)
        socket.shutdownOutput()
        let received = try socket.receive(count: Int.max, timeoutMilliseconds: 5000)
        guard let newline = received.firstIndex(of: UInt8(ascii: "\n")) else {
            throw SandboxError("no greeting from the echo server (got \(received.count) bytes)")
        }
        let fields = String(decoding: received[..<newline], as: UTF8.self).split(separator: " ")
        func field(_ name: String) -> String {
            fields.first { $0.hasPrefix(name + "=") }.map { String($0.dropFirst(name.count + 1)) } ?? ""
        }
        return EchoExchange(peerSeenByServer: field("peer"), serverAddress: field("local"), sent: payload,
                            echoed: Array(received[(newline + 1)...]))
    }

    /// A recognizable payload of `count` bytes.
    public static func payload(_ count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 8) }
    }
}
