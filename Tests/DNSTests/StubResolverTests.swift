import DNS
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// The stub resolver against scripted nameservers on loopback: CNAME chains and TTLs, truncation retried
/// over TCP, silent and failing nameservers passed over, NXDOMAIN.
@Suite struct StubResolverTests {
    static func name(_ text: String) -> DNSName { try! DNSName(text) }

    static func resolver(_ servers: [ScriptedNameserver], timeout: TimeAmount = .milliseconds(300), attempts: Int = 1) -> StubResolver {
        StubResolver(configuration: ResolverConfiguration(nameservers: servers.map { HostAddress($0.host)! }, port: servers[0].port,
                                                          timeout: timeout, attempts: attempts))
    }

    @Test func followsCNAMEChainsAndKeepsTheSmallestTTL() async throws {
        let server = try await ScriptedNameserver { query, _ in
            let question = query.questions[0]
            guard question.type == .a else { return ScriptedNameserver.reply(query) }
            return ScriptedNameserver.reply(query, answers: [
                DNSResourceRecord(name: question.name, ttl: 30, data: .cname(Self.name("edge.example"))),
                DNSResourceRecord(name: Self.name("edge.example"), ttl: 300, data: .a(HostAddress("192.0.2.7")!)),
                DNSResourceRecord(name: Self.name("edge.example"), ttl: 20, data: .a(HostAddress("192.0.2.8")!)),
                DNSResourceRecord(name: Self.name("unrelated.example"), ttl: 5, data: .a(HostAddress("192.0.2.9")!)),
            ])
        }
        defer { Task { await server.close() } }
        let resolution = try await Self.resolver([server]).resolve("app.example")
        #expect(resolution.canonicalName == Self.name("edge.example"))
        #expect(resolution.addresses == [.init(address: HostAddress("192.0.2.7")!, ttl: 30),
                                         .init(address: HostAddress("192.0.2.8")!, ttl: 20)])
        #expect(resolution.minimumTTL == 20)
    }

    @Test func truncatedAnswersAreAskedAgainOverTCP() async throws {
        let tcpQueries = Atomic<Int>(0)
        let many = (1...100).map { DNSResourceRecord(name: Self.name("big.example"), ttl: 60, data: .a(.ipv4(0xC633_6400 + UInt32($0)))) }
        let server = try await ScriptedNameserver { query, overTCP in
            guard overTCP else { return ScriptedNameserver.reply(query, truncated: true) }
            tcpQueries.add(1, ordering: .relaxed)
            return ScriptedNameserver.reply(query, answers: many)
        }
        defer { Task { await server.close() } }
        let resolution = try await Self.resolver([server]).resolve("big.example", families: .ipv4)
        #expect(resolution.addresses.count == 100)
        #expect(tcpQueries.load(ordering: .relaxed) == 1)
    }

    @Test func silentAndFailingNameserversArePassedOver() async throws {
        let silent = try await ScriptedNameserver(host: "127.0.0.1") { _, _ in nil }
        let failing = try await ScriptedNameserver(host: "127.0.0.2", port: silent.port) { query, _ in
            ScriptedNameserver.reply(query, code: .serverFailure)
        }
        let working = try await ScriptedNameserver(host: "127.0.0.3", port: silent.port) { query, _ in
            ScriptedNameserver.reply(query, answers: query.questions[0].type == .aaaa
                ? [DNSResourceRecord(name: query.questions[0].name, ttl: 9, data: .aaaa(HostAddress("2001:db8::9")!))] : [])
        }
        defer { Task { await silent.close(); await failing.close(); await working.close() } }
        let clock = ContinuousClock()
        let start = clock.now
        let resolution = try await Self.resolver([silent, failing, working], timeout: .milliseconds(200)).resolve("v6.example")
        #expect(resolution.addresses == [.init(address: HostAddress("2001:db8::9")!, ttl: 9)])
        #expect(clock.now - start >= .milliseconds(200))
    }

    @Test func nxdomainAndSilenceAreErrors() async throws {
        let missing = try await ScriptedNameserver { query, _ in ScriptedNameserver.reply(query, code: .nameError) }
        defer { Task { await missing.close() } }
        await #expect(throws: DNSResolutionError.nameError("nowhere.example")) {
            try await Self.resolver([missing]).resolve("nowhere.example")
        }
        let silent = try await ScriptedNameserver { _, _ in nil }
        defer { Task { await silent.close() } }
        do {
            _ = try await Self.resolver([silent], timeout: .milliseconds(100), attempts: 2).resolve("quiet.example")
            Issue.record("a silent nameserver resolved")
        } catch {
            guard case .unreachable(_, .timedOut) = error else { Issue.record("unexpected \(error)"); return }
        }
    }

    @Test func exchangePassesTheQueryThroughUnchanged() async throws {
        let seen = Mutex<[DNSMessage]>([])
        let server = try await ScriptedNameserver { query, _ in
            seen.withLock { $0.append(query) }
            return ScriptedNameserver.reply(query)
        }
        defer { Task { await server.close() } }
        var query = DNSMessage.query(id: 4242, name: Self.name("Mixed.Case.example"), type: .txt, udpPayloadSize: 4000)
        query.header.checkingDisabled = true
        let bytes = try query.encoded()
        let response = try await Self.resolver([server]).exchange(ByteBuffer(bytes: bytes), on: MultiThreadedEventLoopGroup.singleton.next()).get()
        #expect(seen.withLock { $0 } == [query])
        #expect(try DNSMessage(decoding: Array(response.readableBytesView)).header.id == 4242)
    }

    @Test func resolvConfIsReadAsGlibcDoes() {
        let configuration = ResolverConfiguration(parsing: """
            # generated
            nameserver 10.96.0.10
            nameserver fe80::1%eth0
            nameserver not-an-address
            search default.svc.cluster.local svc.cluster.local cluster.local
            options ndots:5 timeout:2 attempts:3 rotate
            """)
        #expect(configuration.nameservers == [HostAddress("10.96.0.10")!, HostAddress("fe80::1")!])
        #expect(configuration.searchDomains == ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"])
        #expect(configuration.ndots == 5)
        #expect(configuration.timeout == .seconds(2))
        #expect(configuration.attempts == 3)
    }
}
