@testable import DataPlane
import NIOCore
import NIOPosix
import NIOSSL
import Testing

/// tls_inspector's decision from a connection's first bytes, and Envoy's filter chain choice with it.
@Suite struct TLSInspectorTests {
    /// The first bytes a real TLS client (NIOSSL, i.e. BoringSSL, as Envoy) sends: its ClientHello.
    func clientHello(alpn: [String], serverName: String) async throws -> ByteBuffer {
        let group = MultiThreadedEventLoopGroup.singleton
        let received = Shared<[UInt8]>([])
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Recorder { bytes in received.value.withLock { $0 += bytes } })
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.applicationProtocols = alpn
        configuration.certificateVerification = .none
        let context = try NIOSSLContext(configuration: configuration)
        let client = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: serverName))
                }
            }
            .connect(to: server.localAddress!).get()
        // The record header says how long the ClientHello is; wait for all of it.
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            let bytes = received.value.withLock { $0 }
            if bytes.count >= 5 && bytes.count >= 5 + (Int(bytes[3]) << 8 | Int(bytes[4])) { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        try? await client.close()
        try? await server.close()
        return ByteBuffer(bytes: received.value.withLock { $0 })
    }

    private final class Recorder: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let record: @Sendable ([UInt8]) -> Void
        init(record: @escaping @Sendable ([UInt8]) -> Void) { self.record = record }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { record(Array(unwrapInboundIn(data).readableBytesView)) }
    }

    @Test func aClientHelloIsTLSWithItsALPN() async throws {
        let sni = "outbound_.9080_._.payments.shop.svc.cluster.local"
        let hello = try await clientHello(alpn: ["istio-peer-exchange", "istio"], serverName: sni)
        let detected = try #require(TLSInspector.inspect(hello, complete: false))
        #expect(detected.transportProtocol == "tls")
        #expect(detected.applicationProtocols == ["istio-peer-exchange", "istio"])
        #expect(detected.serverName == sni)
        // Names are compared lowercased, as Envoy keeps them.
        #expect(try await TLSInspector.inspect(clientHello(alpn: [], serverName: "API.MyApp.com"), complete: false)?.serverName == "api.myapp.com")
        // Part of the record: wait for more, unless no more will come (then TLS without the details).
        let start = hello.getSlice(at: hello.readerIndex, length: 40)!
        #expect(TLSInspector.inspect(start, complete: false) == nil)
        #expect(TLSInspector.inspect(start, complete: true) == TransportDetection(transportProtocol: "tls"))
        #expect(TLSInspector.inspect(hello.getSlice(at: hello.readerIndex, length: 2)!, complete: false) == nil)
        #expect(TLSInspector.inspect(hello.getSlice(at: hello.readerIndex, length: 2)!, complete: true) == .plaintext)
    }

    @Test(arguments: [
        ("GET / HTTP/1.1\r\nHost: payments\r\n\r\n", true),
        ("\u{16}\u{02}", true),          // not version 3.x
        ("\u{16}\u{03}\u{01}\u{00}\u{05}\u{02}", true),  // a handshake record, but not a ClientHello
        ("", false),
    ])
    func otherFirstBytesArePlaintext(text: String, decidedAtOnce: Bool) {
        let bytes = ByteBuffer(string: text)
        #expect((TLSInspector.inspect(bytes, complete: false) != nil) == decidedAtOnce)
        #expect(TLSInspector.inspect(bytes, complete: true) == .plaintext)
    }

    @Test func chainsAreChosenByPortPrefixTransportThenALPNMostSpecificFirst() throws {
        func chain(_ name: String, port: Int? = nil, transport: String? = nil, alpn: [String] = []) -> BootstrapConfig.FilterChain {
            .init(name: name, destinationPort: port, prefixes: [], action: .relay(.cluster(name)), idleTimeout: nil,
                  transportProtocol: transport, applicationProtocols: alpn)
        }
        let listener = BootstrapConfig.Listener(
            name: "virtualInbound", port: 15006, direction: .inbound, transparent: false,
            chains: [chain("mtls", transport: "tls", alpn: ["istio-peer-exchange", "istio"]), chain("tls-passthrough", transport: "tls"),
                     chain("plaintext", transport: "raw_buffer"), chain("port-9080", port: 9080)],
            defaultChain: chain("default"), inspectsTLS: true)
        let http = try SocketAddress(ipAddress: "10.0.0.7", port: 80)
        #expect(listener.chain(for: http, detected: .init(transportProtocol: "tls", applicationProtocols: ["istio"]))?.name == "mtls")
        #expect(listener.chain(for: http, detected: .init(transportProtocol: "tls", applicationProtocols: ["h2"]))?.name == "tls-passthrough")
        #expect(listener.chain(for: http, detected: .plaintext)?.name == "plaintext")
        // A port of its own wins whatever the transport.
        #expect(listener.chain(for: try SocketAddress(ipAddress: "10.0.0.7", port: 9080), detected: .init(transportProtocol: "tls"))?.name == "port-9080")
        // STRICT: without a plaintext chain, plaintext falls to the default chain (none: the connection is closed).
        var strict = listener
        strict.chains.removeAll { $0.name == "plaintext" }
        strict.defaultChain = nil
        #expect(strict.chain(for: http, detected: .plaintext) == nil)
    }

    /// Envoy's `server_names`, between the prefix and the transport protocol: the exact name, else the
    /// nearest wildcard (`*.myapp.com` before `*.com`), else chains without names; a connection without
    /// a name only reaches those.
    @Test func chainsAreChosenByServerNameExactThenNearestWildcard() throws {
        func chain(_ name: String, names: [String] = [], transport: String? = "tls") -> BootstrapConfig.FilterChain {
            var chain = BootstrapConfig.FilterChain(name: name, destinationPort: nil, prefixes: [], action: .relay(.cluster(name)), idleTimeout: nil,
                                                    transportProtocol: transport)
            for name in names {
                if name.hasPrefix("*.") { chain.serverNames.wildcardSuffixes.insert(String(name.dropFirst(2))) } else { chain.serverNames.exact.insert(name) }
            }
            return chain
        }
        let listener = BootstrapConfig.Listener(
            name: "0.0.0.0_443", port: 443, direction: .outbound, transparent: false,
            chains: [chain("any-com", names: ["*.com"]), chain("myapp", names: ["*.myapp.com"]), chain("api", names: ["api.myapp.com", "api.example.org"]),
                     chain("unnamed", transport: nil)],
            defaultChain: nil, inspectsTLS: true)
        let address = try SocketAddress(ipAddress: "10.0.0.7", port: 443)
        func chosen(_ name: String?) -> String? {
            listener.chain(for: address, detected: .init(transportProtocol: "tls", serverName: name))?.name
        }
        #expect(chosen("api.myapp.com") == "api")
        #expect(chosen("api.example.org") == "api")
        #expect(chosen("www.myapp.com") == "myapp")
        #expect(chosen("a.b.myapp.com") == "myapp")
        #expect(chosen("shop.com") == "any-com")
        #expect(chosen("example.net") == "unnamed")
        #expect(chosen(nil) == "unnamed")
    }
}
