import Configuration
import Routing
import Testing

/// RE2's semantics, which Envoy's safe_regex promises: whole or partial matches, RE2's syntax, rewrites.
struct RegularExpressionTests {
    @Test(arguments: [
        ("a+", "aaa", true, true),
        ("a+", "baaa", false, true),
        ("[[:digit:]]{3}", "123", true, true),    // POSIX classes, in RE2's syntax
        ("\\d{3}", "12", false, false),
        ("(?i)hello", "HeLLo", true, true),
        ("\\pL+", "héllo", true, true),            // UTF-8 aware
        ("x*", "", true, true),
        ("a.c", "a\nc", false, false),            // `.` does not match a newline unless (?s)
        ("(?s)a.c", "a\nc", true, true),
    ])
    func matches(pattern: String, text: String, whole: Bool, part: Bool) throws {
        let regex = try RegularExpression(pattern, path: "regex")
        #expect(regex.matchesWhole(Substring(text)) == whole)
        #expect(regex.matchesPart(Substring(text)) == part)
    }

    @Test(arguments: ["(a)\\1", "(?<=a)b", "a{1001}", "(", "[z-a]"])
    func refusesWhatRE2Refuses(pattern: String) {
        #expect(throws: ConfigError.self) { try RegularExpression(pattern, path: "x.regex") }
        do { _ = try RegularExpression(pattern, path: "x.regex") } catch {
            #expect(error.path == "x.regex")
            #expect(error.message.contains("not a valid RE2 regular expression"))
        }
    }

    @Test func replacesEveryMatchWithGroups() throws {
        let regex = try RegularExpression("/v([0-9]+)/", path: "r")
        #expect(regex.replacingMatches(in: "/v1/a/v22/b", with: "/version-\\1/") == "/version-1/a/version-22/b")
        #expect(regex.replacingMatches(in: "/none", with: "x") == nil)
    }
}
