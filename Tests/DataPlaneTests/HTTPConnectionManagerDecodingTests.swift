import Configuration
@testable import DataPlane
import Foundation
import HTTPProxy
import NIOCore
import Routing
import SwiftProtobuf
import Testing
import XDS

/// The HTTP connection manager as the decoder reads it: Envoy's defaults, the HTTP filters by type (the
/// router last; unknown ones refused unless optional), refusals naming the field, and what is listed as
/// not acted on. Also the upstream side: clusters' HTTP version and per-endpoint transport sockets.
@Suite struct HTTPConnectionManagerDecodingTests {
    typealias Manager = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager
    typealias HTTPFilter = Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpFilter

    static func filter(_ name: String, type: String) -> HTTPFilter {
        .with {
            $0.name = name
            $0.typedConfig.typeURL = "type.googleapis.com/\(type)"
        }
    }

    static let router = filter("envoy.filters.http.router", type: "envoy.extensions.filters.http.router.v3.Router")

    /// What istiod sends, minimally: RDS over ADS and the router.
    static func manager(filters: [HTTPFilter] = [router], _ change: (inout Manager) -> Void = { _ in }) -> Manager {
        var manager = Manager()
        manager.statPrefix = "outbound_0.0.0.0_8080"
        manager.rds.routeConfigName = "8080"
        manager.rds.configSource.ads = .init()
        manager.rds.configSource.resourceApiVersion = .v3
        manager.httpFilters = filters
        change(&manager)
        return manager
    }

    /// A listener named `0.0.0.0_8080` with one chain whose filter is `manager`.
    static func listener(_ manager: Manager, name: String = "0.0.0.0_8080", bindsToPort: Bool = false) throws -> Envoy_Config_Listener_V3_Listener {
        var listener = Envoy_Config_Listener_V3_Listener()
        listener.name = name
        listener.address.socketAddress.address = "0.0.0.0"
        listener.address.socketAddress.portValue = 8080
        if !bindsToPort { listener.bindToPort = Google_Protobuf_BoolValue(false) }
        var filter = Envoy_Config_Listener_V3_Filter()
        filter.name = "envoy.filters.network.http_connection_manager"
        filter.typedConfig = try Google_Protobuf_Any(message: manager)
        var chain = Envoy_Config_Listener_V3_FilterChain()
        chain.filters = [filter]
        listener.filterChains = [chain]
        return listener
    }

    static func decode(_ manager: Manager) throws(ConfigError) -> HTTPConnectionManagerConfig {
        try HTTPConnectionManagerConfig(manager, path: "hcm")
    }

    static func refusal(_ manager: Manager) -> String? {
        do {
            _ = try decode(manager)
            return nil
        } catch {
            return error.description
        }
    }

    @Test func envoysDefaultsApplyToWhatIsNotGiven() throws {
        let config = try Self.decode(Self.manager())
        #expect(config.statPrefix == "outbound_0.0.0.0_8080" && config.codec == .auto && config.discoveredRouteName == "8080")
        #expect(config.serverName == "envoy" && config.generatesRequestID && !config.useRemoteAddress)
        #expect(config.forwardClientCert == .sanitize && !config.normalizesPath && config.upgradeTypes.isEmpty)
        #expect(config.streamIdleTimeout == .seconds(300) && config.requestTimeout == nil && config.requestHeadersTimeout == nil)
        #expect(config.connectionIdleTimeout == .seconds(3600))
        #expect(config.maxRequestHeadersBytes == 60 * 1024 && config.maxHeadersCount == 100)
        #expect(config.maxConcurrentStreams == HTTPConnectionManagerConfig.maxConcurrentStreamsLimit)
        #expect(config.fieldsNotActedOn.isEmpty)
        #expect(config.filters.map(\.name) == ["envoy.filters.http.router"])
        // Compared by the bytes decoded from (deterministic): the same message is the same configuration.
        #expect(try Self.decode(Self.manager()) == config)
        #expect(try Self.decode(Self.manager { $0.serverName = "istio-envoy" }) != config)
    }

