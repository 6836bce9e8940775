import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// One active health check request to an endpoint (Envoy's HTTP and gRPC health checkers), sent through
/// the checker's own upstream pools, so its connection is kept for the next check (Envoy's
/// `reuse_connection`) and made as the cluster makes its connections (TLS by `transport_socket_matches`).
/// Used on the pools' event loop.
public enum HealthProbe {
    /// What the endpoint answered, or why it did not.
    public enum Outcome: Sendable, Equatable {
        case healthy
        /// It answered, but not as expected (status, gRPC status or serving status).
        case unhealthy(String)
        /// No answer: the connection failed, was reset, or the check timed out (Envoy's network failure).
        case unreachable(String)
    }

    /// An HTTP/1.1 request whose response status must fall in one of `expected`.
    public static func http(_ request: HTTPRequest, expected: [Range<Int>], to endpoint: UpstreamEndpoint,
                            of cluster: any UpstreamCluster, pools: UpstreamPools, timeout: TimeAmount) -> EventLoopFuture<Outcome> {
        exchange(request, body: nil, version: .http1, to: endpoint, of: cluster, pools: pools, timeout: timeout).map { answer in
            guard let status = answer.status else { return .unreachable("no response") }
            return expected.contains { $0.contains(status) } ? .healthy : .unhealthy("status \(status)")
        }
    }

    /// gRPC's `grpc.health.v1.Health/Check` for `service` over HTTP/2: healthy when it answers SERVING.
    public static func grpc(service: String, authority: String, to endpoint: UpstreamEndpoint, of cluster: any UpstreamCluster,
                            pools: UpstreamPools, timeout: TimeAmount) -> EventLoopFuture<Outcome> {
        var fields = HTTPFields()
        fields[.contentType] = "application/grpc"
        fields[.te] = "trailers"
        let request = HTTPRequest(method: .post, scheme: "http", authority: authority, path: "/grpc.health.v1.Health/Check", headerFields: fields)
        // HealthCheckRequest { string service = 1; }, in a gRPC frame: uncompressed, 4-byte length.
        var message: [UInt8] = []
        if !service.isEmpty {
            message = [0x0A] + varint(UInt64(service.utf8.count)) + Array(service.utf8)
        }
        var body = ByteBuffer()
        body.writeInteger(UInt8(0))
        body.writeInteger(UInt32(message.count))
        body.writeBytes(message)
        return exchange(request, body: body, version: .http2, to: endpoint, of: cluster, pools: pools, timeout: timeout).map { answer in
            guard answer.status == 200 else { return answer.status.map { .unhealthy("status \($0)") } ?? .unreachable("no response") }
            let grpcStatus = answer.trailers?[RequestHeaderNames.grpcStatus] ?? answer.headers?[RequestHeaderNames.grpcStatus]
            guard grpcStatus == "0" else { return .unhealthy("grpc-status \(grpcStatus ?? "missing")") }
            // HealthCheckResponse { ServingStatus status = 1; } after the 5-byte frame header: SERVING is 1.
            var reply = answer.body
            guard reply.readableBytes >= 5, reply.readInteger(as: UInt8.self) == 0, let length = reply.readInteger(as: UInt32.self),
                  let bytes = reply.readBytes(length: Int(length)) else { return .unhealthy("no health check response") }
            return servingStatus(bytes) == 1 ? .healthy : .unhealthy("serving status \(servingStatus(bytes))")
        }
    }

    /// The `status` field of a HealthCheckResponse (0, UNKNOWN, when absent).
    static func servingStatus(_ bytes: [UInt8]) -> UInt64 {
        var index = 0
        var status: UInt64 = 0
        while index < bytes.count {
            let key = bytes[index]
            index += 1
            guard key & 0x07 == 0 else { return 0 }  // only varints are expected here
            var value: UInt64 = 0, shift: UInt64 = 0
            while index < bytes.count {
                let byte = bytes[index]
                index += 1
                value |= UInt64(byte & 0x7F) << shift
                shift += 7
                if byte & 0x80 == 0 { break }
            }
            if key >> 3 == 1 { status = value }
        }
        return status
    }

    private static func varint(_ value: UInt64) -> [UInt8] {
        var value = value
        var bytes: [UInt8] = []
        repeat {
            bytes.append(UInt8(value & 0x7F) | (value > 0x7F ? 0x80 : 0))
            value >>= 7
        } while value > 0
        return bytes
    }

    /// The response to one request, read whole (health check responses are small; the JWT filter's
    /// JWKS fetch uses it too).
    static func exchange(_ request: HTTPRequest, body: ByteBuffer?, version: UpstreamVersion, to endpoint: UpstreamEndpoint,
                                 of cluster: any UpstreamCluster, pools: UpstreamPools, timeout: TimeAmount) -> EventLoopFuture<Answer> {
        let loop = pools.eventLoop
        let promise = loop.makePromise(of: Answer.self)
        let exchange = HealthCheckExchange(promise: promise)
        let deadline = loop.assumeIsolated().scheduleTask(in: timeout) { exchange.timedOut() }
        promise.futureResult.whenComplete { _ in deadline.cancel() }
        pools.stream(to: endpoint, of: cluster, version: version).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let stream):
                exchange.start(on: stream)
                stream.channel.write(HTTPRequestPart.head(request), promise: nil)
                if let body { stream.channel.write(HTTPRequestPart.body(body), promise: nil) }
                stream.channel.writeAndFlush(HTTPRequestPart.end(nil), promise: nil)
            case .failure:
                exchange.finish(reachable: false)
            }
        }
        return promise.futureResult
    }

    struct Answer {
        var status: Int?
        var headers: HTTPFields?
        var body = ByteBuffer()
        var trailers: HTTPFields?
    }

    /// The receiving end of one check's exchange.
    private final class HealthCheckExchange: UpstreamResponseReceiver {
        private let promise: EventLoopPromise<Answer>
        private var answer = Answer()
        private var stream: UpstreamStream?
        private var done = false

        init(promise: EventLoopPromise<Answer>) { self.promise = promise }

        func start(on stream: UpstreamStream) {
            guard !done else { return stream.finish(reusable: true) }  // timed out while connecting
            self.stream = stream
            stream.attach(self)
        }

        func upstreamResponse(_ part: HTTPResponsePart) {
            switch part {
            case .head(let head):
                guard head.status.kind != .informational else { return }
                answer.status = head.status.code
                answer.headers = head.headerFields
            case .body(var bytes):
                // At most 64 KiB kept: enough for any health check response.
                if answer.body.readableBytes < 65_536 { answer.body.writeBuffer(&bytes) }
            case .end(let trailers):
                answer.trailers = trailers
                finish(reachable: true, reusable: !(stream?.forwarder.closesAfterResponse ?? true))
            }
        }

        func upstreamReadComplete() {}
        func upstreamWritabilityChanged(_ writable: Bool) {}

        func upstreamFailed() { finish(reachable: false) }

        func timedOut() { finish(reachable: false) }

        func finish(reachable: Bool, reusable: Bool = false) {
            guard !done else { return }
            done = true
            stream?.finish(reusable: reusable)
            stream = nil
            if !reachable { answer.status = nil }
            promise.succeed(answer)
        }
    }
}
