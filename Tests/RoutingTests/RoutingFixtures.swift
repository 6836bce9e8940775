import Configuration
import HTTPTypes
import Routing
import SwiftProtobuf
import XDS

/// Route configurations written as Envoy's JSON, so each test reads as the configuration it is about.
func routeTable(_ json: String) throws -> RouteTable {
    try RouteTable(Envoy_Config_Route_V3_RouteConfiguration(jsonString: json))
}

/// The refusal `json` earns, or nil if it compiles.
func refusal(_ json: String) throws -> ConfigError? {
    refusal(try Envoy_Config_Route_V3_RouteConfiguration(jsonString: json))
}

func refusal(_ proto: Envoy_Config_Route_V3_RouteConfiguration) -> ConfigError? {
    do { _ = try RouteTable(proto) } catch { return error }
    return nil
}

/// A route configuration named `test` with one virtual host for every domain, holding `routes`.
func oneHost(routes: String, host: String = #"{"name": "test", "domains": ["*"]"#, configuration: String = "") -> String {
    #"{"name": "test", \#(configuration) "virtual_hosts": [\#(host), "routes": [\#(routes)]}]}"#
}

func request(_ authority: String = "example.com", _ path: String = "/", method: HTTPRequest.Method = .get,
             headers: [(String, String)] = []) -> HTTPRequest {
    var fields = HTTPFields()
    for (name, value) in headers { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
    return HTTPRequest(method: method, scheme: "http", authority: authority, path: path, headerFields: fields)
}

extension RouteTable {
    /// The cluster `request` is forwarded to ("" for a redirect or direct response), nil for no route.
    func cluster(_ request: HTTPRequest, randomValue: UInt64 = 0) -> String? {
        route(request, randomValue: randomValue).map { $0.cluster ?? "" }
    }

    /// The virtual host name `authority` selects.
    func virtualHostName(_ authority: String) -> String? {
        virtualHost(for: request(authority))?.name
    }
}