    @Test func givenValuesAreTakenAndZeroTimeoutsDisable() throws {
        let config = try Self.decode(Self.manager { manager in
            manager.codecType = .http2
            manager.serverName = "istio-envoy"
            manager.useRemoteAddress = Google_Protobuf_BoolValue(true)
            manager.generateRequestID = Google_Protobuf_BoolValue(false)
            manager.streamIdleTimeout = Google_Protobuf_Duration(seconds: 0)
            manager.requestTimeout = Google_Protobuf_Duration(seconds: 30)
            manager.maxRequestHeadersKb = Google_Protobuf_UInt32Value(96)
            manager.commonHTTPProtocolOptions.idleTimeout = Google_Protobuf_Duration(seconds: 0)
            manager.commonHTTPProtocolOptions.maxHeadersCount = Google_Protobuf_UInt32Value(50)
            manager.http2ProtocolOptions.maxConcurrentStreams = Google_Protobuf_UInt32Value(100)
            manager.forwardClientCertDetails = .appendForward
            manager.setCurrentClientCertDetails.uri = true
            manager.upgradeConfigs = [.with { $0.upgradeType = "websocket" }, .with { $0.upgradeType = "CONNECT"; $0.enabled = Google_Protobuf_BoolValue(false) }]
            manager.normalizePath = Google_Protobuf_BoolValue(true)
        })
        #expect(config.codec == .http2 && config.serverName == "istio-envoy" && config.useRemoteAddress && !config.generatesRequestID)
        #expect(config.streamIdleTimeout == nil && config.requestTimeout == .seconds(30) && config.connectionIdleTimeout == nil)
        #expect(config.maxRequestHeadersBytes == 96 * 1024 && config.maxHeadersCount == 50 && config.maxConcurrentStreams == 100)
        #expect(config.forwardClientCert == .appendForward && config.clientCertDetails.uri && !config.clientCertDetails.subject)
        #expect(config.upgradeTypes == ["websocket"] && config.normalizesPath)
        // WebSocket is tunnelled (CONNECT is disabled here) and request_timeout enforced: nothing is listed.
        #expect(config.fieldsNotActedOn.isEmpty, "\(config.fieldsNotActedOn)")
    }

    @Test func inlineRoutesCompileWithTheListener() throws {
        let config = try Self.decode(Self.manager { manager in
            manager.routeConfig.name = "local"
            manager.routeConfig.virtualHosts = [.with {
                $0.name = "backend"
                $0.domains = ["*"]
                $0.routes = [.with { $0.match.prefix = "/stats/prometheus"; $0.route.cluster = "prometheus_stats" }]
            }]
            manager.routeConfig.validateClusters = Google_Protobuf_BoolValue(true)
        })
        guard case .inline(let table) = config.routes else { Issue.record("not inline"); return }
        #expect(table.name == "local" && config.discoveredRouteName == nil)
        // The table's own fields not acted on, relative to the connection manager.
        #expect(config.fieldsNotActedOn.map(\.path) == ["route_config.validate_clusters"])
    }

