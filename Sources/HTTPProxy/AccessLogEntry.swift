#if canImport(Glibc)
import Glibc
#endif
import HTTPTypes
import NIOCore

/// One request as its access log line is rendered from it: the stream's record, the downstream
/// connection, and the wall-clock time the request started (the record keeps monotonic time).
public struct AccessLogEntry: Sendable {
    public var record: HTTPStreamRecord
    public var connection: DownstreamConnectionInfo
    /// When the request started, in seconds and nanoseconds since the epoch.
    public var startSeconds: Int
    public var startNanoseconds: Int

    public init(record: HTTPStreamRecord, connection: DownstreamConnectionInfo, startSeconds: Int, startNanoseconds: Int) {
        self.record = record
        self.connection = connection
        self.startSeconds = startSeconds
        self.startNanoseconds = startNanoseconds
    }

    /// The entry of a request that ends now: its wall-clock start is the real-time clock now, less how long
    /// ago (monotonic) it started.
    public init(record: HTTPStreamRecord, connection: DownstreamConnectionInfo) {
        var clock = timespec()
        clock_gettime(CLOCK_REALTIME, &clock)
        let ago = max(0, (NIODeadline.now() - record.start).nanoseconds)
        let now = Int64(clock.tv_sec) * 1_000_000_000 + Int64(clock.tv_nsec)
        let start = now - ago
        self.init(record: record, connection: connection, startSeconds: Int(start / 1_000_000_000),
                  startNanoseconds: Int(start % 1_000_000_000))
    }

    /// An operator's value for this request.
    enum Value {
        case absent
        case text(String)
        case number(Int)
    }

    func value(of op: AccessLogCommand.Operator) -> Value {
        switch op {
        case .startTime: return .absent  // rendered by its format, not here
        case .requestHeader(let header, let alternative):
            return text(requestHeader(header) ?? alternative.flatMap(requestHeader))
        case .responseHeader(let header, let alternative):
            return text(responseField(header, in: record.responseHeaders) ?? alternative.flatMap { responseField($0, in: record.responseHeaders) })
        case .responseTrailer(let header, let alternative):
            return text(responseField(header, in: record.responseTrailers) ?? alternative.flatMap { responseField($0, in: record.responseTrailers) })
        case .protocol: return .text(record.requestProtocol)
        case .responseCode: return .number(record.responseCode)
        case .responseFlags: return .text(record.flags.description)
        case .responseCodeDetails: return text(record.responseCodeDetails)
        case .bytesReceived: return .number(record.requestBodyBytes)
        case .bytesSent: return .number(record.responseBodyBytes)
        case .duration: return milliseconds(from: record.start, to: record.end)
        case .requestDuration: return milliseconds(from: record.start, to: record.requestEnd)
        case .responseDuration: return milliseconds(from: record.start, to: record.upstreamResponseStart)
        case .responseTransmitDuration:
            guard let first = record.upstreamResponseStart else { return .absent }
            return milliseconds(from: first, to: record.end)
        case .upstreamHost: return text(record.upstreamHost.map { Self.format($0, port: true) })
        case .upstreamCluster: return record.upstream == nil ? .absent : text(record.cluster)
        case .upstreamLocalAddress: return text(record.upstreamLocalAddress.map { Self.format($0, port: true) })
        case .downstreamLocalAddress: return text(connection.localAddress.map { Self.format($0, port: true) })
        case .downstreamLocalAddressWithoutPort: return text(connection.localAddress.map { Self.format($0, port: false) })
        case .downstreamLocalPort: return connection.localAddress?.port.map { .number($0) } ?? .absent
        case .downstreamRemoteAddress: return text(connection.remoteAddress.map { Self.format($0, port: true) })
        case .downstreamRemoteAddressWithoutPort: return text(connection.remoteAddress.map { Self.format($0, port: false) })
        case .downstreamRemotePort: return connection.remoteAddress?.port.map { .number($0) } ?? .absent
        case .routeName: return text(record.routeName)
        case .downstreamPeerURISAN: return text(connection.peerPrincipal)
        case .requestedServerName: return text(connection.requestedServerName)
        case .downstreamLocalURISAN: return text(connection.localPrincipal)
        case .grpcStatusNumber: return record.grpcStatus.flatMap { Int($0) }.map { .number($0) } ?? .absent
        case .hostname(let name): return .text(name)
        case .withoutData: return .absent
        }
    }

    private func text(_ string: String?) -> Value {
        guard let string, !string.isEmpty else { return .absent }
        return .text(string)
    }

    private func requestHeader(_ header: AccessLogCommand.Header) -> String? {
        switch header {
        case .method: return record.method?.rawValue
        case .path: return record.path
        case .authority: return record.authority
        case .scheme: return record.request?.scheme
        case .field(let name): return record.request?.headerFields[name]
        }
    }

    private func responseField(_ header: AccessLogCommand.Header, in fields: HTTPFields?) -> String? {
        guard case .field(let name) = header else { return nil }
        return fields?[name]
    }

    /// Whole milliseconds, as Envoy prints durations.
    private func milliseconds(from start: NIODeadline, to end: NIODeadline?) -> Value {
        guard let end else { return .absent }
        return .number(Int(max(0, (end - start).nanoseconds) / 1_000_000))
    }

    /// `10.0.0.1:8080`, `[fd00::1]:8080`; without the port, the address alone.
    static func format(_ address: SocketAddress, port: Bool) -> String {
        guard let ip = address.ipAddress else { return address.pathname ?? "-" }
        guard port, let number = address.port else { return ip }
        if case .v6 = address { return "[\(ip)]:\(number)" }
        return "\(ip):\(number)"
    }
}
