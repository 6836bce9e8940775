#if canImport(Glibc)
import Glibc
#endif
import Configuration
import NIOCore
import NIOPosix
import SwiftProtobuf
import XDS

/// A cluster's `upstream_connection_options.tcp_keepalive`: keepalive probes on its upstream sockets
/// (SO_KEEPALIVE is on for all of them anyway), with the kernel's timing replaced where given.
struct TCPKeepalive: Sendable, Equatable {
    /// `keepalive_probes`: unanswered probes before the connection is dropped (TCP_KEEPCNT).
    var probes: Int?
    /// `keepalive_time`: idle seconds before the first probe (TCP_KEEPIDLE).
    var time: Int?
    /// `keepalive_interval`: seconds between probes (TCP_KEEPINTVL).
    var interval: Int?

    /// Refuses values Linux would refuse when the socket is made (a 0, or above 127 probes or 32,767 s),
    /// so a cluster that is accepted can always connect.
    static func decode(_ proto: Envoy_Config_Core_V3_TcpKeepalive, path: String) throws(ConfigError) -> TCPKeepalive {
        func value(_ given: Bool, _ wrapper: Google_Protobuf_UInt32Value, _ field: String, limit: UInt32) throws(ConfigError) -> Int? {
            guard given else { return nil }
            guard (1...limit).contains(wrapper.value) else {
                throw ConfigError(path: "\(path).\(field)", message: "\(wrapper.value) is not in 1-\(limit), what Linux takes")
            }
            return Int(wrapper.value)
        }
        return TCPKeepalive(probes: try value(proto.hasKeepaliveProbes, proto.keepaliveProbes, "keepalive_probes", limit: 127),
                            time: try value(proto.hasKeepaliveTime, proto.keepaliveTime, "keepalive_time", limit: 32_767),
                            interval: try value(proto.hasKeepaliveInterval, proto.keepaliveInterval, "keepalive_interval", limit: 32_767))
    }

    /// The TCP-level socket options that carry the given values.
    var socketOptions: [(option: ChannelOptions.Types.SocketOption, value: SocketOptionValue)] {
        [(TCP_KEEPCNT, probes), (TCP_KEEPIDLE, time), (TCP_KEEPINTVL, interval)].compactMap { name, value in
            value.map { (.tcpOption(NIOBSDSocket.Option(rawValue: CInt(name))), SocketOptionValue($0)) }
        }
    }
}

extension ClientBootstrap {
    /// This bootstrap with `keepalive`'s timing on the TCP sockets it makes to `address` (nil: the
    /// kernel's); a Unix socket (a pipe endpoint) has no TCP options, so none are set on it.
    func keepalive(_ keepalive: TCPKeepalive?, to address: SocketAddress) -> ClientBootstrap {
        if case .unixDomainSocket = address { return self }
        var bootstrap = self
        for (option, value) in keepalive?.socketOptions ?? [] { bootstrap = bootstrap.channelOption(option, value: value) }
        return bootstrap
    }
}
