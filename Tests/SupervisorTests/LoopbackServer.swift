import CapstanTestSupport
import Glibc
import HTTPEndpoints
import NIOCore
import NIOPosix
import Synchronization

/// A small real HTTP server on 127.0.0.1 and an ephemeral port, standing in for the proxy's admin API
/// or the agent's readiness port in a test.
final class LoopbackServer: Sendable {
    let channel: any Channel
    let port: Int

    init(_ routes: EndpointRoutes, host: String = "127.0.0.1") async throws {
        channel = try await EndpointServer.bind(host: host, port: 0, group: MultiThreadedEventLoopGroup.singleton,
                                                routes: routes).get()
        port = channel.localAddress!.port!
    }

    func close() async {
        try? await channel.close()
    }

    /// A port that was just listened on at `host` and released, for a test that must bind it itself.
    /// Use a loopback address other tests do not bind (127.0.0.2): on 127.0.0.1, parallel tests'
    /// servers are soon handed a released port again.
    static func releasedPort(host: String) async throws -> Int {
        let server = try await LoopbackServer(EndpointRoutes(), host: host)
        await server.close()
        return server.port
    }
}

/// A loopback port held by a socket that is bound but not listening: a connection to it is refused,
/// and no other test is handed the port while this lives.
final class ReservedPort: Sendable {
    let port: Int
    private let descriptor: Int32

    init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw SandboxError("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = in_addr_t(0x7F00_0001).bigEndian
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                bind(descriptor, raw, length) == 0 && getsockname(descriptor, raw, &length) == 0
            }
        }
        guard bound else {
            close(descriptor)
            throw SandboxError("bind 127.0.0.1:0: \(String(cString: strerror(errno)))")
        }
        self.descriptor = descriptor
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { close(descriptor) }
}

/// Counts calls and keeps what they carried, for a fake's routes to record into.
final class CallLog: Sendable {
    private let entries = Mutex<[String]>([])

    func record(_ entry: String) { entries.withLock { $0.append(entry) } }
    var all: [String] { entries.withLock { $0 } }
    var count: Int { all.count }
}

/// Polls `condition` every 10 ms for up to `seconds`.
func eventually(within seconds: Double = 5, _ condition: () -> Bool) async -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + .milliseconds(Int64(seconds * 1000))
    while clock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}
