import Routing
import Testing
import XDS

/// A route's `request_mirror_policies`: decoded in order, their fractions drawn as Envoy draws them, the
/// `-shadow` authority, and the refusals and fields not acted on.
struct MirrorPolicyTests {
    static let mirrored = oneHost(routes: """
        {"match": {"prefix": "/"}, "route": {"cluster": "v1", "request_mirror_policies": [
          {"cluster": "v2", "trace_sampled": false},
          {"cluster": "v3", "runtime_fraction": {"default_value": {"numerator": 250000, "denominator": "MILLION"}, "runtime_key": "k"}},
          {"cluster": "v4", "disable_shadow_host_suffix_append": true}]}}
        """)

    @Test func policiesAreDecodedInOrder() throws {
        let table = try routeTable(Self.mirrored)
        guard case .forward(let forwarding)? = table.route(request(), randomValue: 0)?.action else { Issue.record("not forwarded"); return }
        #expect(forwarding.cluster == "v1")
        #expect(forwarding.mirrors.map(\.cluster) == ["v2", "v3", "v4"])
        // No runtime_fraction: every request.
        #expect(forwarding.mirrors[0].fraction == .all)
        #expect(forwarding.mirrors[1].fraction == FaultPercentage(numerator: 250_000, denominator: 1_000_000))
        #expect(forwarding.mirrors[1].mirrors(249_999))
        #expect(!forwarding.mirrors[1].mirrors(250_000))
        #expect(forwarding.mirrors[1].mirrors(1_000_000))
        #expect(forwarding.mirrors[2].keepsHost)
    }

    @Test func runtimeKeyAndTraceSampledAreListedAsNotActedOn() throws {
        let table = try RouteTable(Envoy_Config_Route_V3_RouteConfiguration(jsonString: Self.mirrored))
        let paths = table.fieldsNotActedOn.map(\.path)
        #expect(paths.contains { $0.hasSuffix("route.request_mirror_policies[0].trace_sampled") })
        #expect(paths.contains { $0.hasSuffix("route.request_mirror_policies[1].runtime_fraction.runtime_key") })
    }

    @Test(arguments: [
        (#"{"cluster": ""}"#, "route.request_mirror_policies[0].cluster"),
        (#"{"cluster": "m", "runtime_fraction": {"default_value": {"numerator": 101}}}"#,
         "route.request_mirror_policies[0].runtime_fraction.default_value.numerator"),
    ])
    func refuses(policy: String, field: String) throws {
        let error = try refusal(oneHost(routes: #"{"match": {"prefix": "/"}, "route": {"cluster": "c", "request_mirror_policies": [\#(policy)]}}"#))
        #expect(error?.path == "route_config \"test\".virtual_hosts[0].routes[0].\(field)", "\(String(describing: error))")
    }

    @Test(arguments: [("payments", "payments-shadow"), ("foo:8080", "foo-shadow:8080"), ("[::1]:80", "[::1]-shadow:80"),
                      ("10.0.0.1", "10.0.0.1-shadow")])
    func shadowAuthority(authority: String, shadow: String) {
        #expect(MirrorPolicy(cluster: "m").shadowAuthority(authority) == shadow)
        #expect(MirrorPolicy(cluster: "m", keepsHost: true).shadowAuthority(authority) == authority)
    }
}
