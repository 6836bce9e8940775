import Configuration
import XDS

/// One acceptable peer name of a TLS context's validation context: a subject alt name of the given kind
/// whose value matches exactly, by prefix, by suffix or by substring (Envoy's
/// `match_typed_subject_alt_names`, and the deprecated untyped `match_subject_alt_names`, which Envoy
/// compares with the URI and DNS names alike). A peer is accepted when any matcher matches any of its names.
struct SubjectAltNameMatcher: Sendable, Hashable {
    enum Kind: Sendable, Hashable {
        case uri, dns, email, ipAddress
        /// The untyped `match_subject_alt_names`.
        case uriOrDNS
    }

    enum Pattern: Sendable, Hashable {
        case exact(String)
        case prefix(String)
        case suffix(String)
        case contains(String)
    }

    var kind: Kind
    var pattern: Pattern
    var ignoreCase = false

    func matches(_ names: [PeerIdentity.SubjectAltName]) -> Bool {
        names.contains { name in
            switch (kind, name.kind) {
            case (.uriOrDNS, .dns), (.dns, .dns):
                return matches(name.value) || matchesWildcard(name.value)
            case (.uriOrDNS, .uri), (.uri, .uri), (.email, .email), (.ipAddress, .ipAddress):
                return matches(name.value)
            default:
                return false
            }
        }
    }

    /// A certificate's wildcard DNS name (`*.example.com`) against an exact pattern, as Envoy matches
    /// them: the wildcard stands for the pattern's whole first label (`api.example.com`, not
    /// `a.b.example.com`), compared without case as DNS names are.
    private func matchesWildcard(_ value: String) -> Bool {
        guard case .exact(let text) = pattern, value.hasPrefix("*."), let dot = text.firstIndex(of: "."),
              dot != text.startIndex else { return false }
        return text[dot...].lowercased() == value.dropFirst().lowercased()
    }

    /// With `ignoreCase`, the pattern is lowercased once when decoded (``decode(_:path:)``); only the
    /// peer's name is lowercased per connection.
    private func matches(_ value: String) -> Bool {
        let value = ignoreCase ? value.lowercased() : value
        switch pattern {
        case .exact(let text): return value == text
        case .prefix(let text): return value.hasPrefix(text)
        case .suffix(let text): return value.hasSuffix(text)
        case .contains(let text): return value.contains(text)
        }
    }

    /// The matchers of a validation context; `path` is the context's, for errors.
    static func decode(_ context: Envoy_Extensions_TransportSockets_Tls_V3_CertificateValidationContext,
                       path: String) throws(ConfigError) -> [SubjectAltNameMatcher] {
        var matchers: [SubjectAltNameMatcher] = []
        for (index, typed) in context.matchTypedSubjectAltNames.enumerated() {
            let entryPath = "\(path).match_typed_subject_alt_names[\(index)]"
            let kind: Kind
            switch typed.sanType {
            case .uri: kind = .uri
            case .dns: kind = .dns
            case .email: kind = .email
            case .ipAddress: kind = .ipAddress
            default:
                throw ConfigError(path: "\(entryPath).san_type", message: "\(typed.sanType) is not supported (URI, DNS, EMAIL, IP_ADDRESS)")
            }
            guard typed.hasMatcher else { throw ConfigError(path: "\(entryPath).matcher", message: "is required") }
            matchers.append(try matcher(typed.matcher, kind: kind, path: "\(entryPath).matcher"))
        }
        for (index, untyped) in context.matchSubjectAltNames.enumerated() {
            matchers.append(try matcher(untyped, kind: .uriOrDNS, path: "\(path).match_subject_alt_names[\(index)]"))
        }
        return matchers
    }

    private static func matcher(_ proto: Envoy_Type_Matcher_V3_StringMatcher, kind: Kind,
                                path: String) throws(ConfigError) -> SubjectAltNameMatcher {
        let pattern: Pattern
        func folded(_ text: String) -> String { proto.ignoreCase ? text.lowercased() : text }
        switch proto.matchPattern {
        case .exact(let text)?: pattern = .exact(folded(text))
        case .prefix(let text)?: pattern = .prefix(folded(text))
        case .suffix(let text)?: pattern = .suffix(folded(text))
        case .contains(let text)?: pattern = .contains(folded(text))
        case .safeRegex?: throw ConfigError(path: "\(path).safe_regex", message: "is not supported for subject alt names (exact, prefix, suffix or contains)")
        case nil: throw ConfigError(path: path, message: "needs exact, prefix, suffix or contains")
        }
        switch pattern {
        case .exact: break
        case .prefix(let text), .suffix(let text), .contains(let text):
            // Envoy refuses these empty: they would accept any name.
            guard !text.isEmpty else { throw ConfigError(path: path, message: "an empty prefix, suffix or substring would accept any peer") }
        }
        return SubjectAltNameMatcher(kind: kind, pattern: pattern, ignoreCase: proto.ignoreCase)
    }
}
