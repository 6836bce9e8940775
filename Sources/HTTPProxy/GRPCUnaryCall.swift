import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// One unary gRPC call the proxy makes itself (ext_authz's `Authorization/Check`), sent as Envoy's
/// `envoy_grpc` sends it: over a cluster's own HTTP/2 connections, from the pools of the caller's event
/// loop, so a request never leaves its loop. The message goes in one gRPC frame (uncompressed, 4-byte
/// length), with `grpc-timeout`; the answer is read whole. Used on the pools' event loop only.
public final class GRPCUnaryCall: UpstreamResponseReceiver {
    /// How the call ended.
    enum Outcome: Equatable {
        /// grpc-status 0 and the reply's message (its frame's payload).
        case ok([UInt8])
        /// The service answered with an error, or the call could not be made or finished (unreachable,
        /// reset, timed out, not gRPC): why, for logs and tests.
        case failed(String)
    }

    /// Replies larger than this are refused (Envoy's default max_receive_message_length is unlimited,
    /// but authorization replies are small).
    static let maxReplyBytes = 1 << 20

    private let pools: UpstreamPools
    private let cluster: any UpstreamCluster
    private let endpoint: UpstreamEndpoint
    private var completion: ((Outcome) -> Void)?
    private var done = false
    private var stream: UpstreamStream?
    private var awaited: EventLoopFuture<UpstreamStream>?
    private var deadline: Scheduled<Void>?
    private var status: HTTPResponse.Status?
    private var headers = HTTPFields()
    private var body = ByteBuffer()

    /// Calls `path` (`/package.Service/Method`) at `endpoint` of `cluster` with `message` (its serialized
    /// bytes), within `timeout` (nil: no deadline); `completion` runs once, on the pools' loop, unless
    /// the call is cancelled first. It may run before this returns (no connection to be had).
    init(path: String, authority: String, message: [UInt8], timeout: TimeAmount?, to endpoint: UpstreamEndpoint,
         of cluster: any UpstreamCluster, pools: UpstreamPools, completion: @escaping (Outcome) -> Void) {
        self.pools = pools
        self.cluster = cluster
        self.endpoint = endpoint
        self.completion = completion
        var fields = HTTPFields()
        fields[.contentType] = "application/grpc"
        fields[.te] = "trailers"
        if let timeout { fields[Self.grpcTimeout] = Self.timeoutHeader(timeout) }
        let request = HTTPRequest(method: .post, scheme: "http", authority: authority, path: path, headerFields: fields)
        var frame = ByteBuffer()
        frame.reserveCapacity(5 + message.count)
        frame.writeInteger(UInt8(0))
        frame.writeInteger(UInt32(message.count))
        frame.writeBytes(message)
        let loop = pools.eventLoop
        if let timeout {
            deadline = loop.assumeIsolated().scheduleTask(in: timeout) { [self] in
                deadline = nil
                finish(.failed("timed out after \(timeout.nanoseconds / 1_000_000) ms"), reusable: false)
            }
        }
        let future = pools.stream(to: endpoint, of: cluster, version: .http2)
        awaited = future
        future.assumeIsolated().whenComplete { [self] result in
            awaited = nil
            switch result {
            case .success(let stream):
                guard !done else { return stream.finish(reusable: true) }  // timed out or cancelled meanwhile
                self.stream = stream
                stream.attach(self)
                stream.channel.write(HTTPRequestPart.head(request), promise: nil)
                stream.channel.write(HTTPRequestPart.body(frame), promise: nil)
                stream.channel.writeAndFlush(HTTPRequestPart.end(nil), promise: nil)
            case .failure(let error):
                finish(.failed("no connection to \(cluster.name): \(error)"), reusable: false)
            }
        }
    }

    /// The caller no longer needs the answer (its request ended): the stream is reset, and
    /// `completion` is not called.
    public func cancel() {
        completion = nil
        finish(nil, reusable: false)
    }

    // MARK: UpstreamResponseReceiver

    func upstreamResponse(_ part: HTTPResponsePart) {
        switch part {
        case .head(let head):
            guard head.status.kind != .informational else { return }
            status = head.status
            headers = head.headerFields
        case .body(var bytes):
            guard body.readableBytes + bytes.readableBytes <= Self.maxReplyBytes + 5 else {
                return finish(.failed("reply larger than \(Self.maxReplyBytes) bytes"), reusable: false)
            }
            body.writeBuffer(&bytes)
        case .end(let trailers):
            finish(outcome(trailers: trailers), reusable: true)
        }
    }

    func upstreamReadComplete() {}
    func upstreamWritabilityChanged(_ writable: Bool) {}
    func upstreamFailed() { finish(.failed("the stream to \(cluster.name) was reset"), reusable: false) }

    // MARK: Ending

    /// The complete answer, judged: HTTP 200, grpc-status 0 (in the trailers, or the headers of a
    /// trailers-only answer), and one whole frame.
    private func outcome(trailers: HTTPFields?) -> Outcome {
        guard let status else { return .failed("no response") }
        guard status == .ok else { return .failed("HTTP status \(status.code)") }
        let grpcStatus = trailers?[RequestHeaderNames.grpcStatus] ?? headers[RequestHeaderNames.grpcStatus]
        guard grpcStatus == "0" else {
            let message = trailers?[RequestHeaderNames.grpcMessage] ?? headers[RequestHeaderNames.grpcMessage]
            return .failed("grpc-status \(grpcStatus ?? "missing")\(message.map { ": \($0)" } ?? "")")
        }
        var reply = body
        guard let compressed = reply.readInteger(as: UInt8.self), let length = reply.readInteger(as: UInt32.self),
              let bytes = reply.readBytes(length: Int(length)) else { return .failed("no whole message in the reply") }
        guard compressed == 0 else { return .failed("a compressed reply (none was asked for)") }
        return .ok(bytes)
    }

    private func finish(_ outcome: Outcome?, reusable: Bool) {
        guard !done else { return }
        done = true
        deadline?.cancel()
        deadline = nil
        if let awaited {
            self.awaited = nil
            pools.abandon(awaited, to: endpoint, of: cluster)
        }
        if let stream {
            self.stream = nil
            stream.finish(reusable: reusable)
        }
        cluster.requestEnded(at: endpoint)
        let completion = self.completion
        self.completion = nil
        if let outcome { completion?(outcome) }
    }

    static let grpcTimeout = HTTPField.Name("grpc-timeout")!

    /// gRPC's `grpc-timeout`: at most 8 digits and a unit; milliseconds, as Envoy sends it, rounded up.
    static func timeoutHeader(_ timeout: TimeAmount) -> String {
        let milliseconds = max(0, (timeout.nanoseconds + 999_999) / 1_000_000)
        if milliseconds < 100_000_000 { return "\(milliseconds)m" }
        return "\(min(99_999_999, milliseconds / 1000))S"
    }
}
