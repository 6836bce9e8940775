import CProcessIdentity
#if canImport(Glibc)
import Glibc
#endif

/// The uid/gid the proxy runs as: the capture rules let exactly these through uncaptured.
public struct ProxyIdentity: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32

    public init(uid: UInt32 = 1337, gid: UInt32 = 1337) {
        self.uid = uid
        self.gid = gid
    }

    /// A failure to change identity; the proxy must not run as anyone else.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Becomes this identity if the process runs as another one (normally root), keeping CAP_NET_ADMIN
    /// only for TPROXY. Must run before any thread starts. Returns whether anything changed.
    @discardableResult
    public func adopt(keepNetAdmin: Bool) throws(Failure) -> Bool {
        guard getuid() != uid || getgid() != gid || geteuid() != uid else { return false }
        guard capstan_become(uid, gid, keepNetAdmin) == 0 else {
            throw Failure(description: "cannot become uid \(uid) gid \(gid): \(String(cString: strerror(errno)))")
        }
        return true
    }
}
