import Configuration
import Testing

@Suite struct YAMLDocumentTests {
    @Test func multipleDocumentsWithTheirLinesAndTypedScalars() throws {
        let documents = try YAMLDocument.parseAll("""
            # a comment
            kind: ServiceEntry
            spec:
              ports: [{number: 9080, name: tcp}]
              quoted: "9080"
              flag: true
              none: ~
              ratio: 0.5
              address: 198.51.100.7
            ---
            ---
            kind: WorkloadEntry
            """)
        #expect(documents.map(\.index) == [0, 2])
        // A document starts at its first content, or at its `---`.
        #expect(documents.map(\.line) == [2, 11])
        let spec = try #require(documents.first?.value["spec"])
        #expect(spec["ports"] == .array([.object(["number": .number(9080), "name": .string("tcp")])]))
        #expect(spec["quoted"] == .string("9080"))
        #expect(spec["flag"] == .bool(true))
        #expect(spec["none"] == .null)
        #expect(spec["ratio"] == .number(0.5))
        #expect(spec["address"] == .string("198.51.100.7"))
    }

    @Test func anchorsAndAliasesAreResolved() throws {
        let documents = try YAMLDocument.parseAll("labels: &labels {app: payments}\nselector: *labels\n")
        #expect(documents.first?.value["selector"] == .object(["app": .string("payments")]))
    }

    @Test(arguments: [
        ("a: 1\na: 2\n", "line 2, column 1: key \"a\" appears twice in one mapping"),
        ("a: [1, 2\n", "line 2, column 1: did not find expected ',' or ']'"),
        ("a: *missing\n", "line 1, column 4: alias *missing names no anchor"),
    ])
    func errorsSayWhere(text: String, message: String) {
        #expect(throws: YAMLError.self) { try YAMLDocument.parseAll(text) }
        do {
            _ = try YAMLDocument.parseAll(text)
        } catch {
            #expect(error.description == message)
        }
    }
}
