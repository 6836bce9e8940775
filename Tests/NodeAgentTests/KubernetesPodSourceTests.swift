import CapstanTestSupport
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
@testable import NodeAgent
import Testing

/// The in-cluster source against an HTTPS server with a CA made by the test (openssl), on loopback.
@Suite struct KubernetesPodSourceTests {
    /// A CA, a server certificate for 127.0.0.1 signed by it, and a CA the server does not use.
    final class Credentials {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("capstan-k8s-\(UUID().uuidString)").path

        init() throws {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try "subjectAltName=IP:127.0.0.1\n".write(toFile: "\(directory)/san.ext", atomically: true, encoding: .utf8)
            for arguments in [
                ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key",
                 "-out", "ca.crt", "-subj", "/CN=capstan-test-ca", "-days", "1"],
                ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "other.key",
                 "-out", "other.crt", "-subj", "/CN=other-ca", "-days", "1"],
                ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "server.key",
                 "-out", "server.csr", "-subj", "/CN=kubernetes"],
                ["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "server.crt", "-days", "1", "-extfile", "san.ext"],
            ] {
                try ChildProcess.require("/bin/sh", ["-c", "cd \(directory) && openssl " + arguments.joined(separator: " ") + " 2>/dev/null"])
            }
            try "token-1\n".write(toFile: "\(directory)/token", atomically: true, encoding: .utf8)
        }

        deinit { try? FileManager.default.removeItem(atPath: directory) }
    }

    /// Serves one pod to requests bearing the current token; records the tokens it saw.
    final class FakeAPIServer: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let tokens = NSLock()
        var seen: [String] = []
        let credentials: Credentials

        init(credentials: Credentials) { self.credentials = credentials }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .head(let head) = unwrapInboundIn(data) else { return }
            let token = head.headers["authorization"].first ?? ""
            tokens.withLock { seen.append(token) }
            let expected = "Bearer " + ((try? String(contentsOfFile: "\(credentials.directory)/token", encoding: .utf8)) ?? "")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let (status, body): (HTTPResponseStatus, String) =
                token != expected ? (.unauthorized, #"{"kind":"Status","code":401}"#)
                : head.uri == "/api/v1/namespaces/shop/pods/cart" ? (.ok, """
                    {"kind":"Pod","metadata":{"name":"cart","namespace":"shop",
                     "annotations":{"sidecar.istio.io/interceptionMode":"TPROXY"}},"spec":{}}
                    """)
                : (.notFound, #"{"kind":"Status","code":404}"#)
            var headers = HTTPHeaders()
            headers.add(name: "content-length", value: String(body.utf8.count))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    func withServer(_ body: (Credentials, Int, FakeAPIServer) async throws -> Void) async throws {
        let credentials = try Credentials()
        let api = FakeAPIServer(credentials: credentials)
        let tls = try NIOSSLContext(configuration: .makeServerConfiguration(
            certificateChain: NIOSSLCertificate.fromPEMFile("\(credentials.directory)/server.crt").map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: "\(credentials.directory)/server.key", format: .pem))))
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(api)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        do {
            try await body(credentials, channel.localAddress!.port!, api)
        } catch {
            try? await channel.close()
            throw error
        }
        try await channel.close()
    }

    @Test func readsAnnotationsWithAFreshTokenOverVerifiedTLS() async throws {
        try await withServer { credentials, port, api in
            let source = KubernetesPodSource(host: "127.0.0.1", port: port, tokenFile: "\(credentials.directory)/token",
                                             caFile: "\(credentials.directory)/ca.crt")
            let pod = try #require(try await source.metadata(namespace: "shop", name: "cart"))
            #expect(pod.annotations["sidecar.istio.io/interceptionMode"] == "TPROXY")
            #expect(try await source.metadata(namespace: "shop", name: "gone") == nil)

            // The kubelet rotates the token: the next request carries the new one.
            try "token-2\n".write(toFile: "\(credentials.directory)/token", atomically: true, encoding: .utf8)
            _ = try await source.metadata(namespace: "shop", name: "cart")
            #expect(api.tokens.withLock { api.seen } == ["Bearer token-1", "Bearer token-1", "Bearer token-2"])
        }
    }

    @Test func refusesAServerItsCADidNotSign() async throws {
        try await withServer { credentials, port, api in
            let source = KubernetesPodSource(host: "127.0.0.1", port: port, tokenFile: "\(credentials.directory)/token",
                                             caFile: "\(credentials.directory)/other.crt")
            let error = await #expect(throws: KubernetesPodSource.Unavailable.self) {
                try await source.metadata(namespace: "shop", name: "cart")
            }
            #expect(error?.description.hasPrefix("https://127.0.0.1:\(port)/api/v1/namespaces/shop/pods/cart: ") == true,
                    "\(String(describing: error))")
            // The token never reached a server we could not verify.
            #expect(api.tokens.withLock { api.seen }.isEmpty)
        }
    }

    @Test func inClusterNeedsTheServiceEnvironment() {
        #expect(throws: KubernetesPodSource.Unavailable.self) { try KubernetesPodSource.inCluster(environment: [:]) }
    }
}
