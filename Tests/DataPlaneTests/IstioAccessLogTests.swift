import Configuration
@testable import DataPlane
import Foundation
import HTTPProxy
import SwiftProtobuf
import Testing
import XDS

/// istiod 1.18.2's sidecar with `meshConfig.accessLogFile: /dev/stdout` (the DeathStarBench dump in
/// `../shared/istio-config/`): every HTTP connection manager's access log is read as Envoy reads it,
/// Istio's format compiled, the operators Capstan has no data for listed, nothing refused (1.18's HTTP
/// filters, Wasm modules that Capstan refuses, are left out).
@Suite struct IstioAccessLogTests {
    static let file = "sidecar-istio1.18.2-deathstarbench-geo.config_dump.json"

    static let istioFormat = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% "
        + "%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" "
        + "%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" "
        + "\"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% "
        + "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"

    /// The `typed_config` of every HTTP connection manager in the dump's listeners that has an access log
    /// (all but the static Prometheus and health listeners').
    static func connectionManagers() throws -> [[String: Any]] {
        try IstioDumps.listeners(in: file).flatMap { resource -> [[String: Any]] in
            let chains = (resource.json["filter_chains"] as? [[String: Any]] ?? [])
                + [resource.json["default_filter_chain"] as? [String: Any]].compactMap { $0 }
            return chains.flatMap { $0["filters"] as? [[String: Any]] ?? [] }
                .filter { $0["name"] as? String == "envoy.filters.network.http_connection_manager" }
                .compactMap { $0["typed_config"] as? [String: Any] }.filter { $0["access_log"] != nil }
        }
    }

    @Test func istiosAccessLogIsReadFromEveryConnectionManager() throws {
        _ = XDSResourceDecoder.messageTypesRegistered
        let managers = try Self.connectionManagers()
        #expect(managers.count > 10)
        let istio = try AccessLogFormat(text: Self.istioFormat)
        for (index, given) in managers.enumerated() {
            // 1.18's HTTP filters are Wasm modules, which Capstan refuses: only the router is kept here.
            var json = given
            json["http_filters"] = (given["http_filters"] as? [[String: Any]] ?? []).filter { $0["name"] as? String == "envoy.filters.http.router" }
            let proto = try IstioDumps.message(json, as: Envoy_Extensions_Filters_Network_HttpConnectionManager_V3_HttpConnectionManager.self)
            let config = try HTTPConnectionManagerConfig(proto, path: "hcm[\(index)]")
            #expect(config.accessLogs.map(\.path) == ["/dev/stdout"])
            let sameFormat = config.accessLogs.first?.format == istio
            #expect(sameFormat, "Istio's format, compiled")
            #expect(config.fieldsNotActedOn.filter { $0.path.hasPrefix("access_log") }.map(\.description)
                == ["access_log[0].typed_config: accepted, not acted on: Capstan does not record %CONNECTION_TERMINATION_DETAILS%, "
                    + "%UPSTREAM_TRANSPORT_FAILURE_REASON%: printed as - (null in JSON)"])
        }
    }
}