    @Test func refusalsNameTheField() throws {
        #expect(Self.refusal(Self.manager { $0.routeSpecifier = nil })
            == "hcm: needs rds or route_config: an http_connection_manager without routes has nowhere to send requests")
        #expect(Self.refusal(Self.manager { $0.scopedRoutes.name = "scopes" })
            == "hcm.scoped_routes: is not supported: Capstan takes routes from rds or route_config")
        #expect(Self.refusal(Self.manager { $0.codecType = .http3 })
            == "hcm.codec_type: HTTP3 is not supported: Capstan speaks HTTP/1.1 and HTTP/2 over TCP")
        #expect(Self.refusal(Self.manager { $0.rds.configSource.apiConfigSource.apiType = .grpc })
            == #"hcm.rds.config_source: only ADS is supported ("ads": {}): Capstan takes routes on its one ADS stream"#)
        #expect(Self.refusal(Self.manager { $0.rds.routeConfigName = "" }) == "hcm.rds.route_config_name: is required")
        #expect(Self.refusal(Self.manager { $0.statPrefix = "" })
            == "hcm.stat_prefix: is required: the connection manager's statistics are named by it")
        #expect(Self.refusal(Self.manager { $0.maxRequestHeadersKb = Google_Protobuf_UInt32Value(0) })
            == "hcm.max_request_headers_kb: 0 is out of range 1-8192")
        // A bad inline route table is refused by its path.
        #expect(Self.refusal(Self.manager { manager in
            manager.routeConfig.virtualHosts = [.with {
                $0.name = "a"
                $0.domains = ["*"]
                $0.routes = [.with { $0.match.path = "/"; $0.directResponse.status = 700 }]
            }]
        })?.hasPrefix("hcm.route_config.virtual_hosts[0].routes[0].direct_response.status") == true)
    }

    @Test func theRouterIsLastAndEveryOtherFilterIsKnownOrOptional() throws {
        let lua = Self.filter("envoy.filters.http.lua", type: "envoy.extensions.filters.http.lua.v3.Lua")
        let proto = try Self.listener(Self.manager(filters: [lua, Self.router]))
        #expect(throws: ConfigError(path: #"listener "0.0.0.0_8080".filter_chains[0].filters[0].typed_config.http_filters[0]"#,
                                    message: #""envoy.filters.http.lua" (envoy.extensions.filters.http.lua.v3.Lua) is not supported: Capstan has envoy.filters.http.router, envoy.filters.http.fault, envoy.filters.http.cors, envoy.filters.http.jwt_authn, envoy.filters.http.rbac, envoy.filters.http.ext_authz, istio.alpn and, not acted on yet, istio.metadata_exchange, envoy.filters.http.grpc_stats, istio.stats"#)) {
            try XDSResourceDecoder.listener(proto)
        }
        // Optional, and unknown: skipped and listed, as Envoy skips it.
        var optional = Self.filter("example.filter", type: "example.v1.Filter")
        optional.isOptional = true
        let listener = try XDSResourceDecoder.listener(try Self.listener(Self.manager(filters: [optional, Self.router])))
        #expect(listener.chains.first?.httpConnectionManager?.filters.map(\.name) == ["envoy.filters.http.router"])
        #expect(listener.fieldsNotActedOn.map { $0.described() } == [
            #"filter_chains[0].filters[0].typed_config.http_filters[0]: accepted, not acted on: "example.filter" (example.v1.Filter) is optional and Capstan does not have it: skipped, as Envoy skips an optional filter it does not know"#,
        ])

        #expect(Self.refusal(Self.manager(filters: [])) == "hcm.http_filters: needs envoy.filters.http.router (envoy.extensions.filters.http.router.v3.Router) as the last HTTP filter: it is what sends requests upstream")
        let fault = Self.filter("envoy.filters.http.fault", type: "envoy.extensions.filters.http.fault.v3.HTTPFault")
        #expect(Self.refusal(Self.manager(filters: [Self.router, fault]))
            == #"hcm.http_filters[1]: "envoy.filters.http.fault" comes after the router ("envoy.filters.http.router"), which must be the last HTTP filter"#)
        // Policy is never skipped, even when optional: requests it would stop would pass.
        var extAuthz = Self.filter("envoy.filters.http.ext_authz", type: "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz")
        extAuthz.isOptional = true
        #expect(Self.refusal(Self.manager(filters: [extAuthz, Self.router]))
            == "hcm.http_filters[0].typed_config.grpc_service: is required: Capstan calls gRPC authorization services only")
        extAuthz.disabled = true
        #expect(Self.refusal(Self.manager(filters: [extAuthz, Self.router]))?.hasPrefix(
            #"hcm.http_filters[0].disabled: is not supported for "envoy.filters.http.ext_authz""#) == true)
        // RBAC enabled per route only would not run where it is meant to.
        var rbac = Self.filter("envoy.filters.http.rbac", type: "envoy.extensions.filters.http.rbac.v3.RBAC")
        rbac.disabled = true
        #expect(Self.refusal(Self.manager(filters: [rbac, Self.router]))?.hasPrefix(
            #"hcm.http_filters[0].disabled: is not supported for "envoy.filters.http.rbac""#) == true)
        // An RBAC filter's xDS matcher form is not evaluated: refused rather than left out.
        var matcherForm = Self.filter("envoy.filters.http.rbac", type: "envoy.extensions.filters.http.rbac.v3.RBAC")
        matcherForm.typedConfig.value = Data([0x22, 0x00])
        #expect(Self.refusal(Self.manager(filters: [matcherForm, Self.router]))?.hasPrefix(
            #"hcm.http_filters[0].typed_config.#4: is not supported"#) == true)
        // The router by name alone, as hand-written bootstraps have it.
        #expect(try Self.decode(Self.manager(filters: [.with { $0.name = "envoy.filters.http.router" }])).filters.count == 1)
    }

    @Test func filtersAreKnownByTheTypeInsideATypedStruct() throws {
        func wrapped<M: SwiftProtobuf.Message>(_ wrapper: M.Type, name: String, type: String) throws -> HTTPFilter {
            var value = Google_Protobuf_Struct()
            value.fields["upstream_discovery"] = Google_Protobuf_Value(listValue: .init())
            let any: Google_Protobuf_Any
            if wrapper == Udpa_Type_V1_TypedStruct.self {
                any = try Google_Protobuf_Any(message: Udpa_Type_V1_TypedStruct.with { $0.typeURL = "type.googleapis.com/\(type)"; $0.value = value })
            } else {
                any = try Google_Protobuf_Any(message: Xds_Type_V3_TypedStruct.with { $0.typeURL = "type.googleapis.com/\(type)"; $0.value = value })
            }
            return .with { $0.name = name; $0.typedConfig = any }
        }
        let config = try Self.decode(Self.manager(filters: [
            try wrapped(Udpa_Type_V1_TypedStruct.self, name: "istio.metadata_exchange", type: "io.istio.http.peer_metadata.Config"),
            try wrapped(Xds_Type_V3_TypedStruct.self, name: "istio.stats", type: "stats.PluginConfig"),
            Self.router,
        ]))
        #expect(config.filters.map(\.typeURL) == ["type.googleapis.com/io.istio.http.peer_metadata.Config", "type.googleapis.com/stats.PluginConfig",
                                                  "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"])
        #expect(config.fieldsNotActedOn.map(\.path) == ["http_filters[0]", "http_filters[1]"])
        // A Lua filter in a TypedStruct is still Lua.
        #expect(Self.refusal(Self.manager(filters: [try wrapped(Udpa_Type_V1_TypedStruct.self, name: "lua", type: "envoy.extensions.filters.http.lua.v3.Lua"),
                                                   Self.router]))?.hasPrefix(#"hcm.http_filters[0]: "lua" (envoy.extensions.filters.http.lua.v3.Lua) is not supported"#) == true)
    }

    @Test func whatIsGivenButNotActedOnIsListed() throws {
        let config = try Self.decode(Self.manager { manager in
            manager.tracing = .init()
            manager.accessLog = [.with { $0.name = "envoy.access_loggers.http_grpc"; $0.typedConfig.typeURL = "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig" }]
            manager.requestIDExtension.typedConfig.typeURL = "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig"
            manager.xffNumTrustedHops = 1
            manager.mergeSlashes = true
            manager.pathWithEscapedSlashesAction = .unescapeAndRedirect
            manager.http2ProtocolOptions.maxConcurrentStreams = Google_Protobuf_UInt32Value(100_000)
            manager.http2ProtocolOptions.initialStreamWindowSize = Google_Protobuf_UInt32Value(65536)
            manager.commonHTTPProtocolOptions.headersWithUnderscoresAction = .rejectRequest
            manager.serverHeaderTransformation = .passThrough
        })
        #expect(config.maxConcurrentStreams == 1024)
        #expect(config.fieldsNotActedOn.map(\.path).sorted() == [
            "access_log[0]", "common_http_protocol_options.headers_with_underscores_action",
            "http2_protocol_options.initial_stream_window_size", "http2_protocol_options.max_concurrent_streams",
            "merge_slashes", "path_with_escaped_slashes_action",
            "request_id_extension", "server_header_transformation", "tracing", "xff_num_trusted_hops",
        ])
        #expect(config.fieldsNotActedOn.first { $0.path == "access_log[0]" }?.reason
            == #"Capstan writes file, stdout and stderr access logs only: "envoy.access_loggers.http_grpc" (envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig) writes nothing"#)
    }

    /// Leading network filters istiod sends are listed or, RBAC, acted on; other policy filters are refused.
    @Test func networkFiltersBeforeTheTerminalOneAreIstiosOrRefused() throws {
        var proto = try Self.listener(Self.manager())
        var stats = Envoy_Config_Listener_V3_Filter()
        stats.name = "istio.stats"
        stats.typedConfig.typeURL = "type.googleapis.com/stats.PluginConfig"
        proto.filterChains[0].filters.insert(stats, at: 0)
        let listener = try XDSResourceDecoder.listener(proto)
        #expect(listener.chains.first?.httpConnectionManager != nil && listener.chains.first?.terminalFilterIndex == 1)
        #expect(listener.fieldsNotActedOn.map(\.path) == ["filter_chains[0].filters[0]"])
        var rbac = Envoy_Config_Listener_V3_Filter()
        rbac.name = "envoy.filters.network.rbac"
        rbac.typedConfig = try Google_Protobuf_Any(message: Envoy_Extensions_Filters_Network_Rbac_V3_RBAC.with {
            $0.statPrefix = "tcp."
            $0.rules.policies["p"] = .with { $0.permissions = [.with { $0.destinationPort = 8080 }]; $0.principals = [.with { $0.any = true }] }
        })
        proto.filterChains[0].filters[0] = rbac
        let authorized = try XDSResourceDecoder.listener(proto)
        #expect(authorized.chains.first?.authorization.engines.first?.statNames.allowed == "tcp.rbac.allowed")
        var extAuthz = Envoy_Config_Listener_V3_Filter()
        extAuthz.name = "envoy.filters.network.ext_authz"
        extAuthz.typedConfig.typeURL = "type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz"
        proto.filterChains[0].filters[0] = extAuthz
        #expect(throws: ConfigError.self) { try XDSResourceDecoder.listener(proto) }
    }

    @Test func twoListenersThatDoNotBindMayShareAPortButNotAnAddress() throws {
        func packed(_ name: String, _ address: String) throws -> Google_Protobuf_Any {
            var listener = try Self.listener(Self.manager(), name: name)
            listener.address.socketAddress.address = address
            return try .packed(listener, as: .listener)
        }
        let decoded = try XDSResourceDecoder.listeners([try packed("0.0.0.0_8080", "0.0.0.0"), try packed("10.96.0.5_8080", "10.96.0.5")])
        #expect(decoded.map(\.host) == ["0.0.0.0", "10.96.0.5"])
        #expect(throws: ConfigError.self) {
            try XDSResourceDecoder.listeners([try packed("a", "10.96.0.5"), try packed("b", "10.96.0.5")])
        }
    }

    @Test func theHandOffFollowsEnvoy() throws {
        func listener(_ name: String, _ host: String, _ port: Int, binds: Bool = false, handsOff: Bool = false) -> BootstrapConfig.Listener {
            BootstrapConfig.Listener(name: name, port: port, direction: .outbound, transparent: false, chains: [], defaultChain: nil,
                                     host: host, bindsToPort: binds, usesOriginalDestination: handsOff)
        }
        let config = BootstrapConfig(listeners: [listener("virtualOutbound", "0.0.0.0", 15001, binds: true, handsOff: true),
                                                 listener("plain", "0.0.0.0", 15002, binds: true),
                                                 listener("0.0.0.0_8080", "0.0.0.0", 8080), listener("10.96.0.5_8080", "10.96.0.5", 8080),
                                                 listener("[::]_9090", "::", 9090), listener("2001:db8::5_9090", "2001:db8::5", 9090)],
                                     clusters: [], adminPort: nil, dynamicResources: nil, warnings: [])
        let runtime = ProxyRuntime(options: ProxyOptions(), config: config)
        func served(_ ip: String, _ port: Int, by accepting: String = "virtualOutbound") throws -> String {
            runtime.listener(handingOff: accepting, destination: try SocketAddress(ipAddress: ip, port: port), in: runtime.configuration)
        }
        #expect(try served("10.96.0.5", 8080) == "10.96.0.5_8080")
        #expect(try served("::ffff:10.96.0.5", 8080) == "10.96.0.5_8080")
        #expect(try served("10.96.0.6", 8080) == "0.0.0.0_8080")
        #expect(try served("2001:db8::5", 9090) == "2001:db8::5_9090")
        #expect(try served("2001:db8::6", 9090) == "[::]_9090")
        // 0.0.0.0 is IPv4's, :: IPv6's, as in Envoy.
        #expect(try served("2001:db8::6", 8080) == "virtualOutbound")
        #expect(try served("10.96.0.6", 9090) == "virtualOutbound")
        #expect(try served("10.96.0.5", 8080, by: "plain") == "plain")
    }

    // MARK: Clusters

    @Test func upstreamHTTPOptionsChooseTheVersionAndTheRestIsListed() throws {
        func cluster(_ options: [String: Envoy_Extensions_Upstreams_Http_V3_HttpProtocolOptions],
                     other: [String: Google_Protobuf_Any] = [:]) throws -> BootstrapConfig.Cluster {
            var proto = Envoy_Config_Cluster_V3_Cluster()
            proto.name = "svc"
            proto.type = .originalDst
            proto.lbPolicy = .clusterProvided
            for (key, value) in options { proto.typedExtensionProtocolOptions[key] = try Google_Protobuf_Any(message: value) }
            for (key, value) in other { proto.typedExtensionProtocolOptions[key] = value }
            return try XDSResourceDecoder.cluster(proto).cluster
        }
        let key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        #expect(try cluster([:]).upstreamHTTP == .http1)
        let http2 = try cluster([key: .with { $0.explicitHTTPConfig.http2ProtocolOptions = .init() }])
        #expect(http2.upstreamHTTP == .http2 && http2.fieldsNotActedOn.isEmpty)
        let downstream = try cluster([key: .with {
            $0.useDownstreamProtocolConfig.httpProtocolOptions = .init()
            $0.useDownstreamProtocolConfig.http2ProtocolOptions = .init()
            $0.commonHTTPProtocolOptions.idleTimeout = Google_Protobuf_Duration(seconds: 300)
            $0.commonHTTPProtocolOptions.maxRequestsPerConnection = Google_Protobuf_UInt32Value(1)
            $0.commonHTTPProtocolOptions.maxConnectionDuration = Google_Protobuf_Duration(seconds: 60)
        }])
        #expect(downstream.upstreamHTTP == .downstream && downstream.upstreamIdleTimeout == .seconds(300) && downstream.maxRequestsPerConnection == 1)
        #expect(downstream.fieldsNotActedOn.map(\.path) == [#"typed_extension_protocol_options["\#(key)"].common_http_protocol_options.max_connection_duration"#])
        let automatic = try cluster([key: .with { $0.autoConfig = .init() }])
        #expect(automatic.upstreamHTTP == .http1 && automatic.fieldsNotActedOn.map(\.path) == [#"typed_extension_protocol_options["\#(key)"].auto_config"#])
        var tcp = Google_Protobuf_Any()
        tcp.typeURL = "type.googleapis.com/envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"
        let other = try cluster([:], other: ["envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions": tcp])
        #expect(other.fieldsNotActedOn.map(\.path) == [#"typed_extension_protocol_options["envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions"]"#])
        #expect(throws: ConfigError.self) { try cluster([key: .with { $0.explicitHTTPConfig.http3ProtocolOptions = .init() }]) }
    }

    /// istiod's inbound clusters bind to 127.0.0.6; that source is used for endpoints of its family only,
    /// and the rest of `upstream_bind_config` is listed, not acted on.
    @Test func upstreamBindConfigGivesTheSourceAddress() throws {
        func cluster(_ bind: (inout Envoy_Config_Core_V3_BindConfig) -> Void) throws -> BootstrapConfig.Cluster {
            var proto = Envoy_Config_Cluster_V3_Cluster()
            proto.name = "inbound|8080||"
            proto.type = .originalDst
            proto.lbPolicy = .clusterProvided
            bind(&proto.upstreamBindConfig)
            return try XDSResourceDecoder.cluster(proto).cluster
        }
        let inbound = try cluster { $0.sourceAddress.address = "127.0.0.6"; $0.sourceAddress.portValue = 0 }
        #expect(inbound.bindSource == (try SocketAddress(ipAddress: "127.0.0.6", port: 0)))
        #expect(inbound.bindSource(for: try SocketAddress(ipAddress: "10.1.0.5", port: 8080)) == inbound.bindSource)
        #expect(inbound.bindSource(for: try SocketAddress(ipAddress: "2001:db8::5", port: 8080)) == nil)
        #expect(throws: ConfigError(path: "cluster \"inbound|8080||\".upstream_bind_config.source_address.address", message: "\"pod\" is not an IP address")) {
            try cluster { $0.sourceAddress.address = "pod" }
        }
        #expect(throws: ConfigError(path: "cluster \"inbound|8080||\".upstream_bind_config.source_address", message: "is required")) {
            try cluster { _ in }
        }
    }

    /// Istio's auto mTLS: endpoints labelled `tlsMode: istio` in EDS get the TLS socket, the others plaintext.
    @Test func eachEndpointGetsTheTransportSocketItsMetadataMatches() throws {
        var proto = Envoy_Config_Cluster_V3_Cluster()
        proto.name = "outbound|9080||payments.shop.svc.cluster.local"
        proto.type = .eds
        proto.edsClusterConfig.edsConfig.ads = .init()
        var tls = Envoy_Config_Cluster_V3_Cluster.TransportSocketMatch()
        tls.name = "tlsMode-istio"
        tls.match.fields["tlsMode"] = Google_Protobuf_Value(stringValue: "istio")
        tls.transportSocket = try IstioShapes.upstreamSocket(peers: ["spiffe://cluster.local/ns/shop/sa/payments"])
        var plain = Envoy_Config_Cluster_V3_Cluster.TransportSocketMatch()
        plain.name = "tlsMode-disabled"
        plain.transportSocket.name = "envoy.transport_sockets.raw_buffer"
        proto.transportSocketMatches = [tls, plain]
        var cluster = try XDSResourceDecoder.cluster(proto).cluster

        var assignment = Envoy_Config_Endpoint_V3_ClusterLoadAssignment()
        assignment.clusterName = proto.name
        assignment.endpoints = [.with {
            $0.lbEndpoints = [("198.51.100.10", true), ("198.51.100.11", false)].map { address, sidecar in
                .with {
                    $0.endpoint.address.socketAddress.address = address
                    $0.endpoint.address.socketAddress.portValue = 9080
                    $0.metadata.filterMetadata["istio"] = .with { $0.fields["workload"] = Google_Protobuf_Value(stringValue: "payments") }
                    if sidecar {
                        $0.metadata.filterMetadata["envoy.transport_socket_match"] = .with { $0.fields["tlsMode"] = Google_Protobuf_Value(stringValue: "istio") }
                    }
                }
            }
        }]
        let decoded = try #require(try XDSResourceDecoder.assignments([try .packed(assignment, as: .endpoint)])[proto.name])
        #expect(decoded.fieldsNotActedOn.map(\.path) == [#"load_assignment (EDS).endpoints[*].lb_endpoints[*].metadata.filter_metadata["istio"]"#])
        cluster.discovery = .endpoints(decoded.endpoints)
        let runtime = ClusterRuntime(cluster)
        var sockets: [String: Bool] = [:]
        for _ in 0..<2 {
            let choice = try runtime.endpoint(originalDestination: try SocketAddress(ipAddress: "10.96.0.9", port: 9080)).get()
            sockets[choice.address.ipAddress ?? ""] = choice.transportSocket != nil
        }
        #expect(sockets == ["198.51.100.10": true, "198.51.100.11": false])
        #expect(cluster.allTransportSockets.count == 1)
        // The secrets the match's socket needs are asked for like a cluster's own.
        let proxy = ProxyRuntime(options: ProxyOptions(), config: BootstrapConfig(listeners: [], clusters: [cluster], adminPort: nil,
                                                                                   dynamicResources: nil, warnings: []))
        #expect(proxy.secretReferences.map(\.name).sorted() == ["ROOTCA", "default"])
    }

    // MARK: RDS

    @Test func routeConfigurationsCompileOrTheResponseIsRefused() throws {
        func routes(_ name: String, status: UInt32 = 200) throws -> Google_Protobuf_Any {
            var proto = Envoy_Config_Route_V3_RouteConfiguration()
            proto.name = name
            proto.virtualHosts = [.with {
                $0.name = "all"
                $0.domains = ["*"]
                $0.routes = [.with { $0.match.path = "/"; $0.directResponse.status = status }]
            }]
            return try .packed(proto, as: .route)
        }
        #expect(try XDSResourceDecoder.routeConfigurations([try routes("80"), try routes("8080")]).keys.sorted() == ["80", "8080"])
        #expect(throws: ConfigError.self) { try XDSResourceDecoder.routeConfigurations([try routes("80"), try routes("80")]) }
        let refused = [try routes("80"), try routes("8080", status: 700)]
        do throws(ConfigError) {
            _ = try XDSResourceDecoder.routeConfigurations(refused)
            Issue.record("not refused")
        } catch {
            #expect(error.path.hasPrefix(#"route_config "8080".virtual_hosts[0].routes[0]"#))
        }
    }
}
