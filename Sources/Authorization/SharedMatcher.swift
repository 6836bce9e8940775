/// A matcher held by reference in an RBAC rule: a rule that tests it then retains one object, rather
/// than every array and string inside the matcher (a header matcher holds several), on every request.
public final class SharedMatcher<Matcher: Sendable>: Sendable {
    public let matcher: Matcher

    public init(_ matcher: Matcher) { self.matcher = matcher }
}
