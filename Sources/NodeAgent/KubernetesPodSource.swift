import Configuration
import HTTPEndpoints
import NIOCore
import NIOHTTP1
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
        let response = try await get(path, token: String(token))
        let status = HTTPResponseStatus(statusCode: response.status)
        switch status {
        case .ok:
            let document: ConfigValue
            do { document = try ConfigValue.parse(json: response.body) } catch {
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

    /// One GET over TLS verified against the cluster CA (read afresh, as the token is), the token as
    /// bearer; an answer of any status, or ``Unavailable`` naming the URL and what went wrong.
    private func get(_ path: String, token: String) async throws -> OneShotHTTPClient.Response {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(caFile)
        let context = try NIOSSLContext(configuration: tls)
        let serverName = IPAddress(host) == nil ? host : nil
        let client = OneShotHTTPClient(timeout: timeout, tls: { channel in
            try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: serverName))
        })
        var headers = HTTPHeaders()
        headers.add(name: "authorization", value: "Bearer \(token)")
        headers.add(name: "accept", value: "application/json")
        do {
            return try await client.request(.GET, host: host, port: port, path: path, headers: headers)
        } catch {
            throw Unavailable(description: error.description)
        }
    }
}
