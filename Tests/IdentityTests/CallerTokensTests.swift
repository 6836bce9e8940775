import Identity
import Testing

@Suite struct CallerTokensTests {
    static let file = """
        # VMs allowed to ask the CA for certificates
        vm-token-0123456789abcdef shop/payments

        \tvm-token-fedcba9876543210\tshop/orders\t\r
        """

    @Test func mapsTokensToIdentities() throws {
        let tokens = try CallerTokens(parsing: Self.file, source: "tokens")
        #expect(tokens.count == 2)
        #expect(try tokens.identity(for: "vm-token-0123456789abcdef", trustDomain: "cluster.local")
                == Fixtures.identity("shop", "payments"))
        #expect(try tokens.identity(for: "vm-token-fedcba9876543210", trustDomain: "example.org")
                == Fixtures.identity("shop", "orders", trustDomain: "example.org"))
        for wrong in ["", "vm-token-0123456789abcde", "vm-token-0123456789abcdef ", "VM-TOKEN-0123456789ABCDEF", "shop/payments"] {
            #expect(try tokens.identity(for: wrong, trustDomain: "cluster.local") == nil, "\(wrong)")
        }
        #expect(throws: WorkloadIdentityError.self) { try tokens.identity(for: "vm-token-0123456789abcdef", trustDomain: "bad domain") }
    }

    @Test(arguments: [
        ("lonely-token-0123456789", "expected TOKEN NAMESPACE/SERVICE_ACCOUNT, found 1 field"),
        ("token-0123456789abcdef shop/payments extra", "found 3 fields"),
        ("token-0123456789abcdef shop", "\"shop\" is not NAMESPACE/SERVICE_ACCOUNT"),
        ("token-0123456789abcdef shop/pay/ments", "is not NAMESPACE/SERVICE_ACCOUNT"),
        ("token-0123456789abcdef shop/", "service account \"\" is empty"),
        ("token-0123456789abcdef sh:op/payments", "namespace \"sh:op\""),
        ("short-secret shop/payments", "the token has 12 characters, at least 16"),
        ("tökén-0123456789abcdef shop/payments", "outside printable ASCII"),
    ])
    func refusesMalformedLinesNamingTheLine(line: String, reason: String) throws {
        let text = "# header\nvalid-token-0123456789 shop/payments\n\(line)\n"
        let error = #expect(throws: CallerTokensError.self) { try CallerTokens(parsing: text, source: "/etc/capstan/tokens") }
        let description = error?.description ?? ""
        #expect(description.hasPrefix("/etc/capstan/tokens:3: "), "\(description)")
        #expect(description.contains(reason), "\(description)")
        // The line is named, the secret is not repeated.
        let token = String(line.split(separator: " ")[0])
        if !reason.contains(token) { #expect(!description.contains(token), "\(description)") }
    }

    @Test func refusesARepeatedTokenWithoutShowingIt() {
        let text = "token-0123456789abcdef shop/a\n\ntoken-0123456789abcdef shop/b\n"
        #expect(throws: CallerTokensError.malformed(source: "t", line: 3, reason: "the token is already given on line 1")) {
            try CallerTokens(parsing: text, source: "t")
        }
    }

    @Test func refusesAFileWithoutTokens() throws {
        #expect(throws: CallerTokensError.noTokens(source: "t")) { try CallerTokens(parsing: "# nobody\n\n", source: "t") }
        let scratch = try Scratch()
        let error = #expect(throws: CallerTokensError.self) { try CallerTokens(contentsOf: scratch.file("absent")) }
        guard case .unreadable(let failure) = error else { Issue.record("expected unreadable, got \(String(describing: error))"); return }
        #expect(failure.isMissing)
    }

    @Test func readsAFileAndNeverShowsTokens() throws {
        let scratch = try Scratch()
        try scratch.write("tokens", Self.file)
        let tokens = try CallerTokens(contentsOf: scratch.file("tokens"))
        #expect(tokens.source == scratch.file("tokens"))
        var dumped = ""
        dump(tokens, to: &dumped)
        for text in [String(describing: tokens), String(reflecting: tokens), dumped] {
            #expect(!text.contains("vm-token"), "\(text)")
        }
    }
}
