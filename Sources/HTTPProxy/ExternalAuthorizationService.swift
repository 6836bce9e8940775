import Authorization
import Configuration
import NIOCore
import XDS

/// The gRPC authorization service an ext_authz filter asks, HTTP or network: one of the proxy's clusters
/// (`grpc_service.envoy_grpc`), the `:authority` and the deadline of each check, and the one call both
/// filters make, `envoy.service.auth.v3.Authorization/Check`.
public struct ExternalAuthorizationService: Sendable, Equatable {
    /// Envoy's default deadline of a check when `grpc_service.timeout` is not given.
    public static let defaultTimeout = TimeAmount.milliseconds(200)
    static let checkPath = "/envoy.service.auth.v3.Authorization/Check"

    /// `envoy_grpc.cluster_name`: the cluster the checks go to.
    public var clusterName: String
    /// `:authority` of the checks (`envoy_grpc.authority`, else the cluster's name, as Envoy's).
    public var authority: String
    /// Each check's deadline; nil: none (a `timeout` of 0).
    public var timeout: TimeAmount?

    public init(clusterName: String, authority: String? = nil, timeout: TimeAmount? = Self.defaultTimeout) {
        self.clusterName = clusterName
        self.authority = authority.flatMap { $0.isEmpty ? nil : $0 } ?? clusterName
        self.timeout = timeout
    }

    /// From a filter's `grpc_service` (at `path`), with its `transport_api_version`: `envoy_grpc` only,
    /// API v3 only.
    public init(_ service: Envoy_Config_Core_V3_GrpcService, apiVersion: Envoy_Config_Core_V3_ApiVersion, path: String) throws(ConfigError) {
        guard case .envoyGrpc(let envoyGRPC)? = service.targetSpecifier else {
            throw ConfigError(path: "\(path).grpc_service.google_grpc", message: "is not supported: give envoy_grpc, a cluster of the proxy's")
        }
        guard !envoyGRPC.clusterName.isEmpty else {
            throw ConfigError(path: "\(path).grpc_service.envoy_grpc.cluster_name", message: "is required")
        }
        switch apiVersion {
        case .v3, .auto: break
        default:
            throw ConfigError(path: "\(path).transport_api_version", message: "must be V3: Capstan speaks envoy.service.auth.v3 only")
        }
        var timeout: TimeAmount? = Self.defaultTimeout
        if service.hasTimeout {
            let duration = service.timeout
            guard duration.seconds >= 0, duration.nanos >= 0 else {
                throw ConfigError(path: "\(path).grpc_service.timeout", message: "must not be negative")
            }
            let nanoseconds = duration.seconds.multipliedReportingOverflow(by: 1_000_000_000)
            timeout = nanoseconds.overflow ? nil : .nanoseconds(nanoseconds.partialValue + Int64(duration.nanos))
            if timeout == .nanoseconds(0) { timeout = nil }
        }
        self.init(clusterName: envoyGRPC.clusterName, authority: envoyGRPC.authority, timeout: timeout)
    }

    /// What every check tells the service of the connection: its peers' addresses and principals.
    public static func checkRequest(for connection: DownstreamConnectionInfo) -> Envoy_Service_Auth_V3_CheckRequest {
        var check = Envoy_Service_Auth_V3_CheckRequest()
        check.attributes.source = peer(connection.remoteAddress, principal: connection.peerPrincipal)
        check.attributes.destination = peer(connection.localAddress, principal: connection.localPrincipal)
        return check
    }

    private static func peer(_ address: SocketAddress?, principal: String?) -> Envoy_Service_Auth_V3_AttributeContext.Peer {
        var peer = Envoy_Service_Auth_V3_AttributeContext.Peer()
        if let address, let ip = address.ipAddress {
            peer.address.socketAddress.address = ip
            peer.address.socketAddress.portValue = UInt32(address.port ?? 0)
        }
        peer.principal = principal ?? ""
        return peer
    }

    /// Checks `check` at an endpoint of `cluster`, from `pools` (the caller's event loop); `completion`
    /// runs once on that loop with the service's answer: nil when the call failed (why, in the string),
    /// else the response. It may run before this returns. The call is returned, to be cancelled.
    public func check(_ check: Envoy_Service_Auth_V3_CheckRequest, cluster: any UpstreamCluster, endpoint: UpstreamEndpoint,
                      pools: UpstreamPools, completion: @escaping (Result<Envoy_Service_Auth_V3_CheckResponse, CheckFailure>) -> Void) -> GRPCUnaryCall? {
        let message: [UInt8]
        do {
            message = try check.serializedBytes()
        } catch {
            cluster.requestEnded(at: endpoint)
            completion(.failure(CheckFailure(reason: "CheckRequest not serialized: \(error)")))
            return nil
        }
        return GRPCUnaryCall(path: Self.checkPath, authority: authority, message: message, timeout: timeout, to: endpoint,
                             of: cluster, pools: pools) { outcome in
            switch outcome {
            case .ok(let bytes):
                guard let response = try? Envoy_Service_Auth_V3_CheckResponse(serializedBytes: bytes) else {
                    return completion(.failure(CheckFailure(reason: "the answer is not a CheckResponse")))
                }
                completion(.success(response))
            case .failed(let reason):
                completion(.failure(CheckFailure(reason: reason)))
            }
        }
    }

    /// Why a check has no answer (unreachable, timed out, not gRPC, not a CheckResponse).
    public struct CheckFailure: Error, Sendable {
        public var reason: String

        public init(reason: String) { self.reason = reason }
    }
}
