import CMNL
import Netfilter

extension ProbeSocket {
    /// A TCP socket in `namespace` owned by `uid`/`gid`: what capture rules match (`meta skuid`) is the
    /// socket's owner, which is the creating thread's filesystem uid/gid. The namespace thread ends right
    /// after, so the ids change nothing else.
    public static func tcp(_ family: AddressFamily, in namespace: NetworkNamespace, uid: UInt32, gid: UInt32) throws -> ProbeSocket {
        try namespace.run {
            setfsgid(__gid_t(gid))
            setfsuid(__uid_t(uid))
            return try ProbeSocket.tcp(family)
        }
    }
}
