import Crypto

/// How `capstan control-plane`'s CA knows who is asking, for VMs and tests (Kubernetes would use service
/// account tokens): a file of lines `TOKEN NAMESPACE/SERVICE_ACCOUNT`; `#` comments and blank lines are
/// ignored. Tokens are kept as SHA-256 digests and compared in constant time; no error, description or
/// mirror shows a token, only its line.
public struct CallerTokens: Sendable {
    private struct Entry: Sendable {
        let digest: SHA256Digest
        let namespace: String
        let serviceAccount: String
    }

    private let entries: [Entry]
    /// Where the tokens came from, for messages.
    public let source: String

    /// Tokens shorter than this could be guessed.
    public static let minimumTokenLength = 16

    /// Reads the tokens file at `path`.
    public init(contentsOf path: String) throws(CallerTokensError) {
        let text: String
        do {
            text = try CredentialFile.read(path)
        } catch {
            throw .unreadable(error)
        }
        try self.init(parsing: text, source: path)
    }

    /// Parses tokens file text; `source` names it in errors (`source:line: reason`). A file with no token is
    /// refused: a CA nobody can call is a misconfiguration.
    public init(parsing text: String, source: String) throws(CallerTokensError) {
        var entries: [Entry] = []
        var lineOfDigest: [SHA256Digest: Int] = [:]
        let blank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" }
        // "\r\n" is one Character in Swift: split on it too.
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
        for (index, rawLine) in lines.enumerated() {
            let line = index + 1
            guard let start = rawLine.firstIndex(where: { !blank($0) }), let end = rawLine.lastIndex(where: { !blank($0) }) else { continue }
            let content = rawLine[start...end]
            if content.hasPrefix("#") { continue }
            let fields = content.split(whereSeparator: blank)
            guard fields.count == 2 else {
                throw .malformed(source: source, line: line, reason: "expected TOKEN NAMESPACE/SERVICE_ACCOUNT, found \(fields.count) field\(fields.count == 1 ? "" : "s")")
            }
            let token = fields[0]
            guard token.unicodeScalars.allSatisfy({ (0x21...0x7e).contains($0.value) }) else {
                throw .malformed(source: source, line: line, reason: "the token has a character outside printable ASCII")
            }
            guard token.utf8.count >= Self.minimumTokenLength else {
                throw .malformed(source: source, line: line, reason: "the token has \(token.utf8.count) characters, at least \(Self.minimumTokenLength) are required")
            }
            let parts = fields[1].split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                throw .malformed(source: source, line: line, reason: "\"\(fields[1])\" is not NAMESPACE/SERVICE_ACCOUNT")
            }
            do {
                try WorkloadIdentity.checkName(String(parts[0]), as: "namespace")
                try WorkloadIdentity.checkName(String(parts[1]), as: "service account")
            } catch {
                throw .malformed(source: source, line: line, reason: error.description)
            }
            let digest = SHA256.hash(data: Array(token.utf8))
            if let first = lineOfDigest[digest] {
                throw .malformed(source: source, line: line, reason: "the token is already given on line \(first)")
            }
            lineOfDigest[digest] = line
            entries.append(Entry(digest: digest, namespace: String(parts[0]), serviceAccount: String(parts[1])))
        }
        guard !entries.isEmpty else { throw .noTokens(source: source) }
        self.entries = entries
        self.source = source
    }

    /// The identity `token` stands for in `trustDomain`, or nil if no line has it. Every entry is compared,
    /// in constant time, so the answer's timing does not tell how much of a token was right.
    public func identity(for token: String, trustDomain: String) throws(WorkloadIdentityError) -> WorkloadIdentity? {
        let digest = SHA256.hash(data: Array(token.utf8))
        var match: Entry?
        for entry in entries where entry.digest == digest {  // SHA256Digest's == is constant-time
            match = entry
        }
        guard let match else { return nil }
        return try WorkloadIdentity(trustDomain: trustDomain, namespace: match.namespace, serviceAccount: match.serviceAccount)
    }

    /// How many tokens there are.
    public var count: Int { entries.count }
}

extension CallerTokens: CustomStringConvertible, CustomReflectable {
    public var description: String { "CallerTokens(\(entries.count) from \(source))" }
    /// No children: `dump` must not reach the digests.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// Why a tokens file was refused; names the file and line, never the token.
public enum CallerTokensError: Error, Equatable, Sendable, CustomStringConvertible {
    case unreadable(CredentialFileError)
    case malformed(source: String, line: Int, reason: String)
    case noTokens(source: String)

    public var description: String {
        switch self {
        case .unreadable(let error): "caller tokens: \(error)"
        case .malformed(let source, let line, let reason): "\(source):\(line): \(reason)"
        case .noTokens(let source): "\(source): no token in it (lines are TOKEN NAMESPACE/SERVICE_ACCOUNT)"
        }
    }
}
