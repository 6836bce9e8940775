import Configuration
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Netfilter

/// Pod metadata from the Kubernetes API, as a pod in the cluster reads it: the service account's token
/// (read afresh for every request, since the kubelet rotates it) and the cluster CA, over verified TLS.
public struct KubernetesPodSource: PodMetadataSource {
    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

    public var host: String
    public var port: Int
    public var tokenFile: String
    public var caFile: String
    public var timeout: Duration = .seconds(5)

    public init(host: String, port: Int, tokenFile: String, caFile: String) {
        self.host = host
        self.port = port
        self.tokenFile = tokenFile
        self.caFile = caFile
    }

    public struct Unavailable: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// The API server from `KUBERNETES_SERVICE_HOST`/`_PORT` and the mounted service account.
    public static func inCluster(environment: [String: String] = ProcessEnvironmentReader.all) throws(Unavailable) -> KubernetesPodSource {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], let portText = environment["KUBERNETES_SERVICE_PORT"],
              let port = Int(portText) else {
            throw Unavailable(description: "not in a cluster (KUBERNETES_SERVICE_HOST and _PORT are not set)")
        }
        let source = KubernetesPodSource(host: host, port: port, tokenFile: "\(serviceAccountDirectory)/token",
                                         caFile: "\(serviceAccountDirectory)/ca.crt")
        guard SystemFile.read(source.caFile) != nil else { throw Unavailable(description: "cannot read \(source.caFile)") }
        return source
    }

    public var description: String { "Kubernetes API https://\(host):\(port)" }

    public func metadata(namespace: String, name: String) async throws -> PodMetadata? {
        guard let token = SystemFile.read(tokenFile)?.split(whereSeparator: \.isNewline).first else {
            throw Unavailable(description: "cannot read the service account token \(tokenFile)")
        }
        let path = "/api/v1/namespaces/\(Self.pathSegment(namespace))/pods/\(Self.pathSegment(name))"
        let (status, body) = try await get(path, token: String(token))
        switch status {
        case .ok:
            let document: ConfigValue
            do { document = try ConfigValue.parse(json: body) } catch {
                throw Unavailable(description: "GET \(path): the answer is not JSON")
            }
            return try PodMetadata(pod: ConfigReader(document))
        case .notFound:
            return nil
        default:
            throw Unavailable(description: "GET \(path): \(status.code) \(status.reasonPhrase)")
        }
    }

    /// Names are DNS labels; anything else is percent-escaped rather than trusted into the path.
    private static func pathSegment(_ text: String) -> String {
        let hex = Array("0123456789ABCDEF")
        var escaped = ""
        for byte in text.utf8 {
            if (byte >= 0x61 && byte <= 0x7a) || (byte >= 0x30 && byte <= 0x39) || byte == 0x2d || byte == 0x2e {
                escaped.unicodeScalars.append(UnicodeScalar(byte))
            } else {
                escaped += "%\(hex[Int(byte >> 4)])\(hex[Int(byte & 0x0f)])"
            }
        }
        return escaped
    }

    private func get(_ path: String, token: String) async throws -> (HTTPResponseStatus, String) {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(caFile)
        let context = try NIOSSLContext(configuration: tls)
        let serverName = IPAddress(host) == nil ? host : nil
        let promise = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: (HTTPResponseStatus, String).self)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(TimeAmount(timeout))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let tlsHandler = try NIOSSLClientHandler(context: context, serverHostname: serverName)
                    try channel.pipeline.syncOperations.addHandler(tlsHandler)
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise))
                }
            }
            .connect(host: host, port: port)
            .get()
        var headers = HTTPHeaders()
        headers.add(name: "host", value: "\(host):\(port)")
        headers.add(name: "authorization", value: "Bearer \(token)")
        headers.add(name: "accept", value: "application/json")
        headers.add(name: "connection", value: "close")
        channel.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)),
                      promise: nil)
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        // Closing the connection fails the request, if it has no answer yet.
        let timeoutTask = channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            channel.close(promise: nil)
        }
        defer {
            timeoutTask.cancel()
            channel.close(promise: nil)
        }
        return try await promise.futureResult.get()
    }
}

/// Collects one HTTP response and completes the promise with it (or with the connection's error).
private final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let promise: EventLoopPromise<(HTTPResponseStatus, String)>
    private var status: HTTPResponseStatus?
    private var body: [UInt8] = []
    private var finished = false

    init(promise: EventLoopPromise<(HTTPResponseStatus, String)>) {
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = head.status
        case .body(var buffer): body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            finish(.success((status ?? .internalServerError, String(decoding: body, as: UTF8.self))))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(.failure(error))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(KubernetesPodSource.Unavailable(description: "no complete answer from the API server in time")))
        context.fireChannelInactive()
    }

    private func finish(_ result: Result<(HTTPResponseStatus, String), any Error>) {
        guard !finished else { return }
        finished = true
        promise.completeWith(result)
    }
}

#if canImport(Glibc)
import Glibc
#endif
